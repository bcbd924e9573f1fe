"""Tests for held-out ef tuning and the HNSW-or-exact search choice (pinsage_ray.index.tuning)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from pinsage_ray.index import HNSWConfig, HNSWIndex, IndexIntegrityError, exact_topk
from pinsage_ray.index import hnsw as hnsw_mod
from pinsage_ray.index import tuning

NEW_KEYS = ("search", "search_requested", "search_reason", "hnsw_recall_at_k", "hnsw_qps", "exact_qps",
            "recall_queries", "recall_query_count")


def mixture(n: int, seed: int, d: int = 64, clusters: int = 50, noise: float = 2.0) -> np.ndarray:
    """Draws from one fixed Gaussian mixture (centres from seed 0): ``seed`` only picks the draws."""
    centers = np.random.default_rng(0).normal(size=(clusters, d))
    rng = np.random.default_rng(seed)
    return (centers[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))).astype(np.float32)


def recall(got: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got.tolist(), truth.tolist())]))


def ranked_without(q: np.ndarray, x: np.ndarray, space: str, k: int, exclude: list[set[int]]) -> np.ndarray:
    """Exact top-k positions per query with the excluded positions removed."""
    order, _ = exact_topk(q, x, len(x), space)
    return np.array([[p for p in row if p not in ex][:k] for row, ex in zip(order.tolist(), exclude)])


# --------------------------------------------------------------------------- held-out tuning
def test_held_out_tuning_reaches_target_on_new_queries() -> None:
    x, fresh = mixture(4000, seed=1), mixture(500, seed=2)
    cfg = HNSWConfig(M=16, ef_construction=40, recall_sample=500, target_recall=0.9, search="hnsw")
    idx = HNSWIndex.build(x, np.arange(4000), cfg)
    m = idx.manifest
    assert m["recall_queries"] == "held_out" and m["recall_measured_at_count"] == 3500
    truth, _ = exact_topk(fresh, x, 10, "cosine")
    tuned_ef = idx.ef
    assert recall(idx.query(fresh, 10)[0], truth) >= 0.87  # target 0.9 less sampling slack

    # On this data tuning with indexed vectors as queries (self excluded), as before, stops at
    # a smaller ef whose recall on new queries is far below the target.
    sample = np.random.default_rng(5).choice(4000, 500, replace=False)
    self_truth = ranked_without(x[sample], x, "cosine", 10, [{int(i)} for i in sample])
    self_ef = None
    for ef in hnsw_mod.EF_LADDER:
        idx.ef = ef
        got, _ = idx.query(x[sample], 10, exclude=[[int(i)] for i in sample])
        if recall(got, self_truth) >= 0.9:
            self_ef = ef
            break
    assert self_ef is not None and self_ef < tuned_ef
    idx.ef = self_ef
    assert recall(idx.query(fresh, 10)[0], truth) < 0.85


def test_held_out_split_and_final_index_holds_every_vector() -> None:
    held, rest = tuning.held_out_split(10, 100, seed=3)
    assert len(held) == 5 and np.array_equal(np.sort(np.concatenate([held, rest])), np.arange(10))
    assert np.array_equal(held, tuning.held_out_split(10, 100, seed=3)[0])  # seeded
    assert len(tuning.held_out_split(1, 100, 0)[0]) == 0 and len(tuning.held_out_split(400, 50, 0)[0]) == 50

    x = mixture(400, seed=4, d=16, noise=0.5)
    ids = np.arange(400) * 7 + 3
    idx = HNSWIndex.build(x, ids, HNSWConfig(recall_sample=50, search="hnsw", seed=3))
    assert len(idx) == 400 and idx.manifest["recall_query_count"] == 50
    held, _ = tuning.held_out_split(400, 50, seed=3)
    got, scores = idx.query(x[held], 1)  # the held-out vectors were inserted after tuning...
    np.testing.assert_array_equal(got[:, 0], ids[held])  # ...under their own position labels
    np.testing.assert_allclose(scores, 1.0, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_tiny_catalogues(n: int) -> None:
    x = mixture(n, seed=6, d=8)
    idx = HNSWIndex.build(x, np.arange(n), HNSWConfig(recall_sample=1000))
    assert len(idx) == n and idx.manifest["count"] == n
    ids, _ = idx.query(x, n)
    assert sorted(ids[0].tolist()) == list(range(n)) and ids[:, 0].tolist() == list(range(n))
    if n == 1:  # nothing to hold out: no recall, no timing, HNSW kept
        assert idx.recall_at_k is None and idx.manifest["recall_queries"] is None and idx.search == "hnsw"
    else:
        assert idx.manifest["recall_query_count"] == n // 2 and idx.recall_at_k == 1.0


# --------------------------------------------------------------------------- exact search
@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
def test_exact_mode_returns_exact_topk_answer(space: str) -> None:
    x, q = mixture(600, seed=7, d=16), mixture(30, seed=8, d=16)
    ids = np.arange(600) * 3 + 11
    idx = HNSWIndex.build(x, ids, HNSWConfig(space=space, search="exact", recall_sample=100))
    assert idx.search == "exact" and idx.recall_at_k == 1.0 and idx.manifest["hnsw_recall_at_k"] < 1.01
    want_i, want_s = exact_topk(q, x, 10, space)
    got, scores = idx.query(q, 10)
    np.testing.assert_array_equal(got, ids[want_i])
    np.testing.assert_allclose(scores, want_s, rtol=1e-5, atol=1e-4)
    excl = [set(want_i[r, :3].tolist()) | {599} for r in range(len(q))]
    want = ids[ranked_without(q, x, space, 10, excl)]
    by_pos, _ = idx.query(q, 10, exclude=[sorted(e) for e in excl], exclude_by="position")
    by_id, _ = idx.query(q, 10, exclude=[{int(ids[p]) for p in e} | {-5} for e in excl])
    np.testing.assert_array_equal(by_pos, want)
    np.testing.assert_array_equal(by_id, want)
    one, one_s = idx.query(q[0], 4, exclude=[int(ids[want_i[0, 0]])])
    np.testing.assert_array_equal(one, ids[want_i[0, 1:5]])
    assert one.shape == one_s.shape == (4,)


def test_exact_mode_add_items_and_switching() -> None:
    x = mixture(500, seed=9, d=16)
    idx = HNSWIndex.build(x, np.arange(500), HNSWConfig(search="exact", recall_sample=100))
    new = mixture(50, seed=10, d=16) + 3.0
    idx.add_items(new, np.arange(1000, 1050))
    both = np.concatenate([x, new])
    q = mixture(40, seed=11, d=16) + 1.5
    want_i, _ = exact_topk(q, both, 10, "cosine")
    got, _ = idx.query(q, 10)
    np.testing.assert_array_equal(got, np.concatenate([np.arange(500), np.arange(1000, 1050)])[want_i])
    idx.search = "hnsw"
    assert idx.search == "hnsw" and idx.recall_at_k == idx.manifest["hnsw_recall_at_k"]
    assert idx.query(new[3], 1)[0][0] == 1003  # the graph holds the added items too
    with pytest.raises(ValueError, match=r"search must be 'hnsw' or 'exact', got 'auto'"):
        idx.search = "auto"


# --------------------------------------------------------------------------- the choice
class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("hnsw_s, exact_s, reaches, want", [
    (0.2, 0.1, True, "exact"),  # exact faster
    (0.1, 0.2, True, "hnsw"),  # hnsw faster
    (0.1, 0.9, False, "exact"),  # hnsw faster but never reaches the target
])
def test_choose_search_auto(monkeypatch, hnsw_s: float, exact_s: float, reaches: bool, want: str) -> None:
    clock = FakeClock()
    monkeypatch.setattr(tuning.time, "perf_counter", clock)
    calls = {"hnsw": 0, "exact": 0}

    def runner(name: str, seconds: float):
        def run(batch: np.ndarray) -> None:
            calls[name] += 1
            clock.now += seconds * len(batch) / 1000

        return run

    queries = np.zeros((2000, 4), dtype=np.float32)
    choice = tuning.choose_search("auto", queries, runner("hnsw", hnsw_s), runner("exact", exact_s), reaches)
    assert choice.search == want
    assert choice.hnsw_qps == pytest.approx(1000 / hnsw_s)
    assert choice.exact_qps == pytest.approx(1000 / exact_s)
    assert calls["hnsw"] >= 2 and calls["exact"] >= 2  # a warm-up, then timed runs


def test_choose_search_forced_or_nothing_to_time() -> None:
    def never(batch: np.ndarray) -> None:
        raise AssertionError("must not be timed")

    q = np.zeros((5, 4), dtype=np.float32)
    assert tuning.choose_search("exact", q, never, never, True).search == "exact"
    forced = tuning.choose_search("hnsw", q, never, never, False)
    assert forced.search == "hnsw" and forced.hnsw_qps is None
    assert tuning.choose_search("auto", q[:0], never, never, True).search == "hnsw"


def test_auto_picks_exact_when_no_ef_reaches_target(monkeypatch, caplog) -> None:
    monkeypatch.setattr(hnsw_mod, "EF_LADDER", (10, 12))
    x = mixture(2000, seed=12, d=32)
    with caplog.at_level(logging.INFO, logger="pinsage_ray.index.tuning"):
        idx = HNSWIndex.build(x, np.arange(2000), HNSWConfig(M=2, ef_construction=10, target_recall=1.0,
                                                             recall_sample=300))
    m = idx.manifest
    assert idx.search == "exact" and m["search_requested"] == "auto" and "no ef" in m["search_reason"]
    assert m["hnsw_recall_at_k"] < 1.0 and idx.recall_at_k == 1.0 and list(m["recall_curve"]) == ["10", "12"]
    assert m["hnsw_qps"] > 0 and m["exact_qps"] > 0
    assert any("search: exact" in r.getMessage() for r in caplog.records)
    want, _ = exact_topk(x[:20], x, 5, "cosine")
    np.testing.assert_array_equal(idx.query(x[:20], 5)[0], want)


# --------------------------------------------------------------------------- save / load
def test_save_load_round_trips_both_modes(tmp_path: Path) -> None:
    x, q = mixture(800, seed=13, d=16), mixture(25, seed=14, d=16)
    for mode in ("exact", "hnsw"):
        idx = HNSWIndex.build(x, np.arange(800), HNSWConfig(search=mode, recall_sample=100, ef=30))
        idx.save(tmp_path / mode)
        files = sorted(p.name for p in (tmp_path / mode).iterdir())
        assert files == ["ids.npy", "index.bin", "manifest.json"]  # no extra file for exact
        loaded = HNSWIndex.load(tmp_path / mode)
        assert loaded.search == mode and loaded.ef == 30 and loaded.recall_at_k == idx.recall_at_k
        a, b = idx.query(q, 10, exclude=[[0]] * 25), loaded.query(q, 10, exclude=[[0]] * 25)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    want, _ = exact_topk(q, x, 10, "cosine")
    switched = HNSWIndex.load(tmp_path / "hnsw", search="exact", ef=12)
    assert switched.search == "exact" and switched.ef == 12 and switched.recall_at_k == 1.0
    np.testing.assert_array_equal(switched.query(q, 10)[0], want)
    back = HNSWIndex.load(tmp_path / "exact", search="hnsw")
    assert back.search == "hnsw" and back.recall_at_k == back.manifest["hnsw_recall_at_k"] < 1.0
    with pytest.raises(ValueError, match="search must be 'hnsw', 'exact' or None.*'fast'"):
        HNSWIndex.load(tmp_path / "hnsw", search="fast")
    # exact mode with added items survives a save too
    idx = HNSWIndex.load(tmp_path / "exact")
    idx.add_items(x[:5] + 4.0, np.arange(900, 905))
    idx.save(tmp_path / "exact")
    again = HNSWIndex.load(tmp_path / "exact")
    assert again.search == "exact" and len(again) == 805 and again.query(x[2] + 4.0, 1)[0][0] == 902


def test_old_manifest_loads_as_hnsw(tmp_path: Path) -> None:
    x, q = mixture(500, seed=15, d=16), mixture(20, seed=16, d=16)
    idx = HNSWIndex.build(x, np.arange(500), HNSWConfig(search="exact", recall_sample=100, ef=20))
    hnsw_recall = idx.manifest["hnsw_recall_at_k"]
    idx.save(tmp_path / "ix")
    path = tmp_path / "ix" / "manifest.json"
    m = json.loads(path.read_text())
    for key in NEW_KEYS:  # what a manifest written before held-out tuning lacked
        m.pop(key, None)
    m["recall_at_k"] = hnsw_recall
    path.write_text(json.dumps(m))
    old = HNSWIndex.load(tmp_path / "ix")
    assert old.search == "hnsw" and old.ef == 20 and old.recall_at_k == hnsw_recall
    idx.search = "hnsw"
    np.testing.assert_array_equal(old.query(q, 5)[0], idx.query(q, 5)[0])
    as_exact = HNSWIndex.load(tmp_path / "ix", search="exact")
    np.testing.assert_array_equal(as_exact.query(q, 5)[0], exact_topk(q, x, 5, "cosine")[0])
    as_exact.search = "hnsw"
    assert as_exact.recall_at_k == hnsw_recall
    m["search"] = "fast"
    path.write_text(json.dumps(m))
    with pytest.raises(IndexIntegrityError, match="search 'fast' is not 'hnsw' or 'exact'"):
        HNSWIndex.load(tmp_path / "ix")
