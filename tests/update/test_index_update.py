"""The index step of an update: in place (add, re-link, mark deleted) for a small change;
past ``RELINK_FRACTION`` the vectors are refreshed with the links kept, and the index is
rebuilt only when the refreshed graph misses its recall target; every way, the saved index
answers like exact search over the live vectors, never returns a removed item and loads
again."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pinsage_ray.index import HNSWConfig, HNSWIndex, PartitionedIndex, exact_topk, load_index
from pinsage_ray.update import index_update


@pytest.mark.parametrize("partitions", [1, 3])
@pytest.mark.parametrize("changed_fraction, drift, mode", [
    (0.02, None, "relink"),  # a few vectors anywhere: hnswlib re-links them
    (0.5, 0.05, "refresh"),  # half moved a little: the old links still navigate
    (0.5, None, "rebuilt"),  # half moved anywhere: the old links do not
])
def test_update_index(tmp_path, changed_fraction, drift, mode, partitions):
    rng = np.random.default_rng(0)
    n_old, n = 600, 640
    old = rng.normal(size=(n_old, 16)).astype(np.float32)
    cfg = HNSWConfig(search="hnsw")
    base = (HNSWIndex.build(old, np.arange(n_old) + 1000, cfg) if partitions == 1 else
            PartitionedIndex.build(old, np.arange(n_old) + 1000, partitions, cfg))
    base.save(tmp_path / "base")
    emb = np.concatenate([old, rng.normal(size=(n - n_old, 16)).astype(np.float32)])
    changed = np.zeros(n, dtype=bool)
    changed[rng.choice(n_old, int(changed_fraction * n_old), replace=False)] = True
    changed[n_old:] = True
    noise = rng.normal(size=(int(changed.sum()), 16)).astype(np.float32)
    emb[changed] = noise if drift is None else emb[changed] + drift * noise
    removed = np.zeros(n, dtype=bool)
    removed[[3, 17]] = True
    ids = pa.array(np.arange(n) + 1000)
    report = index_update.update_index(str(tmp_path / "base"), str(tmp_path / "new"), emb, ids,
                                       n_old, changed, removed)
    assert report["mode"] == mode and report["deleted"] == 2
    assert report["rebuilt"] is (mode == "rebuilt")
    index = load_index(tmp_path / "new")
    assert index.ids.tolist() == ids.to_pylist()  # position = contiguous id, kept
    if partitions > 1:  # each partition kept its rows; the new items joined the last one
        assert type(index) is PartitionedIndex
        assert [len(p) for p in index.parts] == [200, 200, 240]
    live = np.flatnonzero(~removed)
    truth, _ = exact_topk(emb[live], emb[live], 10, "cosine")
    for search in ("hnsw", "exact"):
        got, _ = load_index(tmp_path / "new", search=search).query(emb[live], 10)
        assert not np.isin(got, [1003, 1017]).any()
        recall = np.mean([len(set(g) & set(t)) / 10 for g, t in zip(got, live[truth] + 1000)])
        assert recall >= (0.999 if search == "exact" else 0.9), (search, recall)
    assert report["hnsw_recall_at_k"] >= 0.9
