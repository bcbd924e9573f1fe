"""Embeddings and HNSW index of an updated version, without rebuilding the index.

The embeddings are written in the layout ``embed`` writes (Parquet parts + a checksummed
``_manifest.json``), for the live items (removed ones left out), in contiguous-id order.

The index (PinSage section 3.5; :class:`~pinsage_ray.index.HNSWIndex`) keeps position =
contiguous item id. New items are appended (``add_items``), removed items are marked deleted
(hnswlib never returns them; exact search excludes them), and items whose embedding changed
get their new vector one of two ways:

* ``"relink"``, up to ``RELINK_FRACTION`` of the index: hnswlib re-links each replaced label
  (a graph search per item, several times the cost of inserting it);
* ``"refresh"``, past it: the vectors are overwritten with the links kept
  (:meth:`~pinsage_ray.index.HNSWIndex.refresh_vectors`, a copy of the level-0 block). A
  GCN's embeddings move a little for many items when the graph changes a little (layer K
  reaches far, docs/update.md), and a graph linked for the old vectors still navigates the
  new ones; when they moved far it does not, and the recall check below says so.

The recall check then runs (:func:`pinsage_ray.index.tuning.tune_ef`): a seeded sample of live
vectors as queries against exact search over the live vectors, walking the ``ef`` ladder up
from the current ``ef`` if recall fell below the target. If a refreshed graph needs more than
``REFRESH_MAX_EF_GROWTH`` times the old ``ef`` to reach the target, or cannot reach it, the
index is rebuilt with the same settings (``"rebuilt"``) and checked again. The queries are
indexed vectors here (a built index cannot hold them out), so the figure is recorded as
``recall_queries: "indexed_sample"``. A partitioned index
(:class:`~pinsage_ray.index.PartitionedIndex`) gets the same per partition, new items joining
its last partition.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pyarrow as pa

from pinsage_ray import _io
from pinsage_ray.index import HNSWConfig, HNSWIndex, PartitionedIndex, load_index
from pinsage_ray.index.config import EF_LADDER
from pinsage_ray.index.tuning import tune_ef
from pinsage_ray.inference.pipeline import _list_column

logger = logging.getLogger(__name__)

RECALL_QUERIES = 500
#: Up to this fraction of the index's vectors changed, hnswlib re-links each; past it the
#: vectors are refreshed in place (links kept) and the recall check decides on a rebuild.
RELINK_FRACTION = 0.1
#: A refreshed graph is kept if it reaches the target recall at most at this multiple of the
#: old ``ef`` (so queries cost at most about that much more); otherwise it is rebuilt.
REFRESH_MAX_EF_GROWTH = 2


def write_embeddings(out_dir: str, item_ids: pa.Array, emb: np.ndarray, live: np.ndarray,
                     model: Any, seed: int) -> None:
    """``out_dir``: embeddings of the ``live`` items, as ``embed`` writes them (atomic)."""
    keep = np.flatnonzero(live)
    table = pa.table({"item": item_ids.take(pa.array(keep)), "embedding": _list_column(emb[keep])})
    with _io.atomic_directory(out_dir, overwrite=True) as tmp:
        fs, _ = _io.resolve(out_dir)
        files = {"part-00000.parquet": _io.write_parquet(
            fs, _io.join(tmp, "part-00000.parquet"), table)}
        _io.write_json(fs, _io.join(tmp, "_manifest.json"), {
            "count": int(len(keep)), "dim": int(emb.shape[1]), "seed": seed, "mode": "update",
            "model_epoch": model.meta.get("epoch"), "neighbors": model.neighbor_config,
            "files": files})


def update_index(base_index: str, out_dir: str, emb: np.ndarray, item_ids: pa.Array, n_old: int,
                 changed: np.ndarray, removed: np.ndarray) -> dict[str, Any]:
    """Load ``base_index``, apply the change, re-measure recall, save to ``out_dir``.

    Args:
        emb: float32 (N, D) every item's embedding (position = contiguous id).
        item_ids: (N,) original ids.
        n_old: items in the base index (positions 0..n_old-1 must be items 0..n_old-1).
        changed: bool (N,) items whose embedding was recomputed.
        removed: bool (N,) removed items (marked deleted).

    Returns:
        What was done: counts added/replaced/deleted, ``ef``, ``recall_at_k``.
    """
    if not os.path.isdir(base_index):
        raise FileNotFoundError(f"{base_index}: no index to update; run `pinsage-ray index "
                                "RUN_DIR` first")
    index = load_index(base_index)
    ids = item_ids.to_numpy(zero_copy_only=False)
    if len(index) < n_old or index.ids[:n_old].tolist() != ids[:n_old].tolist():
        raise ValueError(f"{base_index}: its positions are not the graph's items in id order "
                         "(built from other embeddings?); rebuild it with `pinsage-ray index "
                         "RUN_DIR` before updating")
    if len(index) > n_old:
        raise ValueError(f"{base_index}: holds {len(index) - n_old} item(s) added with "
                         "Recommender.add_items beyond the graph; an update cannot keep them. "
                         "Rebuild the index (`pinsage-ray index RUN_DIR`) or add their "
                         "interactions and features to the update instead")
    if isinstance(index, PartitionedIndex):  # each partition updated as one index is
        off = index.offsets
        ranges = [(int(lo), int(hi)) for lo, hi in zip(off[:-1], off[1:])]
        ranges[-1] = (ranges[-1][0], len(emb))  # new items join the last partition
        parts, reports = [], []
        for part, (lo, hi) in zip(index.parts, ranges):
            new, rep = _apply(part, emb[lo:hi], ids[lo:hi], min(n_old, hi) - lo,
                              changed[lo:hi], removed[lo:hi])
            parts.append(new)
            reports.append(rep)
        index = PartitionedIndex(parts, {k: v for k, v in index.manifest.items()
                                         if k == "build"})
        report = {k: sum(r[k] for r in reports) for k in ("added", "replaced", "deleted")}
        sizes = [max(len(p), 1) for p in parts]
        hnsw = [r.get("hnsw_recall_at_k") for r in reports]
        report.update(mode=",".join(sorted({r["mode"] for r in reports})),
                      rebuilt=any(r["rebuilt"] for r in reports), ef=index.ef,
                      recall_at_k=index.recall_at_k, partitions=reports,
                      hnsw_recall_at_k=None if None in hnsw else
                      float(np.average(hnsw, weights=sizes)))
    else:
        index, report = _apply(index, emb, ids, n_old, changed, removed)
    index.save(out_dir)
    return report


def _apply(index: HNSWIndex, emb: np.ndarray, ids: np.ndarray, n_old: int, changed: np.ndarray,
           removed: np.ndarray) -> tuple[HNSWIndex, dict[str, Any]]:
    """The change applied to one index whose positions are rows ``0..n_old-1`` of ``emb``."""
    already = np.zeros(len(emb), dtype=bool)
    already[index.deleted] = True
    rep = np.flatnonzero(changed[:n_old] & ~removed[:n_old])
    gone = np.flatnonzero(removed & ~already)
    mode = "relink" if len(rep) <= RELINK_FRACTION * n_old else "refresh"
    report = {"added": int(len(emb) - n_old), "replaced": int(len(rep)),
              "deleted": int(len(gone))}
    old_ef = index.ef
    if len(rep):
        (index.replace_items if mode == "relink" else index.refresh_vectors)(emb[rep], ids[rep])
    if len(emb) > n_old:
        index.add_items(emb[n_old:], ids[n_old:])
    if len(gone):
        index.mark_deleted(ids[gone])
    check = _recheck(index, emb, removed)
    if mode == "refresh" and not (check["reached"]
                                  and check["ef"] <= REFRESH_MAX_EF_GROWTH * old_ef):
        logger.info("index update: the refreshed graph reaches recall@k %.4f at ef=%d (was "
                    "ef=%d); rebuilding it", check["hnsw_recall_at_k"] or 0.0, check["ef"],
                    old_ef)
        mode = "rebuilt"
        index = _rebuild(index, emb, ids, removed)
        check = _recheck(index, emb, removed)
    report.update(mode=mode, rebuilt=mode == "rebuilt", **check)
    return index, report


def _rebuild(old: HNSWIndex, emb: np.ndarray, ids: np.ndarray,
             removed: np.ndarray) -> HNSWIndex:
    """A fresh index over every item (position = contiguous id), removed items deleted."""
    m = old.manifest
    config = HNSWConfig(space=m["space"], M=int(m["M"]),
                        ef_construction=int(m["ef_construction"]), seed=int(m["seed"]),
                        k_for_recall=int(m["k_for_recall"]),
                        target_recall=float(m["target_recall"]),
                        search=m.get("search_requested") or "auto")
    index = HNSWIndex.build(emb, ids, config)
    if removed.any():
        index.mark_deleted(ids[removed])
    return index


def _recheck(index: HNSWIndex, emb: np.ndarray, removed: np.ndarray) -> dict[str, Any]:
    """Re-measure recall@k of HNSW on live vectors; raise ``ef`` along the ladder if needed."""
    man = index.manifest
    live = np.flatnonzero(~removed)
    k = min(int(man.get("k_for_recall", 10)), len(live))
    if k < 1:
        return {"ef": index.ef, "recall_at_k": None, "reached": True}
    rng = np.random.default_rng(int(man.get("seed", 0)))
    queries = np.sort(rng.choice(live, size=min(RECALL_QUERIES, len(live)), replace=False))
    ladder = sorted({e for e in EF_LADDER if e >= index.ef} | {index.ef})

    def knn(q: np.ndarray, kk: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        index._index.set_ef(ef)
        return index._knn(q, kk)

    res = tune_ef(knn, emb[queries], emb[live], live, k, index.space, ladder,
                  float(man.get("target_recall", 0.95)))
    index.ef = res.ef
    hnsw = {"hnsw_recall_at_k": res.recall, "recall_queries": "indexed_sample",
            "recall_query_count": int(len(queries)), "recall_measured_at_count": int(len(live))}
    index._manifest.update(hnsw)
    if index.search == "hnsw":
        index._manifest["recall_at_k"] = res.recall
    return {"ef": res.ef, "recall_at_k": index.recall_at_k, "reached": res.reached, **hnsw}
