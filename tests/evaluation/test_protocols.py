"""Protocols P1/P2/P3 on hand-made logs, plus reference numbers on the shared real datasets.

The real-data checks skip when the shared data folder is absent; it is found through the
``PINSAGE_DATA_DIR`` environment variable, falling back to ``<repo>/../shared/data``. The
Gowalla check takes minutes and only runs with ``PINSAGE_RUN_SLOW=1``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from pinsage_ray.evaluation import (
    ItemKNN,
    Popularity,
    RP3beta,
    carve_validation,
    evaluate_p1,
    evaluate_p2,
    evaluate_pairs,
    format_markdown_table,
    leave_last_split,
)

DATA_DIR = Path(os.environ.get("PINSAGE_DATA_DIR", Path(__file__).resolve().parents[2].parent / "shared" / "data"))

# (user, item, timestamp) in file order. User 0 has a timestamp tie at t=5 (rows 0 and 3: file
# order puts item 13 last); user 1 has a tie at t=2 (rows 5 and 8: item 18 last); user 2 has only
# two interactions and is dropped.
LOG = np.array([
    [0, 10, 5], [1, 11, 1], [0, 12, 3], [0, 13, 5], [2, 14, 1],
    [1, 15, 2], [0, 16, 1], [2, 17, 2], [1, 18, 2],
])


def test_leave_last_split_by_hand():
    sp = leave_last_split(LOG[:, 0], LOG[:, 1], LOG[:, 2], num_items=20)
    assert sp.users.tolist() == [0, 1]
    assert sp.dropped_users.tolist() == [2]
    assert sp.test_items.tolist() == [13, 18]
    assert sp.val_items.tolist() == [10, 15]
    assert sp.query_items.tolist() == [12, 11]  # latest training item
    assert sp.train_users.tolist() == [1, 0, 0]  # rows 1, 2, 6 in file order
    assert sp.train_items.tolist() == [11, 12, 16]
    assert [t.tolist() for t in sp.train_items_per_user()] == [[12, 16], [11]]


def _higher_index_is_better(queries: np.ndarray) -> np.ndarray:
    """Score j / 100 for every item, plus 10 for the query itself (which must get excluded)."""
    s = np.tile(np.arange(20, dtype=np.float32) / 100, (len(queries), 1))
    s[np.arange(len(queries)), queries] += 10
    return s


def test_evaluate_p1_by_hand():
    sp = leave_last_split(LOG[:, 0], LOG[:, 1], LOG[:, 2], num_items=20)
    # val: user 0 (train {12, 16}) target 10 is beaten by 11,13,14,15,17,18,19 -> rank 8;
    #      user 1 (train {11}) target 15 is beaten by 16..19 -> rank 5.
    # test: user 0 target 13 beaten by 14,15,17,18,19 -> rank 6; user 1 target 18 -> rank 2.
    for batch_size in (1, 64):
        val = evaluate_p1(_higher_index_is_better, sp, "val", ks=(5, 10), batch_size=batch_size)
        assert val == pytest.approx({"hit@5": 0.5, "hit@10": 1.0, "mrr": (1 / 8 + 1 / 5) / 2,
                                     "ndcg@10": (1 / math.log2(9) + 1 / math.log2(6)) / 2})
    test = evaluate_p1(_higher_index_is_better, sp, "test", ks=(5,), ndcg_ks=(5,))
    assert test == pytest.approx({"hit@5": 0.5, "mrr": (1 / 6 + 1 / 2) / 2, "ndcg@5": (0 + 1 / math.log2(3)) / 2})
    with pytest.raises(ValueError, match="which"):
        evaluate_p1(_higher_index_is_better, sp, "train")


def test_evaluate_p2_by_hand():
    calls = []

    def decreasing(users: np.ndarray) -> np.ndarray:
        calls.append(users.tolist())
        return np.tile(np.array([5, 4, 3, 2, 1, 0], dtype=np.float32), (len(users), 1))

    # u0 train {0}, test {1, 3}: top-2 [1, 2] -> recall 1/2, NDCG 1 / (1 + 1/log2 3).
    # u1 train {1, 2}, test {0}: top-2 [0, 3] -> recall 1, NDCG 1. u2 has no test item: skipped.
    out = evaluate_p2(decreasing, np.array([0, 1, 1, 2]), np.array([0, 1, 2, 5]), np.array([0, 1, 0]),
                      np.array([1, 0, 3]), num_items=6, k=2)
    assert out == pytest.approx({"recall@2": 0.75, "ndcg@2": (1 / (1 + 1 / math.log2(3)) + 1) / 2})
    assert calls == [[0, 1]]


def test_carve_validation_is_seeded_and_keeps_a_train_item():
    sizes = {0: 1, 1: 5, 2: 10, 3: 20}  # expected validation counts 0, 1, 1, 2 at fraction 0.1
    users = np.concatenate([np.full(n, u) for u, n in sizes.items()])
    items = np.arange(users.size)
    a = carve_validation(users, items, fraction=0.1, seed=7)
    b = carve_validation(users, items, fraction=0.1, seed=7)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert np.bincount(a.val_users, minlength=4).tolist() == [0, 1, 1, 2]
    assert np.bincount(a.train_users, minlength=4).tolist() == [1, 4, 9, 18]
    assert sorted(np.concatenate([a.train_items, a.val_items]).tolist()) == items.tolist()
    assert np.all(np.diff(a.train_items) > 0)  # input order preserved
    assert np.array_equal(users[a.val_items], a.val_users)


def test_evaluate_pairs_by_hand():
    table = np.array([[9, 1, 3, 2, 0], [0] * 5, [0, 5, 9, 5, 1], [0] * 5, [0] * 5], dtype=np.float32)
    # (0 -> 1): query 0 excluded, 2 (3) and 3 (2) beat 1 -> rank 3.
    # (2 -> 3): query 2 excluded, 1 ties 3 with a lower index -> rank 2.
    out = evaluate_pairs(lambda q: table[q], np.array([0, 2]), np.array([1, 3]), ks=(1, 2), scale=2)
    assert out == pytest.approx({"hit@1": 0.0, "hit@2": 0.5, "mrr": 5 / 12, "paper_mrr": (1 / 2 + 1) / 2})


def test_format_markdown_table():
    text = format_markdown_table({"pop": {"hit@10": 0.07421, "mrr": 0.5}, "knn": {"hit@10": 0.2}})
    assert text == ("| model | hit@10 | mrr |\n| --- | ---: | ---: |\n"
                    "| pop | 0.0742 | 0.5000 |\n| knn | 0.2000 | - |")


@pytest.mark.skipif(not (DATA_DIR / "ml-100k" / "u.data").exists(), reason="shared MovieLens-100K absent")
def test_movielens_p1_reference_hit_rates():
    d = np.loadtxt(DATA_DIR / "ml-100k" / "u.data", dtype=np.int64)
    sp = leave_last_split(d[:, 0] - 1, d[:, 1] - 1, d[:, 3], num_items=1682)
    reference = {  # HitRate@10 (val, test) measured under exactly this protocol
        "popularity": (Popularity(), 0.074, 0.082),
        "itemknn": (ItemKNN(shrink=50), 0.177, 0.149),
        "rp3beta": (RP3beta(alpha=1.0, beta=0.3), 0.181, 0.162),
    }
    for name, (model, ref_val, ref_test) in reference.items():
        model.fit(sp.train_users, sp.train_items, 943, 1682)
        val = evaluate_p1(model.item_scores, sp, "val", ks=(10,))["hit@10"]
        test = evaluate_p1(model.item_scores, sp, "test", ks=(10,))["hit@10"]
        assert abs(val - ref_val) < 2e-3 and abs(test - ref_test) < 2e-3, (name, val, test)


def _read_lightgcn(path: Path) -> tuple[np.ndarray, np.ndarray]:
    users, items = [], []
    for line in path.read_text().splitlines():
        ids = line.split()
        if len(ids) > 1:
            items.append(np.array(ids[1:], dtype=np.int64))
            users.append(np.full(len(ids) - 1, int(ids[0])))
    return np.concatenate(users), np.concatenate(items)


@pytest.mark.slow
@pytest.mark.skipif(not (DATA_DIR / "gowalla" / "train.txt").exists(), reason="shared Gowalla absent")
def test_gowalla_p2_reference_numbers():
    """Popularity and ItemKNN on the full Gowalla split reproduce the published Recall@20 and
    NDCG@20 (about 30 s on 2 cores: read 2 s, popularity 5 s, ItemKNN 25 s). RP3beta is left
    out of CI: it takes another 31 s here and is reproduced only to ~2e-3 (measured 0.1780 /
    0.1460 against 0.1762 / 0.1436); its MovieLens reference stays in
    :func:`test_movielens_p1_reference_hit_rates` and its Gowalla row in bench_quality."""
    tu, ti = _read_lightgcn(DATA_DIR / "gowalla" / "train.txt")
    eu, ei = _read_lightgcn(DATA_DIR / "gowalla" / "test.txt")
    n_users, n_items = 29858, 40981
    reference = {  # Recall@20, NDCG@20, measured here: 0.04163 / 0.03169 and 0.14401 / 0.11454
        "popularity": (Popularity(), 0.0416, 0.0317, 5e-4),
        "itemknn": (ItemKNN(shrink=50), 0.1440, 0.1145, 5e-4),
    }
    for name, (model, ref_recall, ref_ndcg, tol) in reference.items():
        model.fit(tu, ti, n_users, n_items)
        out = evaluate_p2(model.user_scores, tu, ti, eu, ei, n_items, k=20)
        assert abs(out["recall@20"] - ref_recall) < tol and abs(out["ndcg@20"] - ref_ndcg) < tol, (name, out)
