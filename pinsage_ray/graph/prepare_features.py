"""Item features for ``prepare(engine="ray")``: read, checked and aligned by Ray tasks.

Until now the distributed ``prepare`` read the whole features table into the driver, checked
it and aligned it to the item ids there (the driver's peak at 94M edges, docs/scaling.md).
Here the driver never holds a feature value beyond one sorted block:

1. **Read and check** (:func:`read_features`): one task per features fragment (a CSV file or
   a run of Parquet row groups, as for the interactions) casts its ids to the graph's id type
   and turns its rows into float32 vectors with the local engine's own
   :func:`inputs.feature_matrix`, in row order. A fragment that fails any of the local
   checks (nulls, types, lengths, NaN, a duplicate inside the fragment) is only *flagged*.
2. **Markers**: the rows' ids go into the item sort as marker rows (``prepare_ray``), so
   feature-only items get their ids in order.
3. **Align** (:func:`align_features`): once the item ids are known, a task per block replaces
   each id by its position, Ray Data's ``sort`` orders the rows by position, and the driver
   streams the sorted vectors into ``item_features.npy`` (bytes as ``np.save`` writes them).
   Rows must be exactly positions ``0 .. num_items - 1`` once each; otherwise some item has
   no features or two rows (flagged too).

**Errors are the local engine's, exactly**: whenever a fragment or the alignment is flagged,
the driver runs the local checks on the whole table (:func:`raise_local_error`), which raise
the message the single-process ``prepare`` gives (first failing check, first row, named by file
and line). That costs the old driver memory, but only for input that is about to be refused.
In-memory feature tables (a ``pyarrow.Table`` or DataFrame) are aligned in the driver as
before: the caller holds them whole already.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pinsage_ray.graph import inputs
from pinsage_ray.graph import prepare_blocks as blocks
from pinsage_ray.graph.inputs import InputError
from pinsage_ray.graph.sources import Source

logger = logging.getLogger(__name__)

__all__ = ["FeatureInput", "align_features", "feature_block", "markers", "positions",
           "raise_local_error", "read_features", "read_whole"]


@dataclass
class FeatureInput:
    """A features file or folder read by tasks: its files and fragments.

    Attributes:
        path: what the user passed.
        files: ``prepare_ray._Files`` (format, filesystem, schema, row groups).
        item_column: the user's name for ``item`` when the file has no ``item`` column.
        frags: the fragments the tasks read (set once the cluster's size is known).
    """

    path: str
    files: Any
    item_column: str | None
    frags: list = field(default_factory=list)

    def read(self, index: int) -> pa.Table:
        f = self.files
        table = blocks.read_fragment(self.frags[index], f.fmt, f.fs, f.schema, self.path)
        return inputs.rename_item(table, self.item_column)


def feature_block(table: pa.Table, item_type: pa.DataType) -> tuple[pa.Table | None, int]:
    """``(rows, dim)`` of one fragment: ``item`` (cast to ``item_type``) and ``f`` (its
    float32 vector, converted as the local engine converts it), in row order; ``(None, 0)``
    for an empty fragment and ``(None, -1)`` when the local checks fail on the fragment (the
    driver then runs them on the whole table, which gives the exact error)."""
    if table.num_rows == 0:
        return None, 0
    try:
        if "item" not in table.column_names:
            return None, -1
        items = table.column("item").combine_chunks()
        if items.null_count:
            return None, -1
        items = inputs._cast_ids(items, pa.array([], type=item_type), "", "features")
        if len(pc.unique(items)) != len(items):
            return None, -1  # a duplicate: feature_matrix would align it to the first row
        # With unique ids aligned to themselves, the matrix is the rows in row order.
        vectors = inputs.feature_matrix(table, items, "")
    except InputError:
        return None, -1
    dim = int(vectors.shape[1])
    if dim == 0:
        return None, -1  # zero-width vectors: left to the driver, as before
    f = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dim)
    return pa.table({"item": items, "f": f}), dim


def read_features(source: FeatureInput, item_type: pa.DataType) -> tuple[list, int] | None:
    """Checked feature rows (one object ref per non-empty fragment) and their width, or None
    when a fragment fails a check, the fragments disagree on the width or every fragment is
    empty: the caller then reads the table in the driver as before (and the local checks
    raise the local engine's error)."""
    import ray

    from pinsage_ray.graph.prepare_ray import _remote

    src_ref = ray.put(source)
    outs = [_remote(_read_block).options(num_returns=2).remote(src_ref, i, item_type)
            for i in range(len(source.frags))]
    dims = ray.get([o[1] for o in outs])
    widths = {d for d in dims if d != 0}
    if len(widths) != 1 or -1 in widths:
        return None
    return [o[0] for d, o in zip(dims, outs) if d], widths.pop()


def _read_block(source: FeatureInput, index: int,
                item_type: pa.DataType) -> tuple[pa.Table | None, int]:
    """:func:`feature_block` of fragment ``index`` (a task of :func:`read_features`)."""
    try:
        table = source.read(index)
    except InputError:  # a damaged file: read_whole raises the local engine's message
        return None, -1
    return feature_block(table, item_type)


def markers(table: pa.Table, has_times: bool) -> pa.Table:
    """Marker rows (``prepare_ray._markers``) for the ids of one block of feature rows."""
    from pinsage_ray.graph.prepare_ray import _markers

    return _markers(table.column("item").combine_chunks(), has_times)


def positions(table: pa.Table, item_ids: pa.Array) -> pa.Table:
    """The block's rows with ``pos`` (the item's position in the sorted ``item_ids``)
    instead of ``item``; every id is among ``item_ids`` (they were added as markers)."""
    items = table.column("item").combine_chunks()
    if pa.types.is_integer(item_ids.type):
        pos = np.searchsorted(item_ids.to_numpy(), items.to_numpy()).astype(np.int64)
    else:
        pos = pc.index_in(items, value_set=item_ids).to_numpy(zero_copy_only=False)
    return pa.table({"pos": pa.array(pos, pa.int64()), "f": table.column("f")})


def align_features(row_refs: list, item_ids: pa.Array, dim: int, stream: Any) -> bool:
    """Sort the feature rows by item position and write their vectors to ``stream`` (a
    ``(num_items, dim)`` float32 :class:`~pinsage_ray.graph.prepare_write.NpyStream`). False (and nothing more
    written) as soon as the rows are not exactly one per item, in order."""
    import ray
    import ray.data

    from pinsage_ray.graph.prepare_ray import _in_key_order, _remote

    ids_ref = ray.put(item_ids)
    placed = [_remote(positions).remote(r, ids_ref) for r in row_refs]
    sorted_refs, rows = _in_key_order(ray.data.from_arrow_refs(placed).sort("pos")
                                      .to_arrow_refs(), "pos", strict=False)
    if rows != len(item_ids):
        return False
    expected = 0
    for ref in sorted_refs:
        table = ray.get(ref)
        pos = table.column("pos").to_numpy()
        if not np.array_equal(pos, np.arange(expected, expected + len(pos))):
            return False
        values = pc.list_flatten(table.column("f").combine_chunks()).to_numpy()
        stream.write(values.reshape(len(pos), dim))
        expected += len(pos)
        del table, pos, values
    return True


def read_whole(source: FeatureInput) -> tuple[pa.Table, Source]:
    """The features table read whole in the driver (the path before this module), renamed."""
    feats, origin = inputs.read_input(source.path)
    return inputs.rename_item(feats, source.item_column), origin


def raise_local_error(source: FeatureInput, item_ids: pa.Array) -> None:
    """Read the features whole and run the local engine's checks on the graph's
    ``item_ids``: they raise its error (a duplicate row or an item without features).
    Raises RuntimeError if they pass, which would be a bug in the task-side checks."""
    feats, origin = read_whole(source)
    inputs.feature_matrix(feats, item_ids, origin, check_only=True)
    raise RuntimeError(f"prepare(engine='ray'): the features of {source.path!r} failed a check on "
                       "the workers that the local engine passes; use engine='local' and "
                       "report this")
