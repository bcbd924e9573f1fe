"""``prepare``: interactions (+ optional item features) in, graph directory out.

Input is a :class:`~pinsage_ray.data.types.RawDataset`, a pyarrow Table or pandas DataFrame,
or a Parquet/CSV file or folder with columns ``item``, ``group``, optional ``weight`` and
``timestamp`` (other names are mapped with ``columns=``). Every row is checked; a bad
row raises :class:`InputError` naming the file, the row and the column. Ids (int64 or string)
are mapped to contiguous ids in sorted order of the original ids; duplicate (item, group) edges
merge (weights add, the earliest timestamp is kept); rows of weight 0 are dropped first, so
every node that comes from the interactions has at least one edge.

Items that have a feature row but no interactions (new content without engagement yet: the
paper's cold-start case) become items of the graph with degree 0: no edges (empty CSR rows),
their features stored like any other item's, counted in the manifest's
``feature_only_items``. Walks from them are empty, and inference embeds them from their
features alone (see :func:`pinsage_ray.inference.layerwise.inference_ids`).
What was merged or dropped is counted in the manifest's ``report``.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pinsage_ray import _io
from pinsage_ray.data.types import RawDataset
from pinsage_ray.graph.edges import csr_arrays, degree_stats, encode_ids, merge_edges
from pinsage_ray.graph import inputs
from pinsage_ray.graph.inputs import InputError
from pinsage_ray.graph.store import FORMAT_NAME, FORMAT_VERSION, GraphStore

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["prepare", "InputError"]


def prepare(
    source: RawDataset | pa.Table | pd.DataFrame | str | os.PathLike,
    graph_dir: str | os.PathLike,
    *,
    item_features: str | os.PathLike | pa.Table | pd.DataFrame | None = None,
    overwrite: bool = False,
    columns: dict[str, str] | None = None,
    engine: str = "auto",
) -> GraphStore:
    """Build a graph directory from interactions.

    Args:
        source: a RawDataset (from :mod:`pinsage_ray.data`), a pyarrow Table or pandas
            DataFrame, or a Parquet/CSV file or folder. Tables get the same checks as files
            (errors name a row by its index from 0).
        graph_dir: output directory (local or URI); written atomically.
        item_features: optional Parquet path, table or DataFrame with ``item`` plus one list
            column or several numeric columns; overrides ``source.item_features``. Every
            item of the interactions needs a row; a row for an item without interactions
            adds that item with degree 0 (a feature-only, cold-start item).
        overwrite: replace an existing ``graph_dir``.
        columns: the input's own column names by role, for inputs whose columns are not
            ``item``/``group``/``weight``/``timestamp``, e.g. ``{"item": "movie_id",
            "group": "user_id", "weight": "rating"}`` (the CLI's ``--item-col`` etc.).
            The ``item`` name also applies to ``item_features`` when it has no ``item``
            column.
        engine: ``"local"`` (this process), ``"ray"`` (Parquet/CSV files read, sorted and
            encoded by Ray Data: :mod:`pinsage_ray.graph.prepare_ray`, the same graph
            directory) or ``"auto"``: Ray for input files of at least
            ``prepare_ray.AUTO_RAY_MIN_BYTES`` bytes, local otherwise and for tables.

    Example::

        df = pd.DataFrame({"movie": [1, 2, 2], "user": ["a", "a", "b"]})
        pinsage_ray.prepare(df, "graphs/mine", columns={"item": "movie", "group": "user"})

    Returns:
        The opened :class:`GraphStore`.

    Raises:
        InputError: empty input, missing columns, nulls, bad weights, bad features.
        FileExistsError: ``graph_dir`` exists and ``overwrite`` is False.
    """
    from pinsage_ray.graph import prepare_ray

    if prepare_ray.pick_engine(source, engine) == "ray":
        return prepare_ray.prepare_ray(source, graph_dir, item_features=item_features,
                                       overwrite=overwrite, columns=columns)
    t0 = time.perf_counter()
    columns = inputs.check_columns(columns)
    in_memory = inputs.as_table(source, "prepare(source=...)")
    feats, labels, meta = None, None, None
    if isinstance(source, RawDataset):
        name, table, origin = source.name, source.interactions, f"<dataset {source.name}>"
        feats = source.item_features
        labels, meta = source.item_labels, source.item_metadata
    elif in_memory is not None:
        name, table, origin = "table", in_memory, f"<{type(source).__name__}>"
    elif not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"prepare(source=<{type(source).__name__}>): expected a Parquet/CSV "
                        "path, a pyarrow Table, a pandas DataFrame or a RawDataset")
    else:
        name = os.path.basename(os.fspath(source).rstrip("/"))
        table, origin = inputs.read_input(os.fspath(source))  # names rows by line/row number
    if item_features is not None:
        feats = inputs.as_table(item_features, "prepare(item_features=...)")
        feats_origin = f"<{type(item_features).__name__}> (item_features)"
        if feats is None:
            feats, feats_origin = inputs.read_input(os.fspath(item_features))
    else:
        feats_origin = f"{origin} (item_features)"
    table = inputs.map_columns(table, columns, origin)
    if feats is not None:
        feats = inputs.rename_item(feats, inputs.feature_item_column(feats.column_names, columns))

    inputs.validate_interactions(table, origin)
    zero_rows = 0
    if "weight" in table.column_names:
        # Weights are >= 0, so an edge's merged weight is 0 iff all its rows are 0: dropping
        # those rows before id encoding leaves no node without edges.
        positive = pc.greater(table.column("weight"), 0)
        zero_rows = table.num_rows - pc.sum(positive).as_py()
        if zero_rows:
            table = table.filter(positive)
            if table.num_rows == 0:
                raise InputError(f"{origin}: every row has weight 0; nothing to build a graph from")
    item_ids, item_codes = encode_ids(table.column("item"))
    feature_only = 0
    if feats is not None:
        extra = inputs.feature_only_items(feats, item_ids, feats_origin)
        feature_only = len(extra)
        if feature_only:
            # Re-encode over the union so contiguous ids stay in sorted order of original ids.
            union_ids, codes = encode_ids(pa.concat_arrays([item_ids, extra]))
            item_codes = codes[:len(item_ids)][item_codes]
            item_ids = union_ids
    group_ids, group_codes = encode_ids(table.column("group"))
    n_items, n_groups = len(item_ids), len(group_ids)
    weights = (table.column("weight").to_numpy().astype(np.float64)
               if "weight" in table.column_names else None)  # None: every row weighs 1
    times = (table.column("timestamp").cast(pa.int64()).to_numpy()
             if "timestamp" in table.column_names else None)
    has_times, rows_kept = times is not None, len(table)
    # Peak memory is what limits the graph one machine can prepare (docs/scaling.md): from
    # here on only integer codes are needed, so drop the table and every input array as soon
    # as the next stage has what it needs.
    del table
    edges, report = merge_edges(item_codes, group_codes, weights, times, n_groups)
    del item_codes, group_codes, weights, times
    report["rows_read"] = rows_kept + zero_rows
    report["zero_weight_rows_dropped"] = int(zero_rows)

    arrays: dict[str, np.ndarray] = {}
    arrays.update(csr_arrays("item", edges["item"], edges["group"], edges["weight"], n_items))
    # Edges are sorted by (item, group), so a stable sort by group alone orders them by
    # (group, item); with timestamps, a group's items go in time order (input order on ties).
    order = (np.lexsort((edges.pop("first_row"), edges["time"], edges["group"]))
             if has_times else np.argsort(edges["group"], kind="stable"))
    arrays.update(csr_arrays("group", edges["group"][order], edges["item"][order],
                       edges["weight"][order], n_groups))
    if has_times:
        arrays["group_times"] = edges["time"][order]
    del order
    feature_dim = 0
    if feats is not None:
        arrays["item_features"] = inputs.feature_matrix(feats, item_ids, feats_origin)
        feature_dim = arrays["item_features"].shape[1]
    if labels is not None:
        arrays["item_labels"] = inputs.align_labels(labels, item_ids, f"{origin} (labels)")

    deg_i, deg_g = np.diff(arrays["item_indptr"]), np.diff(arrays["group_indptr"])
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "name": name,
        "source": origin,
        "num_items": n_items,
        "num_groups": n_groups,
        "num_edges": int(len(edges["item"])),
        "feature_only_items": int(feature_only),
        "feature_dim": feature_dim,
        "has_timestamps": has_times,
        "weighted": bool(np.any(edges["weight"] != 1.0)),
        "item_id_type": str(item_ids.type),
        "group_id_type": str(group_ids.type),
        "stats": {"item_degree": degree_stats(deg_i), "group_degree": degree_stats(deg_g)},
        "report": report,
        "files": {},
    }
    with _io.atomic_directory(graph_dir, overwrite=overwrite) as tmp:
        fs, _ = _io.resolve(graph_dir)
        for key, arr in arrays.items():
            manifest["files"][f"{key}.npy"] = _io.write_npy(fs, _io.join(tmp, f"{key}.npy"), arr)
        for side, ids in (("item", item_ids), ("group", group_ids)):
            manifest["files"][f"{side}_ids.parquet"] = _io.write_parquet(
                fs, _io.join(tmp, f"{side}_ids.parquet"), pa.table({"id": ids}))
        if meta is not None:
            manifest["files"]["item_metadata.parquet"] = _io.write_parquet(
                fs, _io.join(tmp, "item_metadata.parquet"), _known_rows(meta, item_ids))
        manifest["prepare_seconds"] = round(time.perf_counter() - t0, 3)
        _io.write_json(fs, _io.join(tmp, "manifest.json"), manifest)
    logger.info(
        "prepared %s: %d items (%d feature-only, no edges), %d groups, %d edges (%d duplicate "
        "rows merged, %d zero-weight rows dropped) in %.1fs", graph_dir, n_items, feature_only,
        n_groups, manifest["num_edges"], report["duplicate_rows_merged"],
        report["zero_weight_rows_dropped"],
        manifest["prepare_seconds"])
    return GraphStore(graph_dir)


def _known_rows(meta: pa.Table, item_ids: pa.Array) -> pa.Table:
    """Metadata rows for items in the graph, in contiguous-id order."""
    col = meta.column("item").combine_chunks()
    if col.type != item_ids.type:
        col = col.cast(item_ids.type)
    pos = pc.index_in(item_ids, value_set=col)
    found = pc.drop_null(pos)
    return meta.take(found)
