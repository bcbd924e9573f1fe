"""Edge-level building blocks of a graph directory, shared by every writer of one.

``prepare`` (one process), ``prepare(engine="ray")`` (per sorted block,
:mod:`pinsage_ray.graph.prepare_blocks`) and ``pinsage-ray update``
(:mod:`pinsage_ray.update.graph_delta`) must produce bit-identical arrays from the same
edges, so they share these functions rather than each having its own: id encoding, the merge
of duplicate (item, group) rows, CSR arrays from sorted edges, and the degree summary.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["csr_arrays", "degree_stats", "encode_ids", "merge_edges"]


def encode_ids(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """Sorted unique ids and the contiguous code of every row."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_integer(column.type):
        uniq, codes = np.unique(column.to_numpy(), return_inverse=True)
        return pa.array(uniq.astype(np.int64)), codes.astype(np.int64)
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    uniq = pc.unique(column)
    uniq = uniq.take(pc.sort_indices(uniq))
    codes = pc.index_in(column, value_set=uniq).to_numpy().astype(np.int64)
    return uniq, codes


def merge_edges(items: np.ndarray, groups: np.ndarray, weights: np.ndarray | None,
                 times: np.ndarray | None, n_groups: int) -> tuple[dict, dict]:
    """Merge duplicate (item, group) rows: weights add (``None``: each row weighs 1), the
    earliest timestamp is kept. Edges come out sorted by (item, group)."""
    key = items * np.int64(n_groups) + groups
    order = np.argsort(key, kind="stable")
    key = key[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    if weights is None:  # rows per edge
        w = np.diff(np.append(starts, len(key))).astype(np.float32)
    else:
        w = np.add.reduceat(weights[order], starts).astype(np.float32)
    report = {"duplicate_rows_merged": int(len(key) - len(starts))}
    key = key[starts]
    edges = {"item": key // n_groups, "group": key % n_groups, "weight": w}
    del key
    if times is not None:
        edges["first_row"] = order[starts]  # stable sort: the first input row of each edge
        edges["time"] = np.minimum.reduceat(times[order], starts)
    return edges, report


def csr_arrays(side: str, rows: np.ndarray, cols: np.ndarray, weights: np.ndarray,
         n_rows: int) -> dict[str, np.ndarray]:
    """CSR arrays from edges already sorted by row."""
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return {f"{side}_indptr": indptr, f"{side}_indices": cols.astype(np.int64, copy=False),
            f"{side}_weights": weights.astype(np.float32, copy=False)}


def degree_stats(deg: np.ndarray) -> dict[str, float]:
    """min / median / mean / max of a degree array (the manifest's ``stats``)."""
    if len(deg) == 0:
        return {"min": 0, "median": 0, "mean": 0, "max": 0}
    return {"min": int(deg.min()), "median": float(np.median(deg)),
            "mean": round(float(deg.mean()), 4), "max": int(deg.max())}
