"""The updated graph: old graph + new interactions + new features - removed items.

``prepare`` numbers items and groups in sorted order of their original ids, so rerunning it
on the merged input would renumber everything, and every stored neighbourhood, layer output
and index label would have to be recomputed. Here existing items and groups KEEP their
contiguous ids and new ones are appended (in sorted order of their original ids among
themselves). Edges are merged exactly as ``prepare`` merges duplicate rows (weights add, the
earliest timestamp is kept, weight-0 rows dropped), and a group's items keep ``prepare``'s
order: by item id, or with timestamps by (time, input order) where the old graph's rows come
before the new input's rows. So a row no update touched is byte-identical to the old one,
which is what makes the walks of unaffected items, and so their neighbourhoods, unchanged.

A removed item keeps its id slot, loses every edge and is marked in ``item_removed.npy``
(bool, ``num_items``): walks never reach it, it gets an empty neighbourhood and it leaves
the index. A group left without items keeps its slot with an empty row.

The result, :class:`GraphDelta`, says which item and group rows changed: the sources of the
bounded search in :mod:`pinsage_ray.update.affected`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pinsage_ray import _io
from pinsage_ray.graph import inputs
from pinsage_ray.graph.inputs import InputError
from pinsage_ray.graph.edges import csr_arrays, degree_stats, merge_edges
from pinsage_ray.graph.store import FORMAT_NAME, FORMAT_VERSION, GraphStore

logger = logging.getLogger(__name__)

REMOVED_FILE = "item_removed"


@dataclass
class GraphDelta:
    """What an update changed in the graph (all arrays over the NEW id space).

    Attributes:
        old_items, old_groups: counts before the update (ids below are kept).
        num_items, num_groups: counts after.
        changed_items: bool (num_items,) item rows (item -> groups) that differ, new items
            included.
        changed_groups: bool (num_groups,) group rows that differ, new groups included.
        features_changed: bool (num_items,) feature rows that differ (new items included).
        removed: bool (num_items,) removed items (this update's and earlier ones').
        weighted_changed: the graph's ``weighted`` flag flipped (every walk may change).
    """

    old_items: int
    old_groups: int
    num_items: int
    num_groups: int
    changed_items: np.ndarray
    changed_groups: np.ndarray
    features_changed: np.ndarray
    removed: np.ndarray
    weighted_changed: bool


def removed_mask(store: GraphStore) -> np.ndarray:
    """bool (num_items,): items removed by an update (all False for a prepared graph)."""
    if store.has(f"{REMOVED_FILE}.npy"):
        return np.asarray(store.array(REMOVED_FILE, mmap=False), dtype=bool)
    return np.zeros(store.num_items, dtype=bool)


def _append_ids(known: pa.Array, column: pa.Array, origin: str, side: str
                ) -> tuple[pa.Array, np.ndarray]:
    """Ids of ``known`` followed by the unseen ids of ``column`` (sorted); codes of ``column``."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_large_string(column.type):
        column = column.cast(pa.string())
    if column.type != known.type:
        try:
            column = column.cast(known.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise InputError(f"{origin}: {side} ids have type {column.type} but the graph's "
                             f"{side} ids are {known.type}; write them as {known.type}") from None
    fresh = pc.unique(column.filter(pc.invert(pc.is_in(column, value_set=known))))
    fresh = fresh.take(pc.sort_indices(fresh))
    ids = pa.concat_arrays([known, fresh]) if len(fresh) else known
    codes = pc.index_in(column, value_set=ids).to_numpy().astype(np.int64)
    return ids, codes


def _old_edges(store: GraphStore) -> dict[str, np.ndarray]:
    """The old edges in group-CSR order, with their rank there (prepare's tie-breaker)."""
    indptr = np.asarray(store.array("group_indptr"))
    group = np.repeat(np.arange(store.num_groups, dtype=np.int64), np.diff(indptr))
    out = {"item": np.asarray(store.array("group_indices")), "group": group,
           "weight": np.asarray(store.array("group_weights"), dtype=np.float64)}
    if store.has_timestamps:
        out["time"] = np.asarray(store.array("group_times"))
    return out


def merge_graph(store: GraphStore, table: pa.Table, origin: str, feats: pa.Table | None,
                feats_origin: str, remove: pa.Array | None, out_dir: str,
                ) -> GraphDelta:
    """Write the updated graph to ``out_dir`` (a fresh directory) and describe the change.

    ``table`` is already column-mapped and validated (:func:`inputs.validate_interactions`).

    Raises:
        InputError: timestamps present in only one of old graph and new input, ids of the
            wrong type, removed items given interactions, missing features for new items.
    """
    if ("timestamp" in table.column_names) != store.has_timestamps:
        have = "has" if store.has_timestamps else "has no"
        raise InputError(f"{origin}: the graph {have} timestamps, so the new interactions "
                         f"must {'' if store.has_timestamps else 'not '}have a 'timestamp' "
                         "column too (found columns " f"{table.column_names})")
    if "weight" in table.column_names:
        table = table.filter(pc.greater(table.column("weight"), 0))
    old_removed = removed_mask(store)
    item_ids, item_codes = _append_ids(store.item_ids, table.column("item"), origin, "item")
    feat_pos = None
    if feats is not None:
        if store.feature_dim == 0:
            raise InputError(f"{feats_origin}: the graph was prepared without item features, "
                             "so new features cannot be added; drop --features")
        fitems = feats.column("item").combine_chunks() if "item" in feats.column_names else None
        if fitems is None:
            raise InputError(f"{feats_origin}: features need an 'item' column; found "
                             f"{feats.column_names}")
        item_ids, _ = _append_ids(item_ids, fitems, feats_origin, "item")
        fids, feat_pos = _append_ids(item_ids, fitems, feats_origin, "item")
        fmat = inputs.feature_matrix(feats, fitems.cast(item_ids.type), feats_origin)
    group_ids, group_codes = _append_ids(store.group_ids, table.column("group"), origin, "group")
    n_old, n, g_old, g = store.num_items, len(item_ids), store.num_groups, len(group_ids)

    removed = np.zeros(n, dtype=bool)
    removed[:n_old] = old_removed
    if remove is not None and len(remove):
        idx = store.item_index(remove, argument="remove_items")  # KeyError names the id
        removed[idx] = True
    hit = removed[item_codes]
    if hit.any():
        row = int(np.flatnonzero(hit)[0])
        raise InputError(f"{inputs._src(origin).at(row)}: item "
                         f"{item_ids[int(item_codes[row])].as_py()!r} is removed (now or by an "
                         "earlier update) but has new interactions; drop its rows or do not "
                         "remove it")

    old = _old_edges(store)
    keep = ~removed[old["item"]]
    e_old = int(keep.sum())
    rank = np.arange(len(old["item"]), dtype=np.int64)[keep]
    items = np.concatenate([old["item"][keep], item_codes])
    groups = np.concatenate([old["group"][keep], group_codes])
    weights = np.concatenate([old["weight"][keep],
                              table.column("weight").to_numpy().astype(np.float64)
                              if "weight" in table.column_names else np.ones(len(item_codes))])
    times = None
    if store.has_timestamps:
        times = np.concatenate([old["time"][keep],
                                table.column("timestamp").cast(pa.int64()).to_numpy()])
    edges, report = merge_edges(items, groups, weights, times, g)
    arrays: dict[str, np.ndarray] = {}
    arrays.update(csr_arrays("item", edges["item"], edges["group"], edges["weight"], n))
    if times is not None:
        # Input order = old edges in their group-CSR order, then the new rows: the same
        # (time, input order) tie-break prepare applies.
        first = edges.pop("first_row")
        order_key = np.where(first < e_old, rank[np.minimum(first, max(e_old - 1, 0))]
                             if e_old else 0, len(old["item"]) + first - e_old)
        order = np.lexsort((order_key, edges["time"], edges["group"]))
    else:
        order = np.argsort(edges["group"], kind="stable")
    arrays.update(csr_arrays("group", edges["group"][order], edges["item"][order],
                       edges["weight"][order], g))
    if times is not None:
        arrays["group_times"] = edges["time"][order]

    features_changed = np.zeros(n, dtype=bool)
    features_changed[n_old:] = True
    if store.feature_dim:
        f = np.zeros((n, store.feature_dim), dtype=np.float32)
        f[:n_old] = np.asarray(store.features())
        if feat_pos is not None:
            if fmat.shape[1] != store.feature_dim:
                raise InputError(f"{feats_origin}: {fmat.shape[1]} feature values per item but "
                                 f"the graph has {store.feature_dim}")
            features_changed[feat_pos] |= (f[feat_pos] != fmat).any(axis=1)
            f[feat_pos] = fmat
        have = np.zeros(n, dtype=bool)
        have[:n_old] = True
        if feat_pos is not None:
            have[feat_pos] = True
        if not have.all():
            raise InputError(f"{feats_origin if feats is not None else origin}: new item "
                             f"{item_ids[int(np.flatnonzero(~have)[0])].as_py()!r} has no "
                             "feature row; give every new item one (--features)")
        arrays["item_features"] = f
    labels = store.labels()
    if labels is not None:
        arrays["item_labels"] = np.concatenate([np.asarray(labels),
                                                np.full(n - n_old, -1, np.int64)])
    arrays[REMOVED_FILE] = removed

    changed_items = _rows_differ(store, arrays, "item", n_old, n)
    changed_groups = _rows_differ(store, arrays, "group", g_old, g)
    weighted = bool(np.any(edges["weight"] != 1.0))
    deg_i, deg_g = np.diff(arrays["item_indptr"]), np.diff(arrays["group_indptr"])
    manifest: dict[str, Any] = {
        **{k: v for k, v in store.manifest.items() if k not in ("files", "report", "stats")},
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "num_items": n, "num_groups": g, "num_edges": int(len(edges["item"])),
        "feature_only_items": int(((deg_i == 0) & ~removed).sum()),
        "removed_items": int(removed.sum()), "weighted": weighted,
        "stats": {"item_degree": degree_stats(deg_i), "group_degree": degree_stats(deg_g)},
        "report": {**report, "rows_read": int(table.num_rows)},
        "updated_from": store.uri, "files": {},
    }
    fs, _ = _io.resolve(out_dir)
    fs.create_dir(out_dir, recursive=True)
    for key, arr in arrays.items():
        manifest["files"][f"{key}.npy"] = _io.write_npy(fs, _io.join(out_dir, f"{key}.npy"), arr)
    for side, ids in (("item", item_ids), ("group", group_ids)):
        manifest["files"][f"{side}_ids.parquet"] = _io.write_parquet(
            fs, _io.join(out_dir, f"{side}_ids.parquet"), pa.table({"id": ids}))
    meta = store.metadata()
    if meta is not None:
        manifest["files"]["item_metadata.parquet"] = _io.write_parquet(
            fs, _io.join(out_dir, "item_metadata.parquet"), meta)
    _io.write_json(fs, _io.join(out_dir, "manifest.json"), manifest)
    return GraphDelta(n_old, g_old, n, g, changed_items, changed_groups, features_changed,
                      removed, weighted != store.weighted)


def _rows_differ(store: GraphStore, new: dict[str, np.ndarray], side: str, n_old: int,
                 n: int) -> np.ndarray:
    """bool (n,): CSR rows of ``side`` whose neighbours or weights differ (new rows: True)."""
    out = np.ones(n, dtype=bool)
    a_ptr = np.asarray(store.array(f"{side}_indptr"))
    b_ptr = new[f"{side}_indptr"][: n_old + 1]
    same_len = np.diff(a_ptr) == np.diff(b_ptr)
    out[:n_old] = ~same_len
    rows = np.flatnonzero(same_len)
    if len(rows):
        a_idx, a_w = np.asarray(store.array(f"{side}_indices")), np.asarray(
            store.array(f"{side}_weights"))
        deg = np.diff(a_ptr)[rows]
        pos_a = np.repeat(a_ptr[rows], deg) + (np.arange(deg.sum()) - np.repeat(
            np.cumsum(deg) - deg, deg))
        pos_b = pos_a - np.repeat(a_ptr[rows], deg) + np.repeat(b_ptr[rows], deg)
        bad = ((a_idx[pos_a] != new[f"{side}_indices"][pos_b])
               | (a_w[pos_a] != new[f"{side}_weights"][pos_b]))
        owner = np.repeat(rows, deg)
        out[np.unique(owner[bad])] = True
    return out
