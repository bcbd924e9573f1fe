"""Items added to a run (cold start) are saved into it: a new embeddings part and the index."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pinsage_ray.inference.pipeline import load_embeddings
from pinsage_ray.recommender import Recommender, build_index

pytestmark = pytest.mark.ray


@pytest.fixture()
def run_copy(trained_run, tmp_path) -> str:
    """A private copy of the shared trained run (saving writes into it)."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run["run"], dst)
    return str(dst)


@pytest.fixture(scope="module")
def new_items(planted_dataset, holdout):
    """The held-out items (not in the run) and their features."""
    _, held = holdout
    feats = planted_dataset.item_features.to_pandas().set_index("item")
    ids = held.tolist()[:5]
    return ids, np.stack([np.asarray(feats.loc[i, "features"], np.float32) for i in ids])


def test_saved_items_are_found_after_a_reload(run_copy, new_items):
    ids, x = new_items
    rec = Recommender.load(run_copy)
    n0 = len(rec.ids)
    assert rec.save_added_items() == {"saved": 0, "items": n0, "part": None}
    emb = rec.add_items(ids, x)
    before = {i: rec.similar_items(i, k=5) for i in ids}
    out = rec.save_added_items()
    assert out["saved"] == len(ids) and out["items"] == n0 + len(ids)
    assert out["part"].endswith("embeddings/part-00001.parquet")

    again = Recommender.load(run_copy)  # the index and the embeddings agree again
    assert again.ids.tolist() == rec.ids.tolist()
    for i, item in enumerate(ids):
        assert np.array_equal(again.vector(item), emb[i])
        assert again.similar_items(item, k=5) == before[item]
    ids_col, table = load_embeddings(run_copy)  # checksums of every part verified
    assert len(table) == n0 + len(ids) and ids_col.to_pylist()[-len(ids):] == ids
    assert not [p for p in Path(run_copy).rglob("*") if ".tmp-" in p.name]  # no temp files


def test_a_second_save_adds_a_second_part(run_copy, new_items):
    ids, x = new_items
    rec = Recommender.load(run_copy)
    rec.add_items(ids[:2], x[:2])
    rec.save_added_items()
    rec.add_items(ids[2:], x[2:])
    assert rec.save_added_items()["part"].endswith("part-00002.parquet")
    assert sorted(Recommender.load(run_copy).ids.tolist()) == sorted(rec.ids.tolist())


def test_a_crash_before_the_index_is_repaired_by_rebuilding_it(run_copy, new_items,
                                                              monkeypatch):
    ids, x = new_items
    rec = Recommender.load(run_copy)
    n0 = len(rec.ids)
    rec.add_items(ids, x)

    def crash(*_args, **_kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(rec.index), "save", crash)
    with pytest.raises(OSError, match="disk full"):
        rec.save_added_items()
    monkeypatch.undo()
    # the embeddings were committed (step 2); the index is the old one until rebuilt
    assert len(load_embeddings(run_copy)[1]) == n0 + len(ids)
    build_index(run_copy)
    rebuilt = Recommender.load(run_copy)
    assert set(ids) <= set(rebuilt.ids.tolist())
    assert rebuilt.similar_to_vector(rebuilt.vector(ids[0]), k=1)[0][0] == ids[0]
