"""Reading and checking user input tables for ``prepare``.

Every check names the file, the row and the column, and says how to fix it, so a user with a
50M-row Parquet export can find the bad row without a debugger: a CSV file's line number
(header = line 1), a Parquet file's row number counted from 1, an in-memory table's row
index (:mod:`pinsage_ray.graph.sources`); values are printed plainly (``inf``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pinsage_ray import _io
from pinsage_ray.data.types import INTERACTION_COLUMNS
from pinsage_ray.graph.sources import Source, plain

logger = logging.getLogger(__name__)


class InputError(ValueError):
    """Bad input to ``prepare``: the message names the file, row, column and the fix."""


def read_table(path: str) -> pa.Table:
    """Read a Parquet or CSV file, or a folder of them (format from the extension)."""
    fs, resolved = _io.resolve(path)
    info = fs.get_file_info(resolved)
    if info.type == _io.pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {path!r} does not exist")
    fmt = _input_format(fs, resolved, info, path)
    try:
        return pads.dataset(resolved, filesystem=fs, format=fmt).to_table()
    except (pa.ArrowException, OSError, ValueError) as err:  # damaged or not that format
        text = " ".join(str(err).split())[:300]
        raise InputError(f"input {path!r}: cannot be read as {fmt} ({text}); check the file "
                         "is a complete, valid Parquet/CSV file") from None


def _input_format(fs: _io.pafs.FileSystem, resolved: str, info: _io.pafs.FileInfo,
                  path: str) -> str:
    """'csv' or 'parquet', from the file's extension (a folder: csv if every file is)."""
    if info.type == _io.pafs.FileType.File:
        lower = resolved.lower()
        if lower.endswith((".csv", ".csv.gz", ".tsv")):
            return "csv"
        if not lower.endswith((".parquet", ".pq")):
            raise InputError(f"input {path!r}: unknown extension; use .parquet or .csv")
        return "parquet"
    names = [f.path for f in fs.get_file_info(_io.pafs.FileSelector(resolved))]
    return "csv" if names and all(n.lower().endswith(".csv") for n in names) else "parquet"


def read_input(path: str) -> tuple[pa.Table, Source]:
    """:func:`read_table`, and the :class:`Source` that names its rows by line or row number."""
    table = read_table(path)
    fs, resolved = _io.resolve(path)
    return table, Source(path, _input_format(fs, resolved, fs.get_file_info(resolved), path),
                         fs, resolved)


def column_flag(role: str) -> str:
    """The ``pinsage-ray prepare`` flag that maps a column role: ``--item-col`` etc."""
    return f"--{role}-col"


def as_table(value: Any, argument: str) -> pa.Table | None:
    """``value`` as a pyarrow Table when it is an in-memory table (a ``pa.Table`` or a pandas
    ``DataFrame``, its index dropped); None when it is something else (a path)."""
    if isinstance(value, pa.Table):
        return value
    pd = sys.modules.get("pandas")  # a DataFrame implies pandas is imported already
    if pd is not None and isinstance(value, pd.DataFrame):
        try:
            return pa.Table.from_pandas(value, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError) as err:
            text = " ".join(str(err).split())[:300]
            raise InputError(f"{argument}: this DataFrame cannot be converted to Arrow "
                             f"({text}); give ids as int or str columns, weights as numbers")
    return None


def check_columns(columns: dict[str, str] | None) -> dict[str, str]:
    """Validate ``prepare(columns=...)``: a mapping from ``item``/``group``/``weight``/
    ``timestamp`` to the input's own column names."""
    if columns is None:
        return {}
    if not isinstance(columns, dict):
        raise TypeError(f"columns={columns!r}: expected a dict like {{'item': 'movie_id', "
                        "'group': 'user_id'}")
    unknown = sorted(set(columns) - set(INTERACTION_COLUMNS))
    if unknown:
        raise ValueError(f"columns={columns!r}: unknown key(s) {unknown}; keys are the roles "
                         f"{list(INTERACTION_COLUMNS)}, values your input's column names")
    bad = {k: v for k, v in columns.items() if not isinstance(v, str) or not v}
    if bad:
        raise ValueError(f"columns={columns!r}: {bad} is not a column name (a non-empty str)")
    return dict(columns)


def map_columns(table: pa.Table, columns: dict[str, str], origin: str,
                roles: tuple[str, ...] = INTERACTION_COLUMNS) -> pa.Table:
    """The input's columns renamed to their roles (``columns``: role -> input column name).

    Only the roles in ``roles`` are kept when a mapping is given (other columns of the input
    are ignored); without one the table is returned as it is. A mapped column that is not in
    the input raises :class:`InputError` naming the flag, the column and the columns present.
    """
    columns = {k: v for k, v in columns.items() if k in roles}
    if not columns:
        return table
    for role, name in columns.items():
        if name not in table.column_names:
            raise InputError(
                f"{origin}: no column {name!r} for the {role!r} column ({column_flag(role)} "
                f"{name}, or columns={{{role!r}: {name!r}}} in Python); columns present: "
                f"{table.column_names}")
    taken = set(columns.values())
    out = {}
    for role in roles:
        name = columns.get(role, role if role not in taken else None)
        if name is not None and name in table.column_names:
            out[role] = table.column(name)
    return pa.table(out)


def _src(origin: str) -> Source:
    return origin if isinstance(origin, Source) else Source(origin)


def _first(mask: pa.Array | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def validate_interactions(table: pa.Table, origin: str) -> None:
    """Check columns, nulls, id types, weights and timestamps of an interactions table."""
    if table.num_rows == 0:
        raise InputError(f"{origin}: no interactions (empty input); nothing to build a graph from")
    missing = [c for c in ("item", "group") if c not in table.column_names]
    if missing:
        raise InputError(
            f"{origin}: missing column(s) {missing}; found {table.column_names}. "
            "Rename the columns to 'item' and 'group' (optional 'weight', 'timestamp'), or "
            "map yours: pinsage-ray prepare --item-col NAME --group-col NAME, or "
            "prepare(..., columns={'item': NAME, 'group': NAME}) in Python."
        )
    for col in [c for c in ("item", "group", "weight", "timestamp") if c in table.column_names]:
        column = table.column(col)
        if column.null_count:
            row = _first(pc.is_null(column).to_numpy(zero_copy_only=False))
            raise InputError(f"{_src(origin).at(row)}, column {col!r} is null; drop or fill it")
        typ = column.type
        if col in ("item", "group") and not (pa.types.is_integer(typ) or pa.types.is_string(typ)
                                             or pa.types.is_large_string(typ)):
            raise InputError(f"{origin}: column {col!r} has type {typ}; ids must be int or string")
    if "weight" in table.column_names:
        w = table.column("weight")
        if not (pa.types.is_integer(w.type) or pa.types.is_floating(w.type)):
            raise InputError(f"{origin}: column 'weight' has type {w.type}; expected numbers")
        w = w.to_numpy().astype(np.float64)
        bad = ~np.isfinite(w) | (w < 0)
        if bad.any():
            row = _first(bad)
            raise InputError(
                f"{_src(origin).at(row)}, column 'weight' = {plain(w[row])}; weights must be "
                "finite and "
                ">= 0 (0 drops the edge)"
            )
    if "timestamp" in table.column_names:
        t = table.column("timestamp")
        if pa.types.is_timestamp(t.type) or pa.types.is_date(t.type):
            return
        if not pa.types.is_integer(t.type):
            raise InputError(
                f"{origin}: column 'timestamp' has type {t.type}; expected integers or timestamps")


def feature_item_column(names: list[str], columns: dict[str, str]) -> str | None:
    """The features' column to read as ``item``: the interactions' mapped item column
    (``columns["item"]``) when the features have no ``item`` column; None: no renaming."""
    return columns["item"] if "item" not in names and "item" in columns else None


def rename_item(table: pa.Table, item_column: str | None) -> pa.Table:
    """``table`` with ``item_column`` (:func:`feature_item_column`) renamed to ``item``."""
    if item_column is None:
        return table
    return table.rename_columns([("item" if c == item_column else c) for c in table.column_names])


def feature_matrix(table: pa.Table, item_ids: pa.Array, origin: str, *,
                   check_only: bool = False) -> np.ndarray | None:
    """Align a features table to contiguous item ids: float32 (num_items, F).

    ``table`` has ``item`` plus either one list/fixed-size-list column or several numeric
    columns. Every graph item needs a row (``prepare`` first adds the items that have features
    but no interactions to ``item_ids``); rows for unknown items or duplicates are errors.
    ``check_only``: run every check and return None (nothing the size of the matrix is built).

    Memory beside the table: the output and one column or one chunk at a time (numeric
    columns are converted and scattered column by column, a list column chunk by chunk), so
    a 32-d table of 4.7M items costs 0.6 GB here instead of three or four copies.
    """
    if "item" not in table.column_names:
        raise InputError(f"{origin}: features need an 'item' column; found {table.column_names}")
    others = [c for c in table.column_names if c != "item"]
    if not others:
        raise InputError(f"{origin}: no feature columns besides 'item'")
    list_cols = [c for c in others if pa.types.is_list(table.schema.field(c).type)
                 or pa.types.is_large_list(table.schema.field(c).type)
                 or pa.types.is_fixed_size_list(table.schema.field(c).type)]
    if list_cols:
        if len(others) != 1:
            raise InputError(
                f"{origin}: found list column {list_cols[0]!r} and other columns {others}; "
                "give either one list column or only numeric columns")
        col = table.column(list_cols[0])  # chunk by chunk below: no combined copy
        if col.null_count:
            raise InputError(f"{_src(origin).at(_first(pc.is_null(col)))}, column "
                             f"{list_cols[0]!r} is null")
        lengths = pc.list_value_length(col).to_numpy()
        if len(lengths) and (lengths != lengths[0]).any():
            row = _first(lengths != lengths[0])
            raise InputError(
                f"{_src(origin).at(row)}, column {list_cols[0]!r} has {lengths[row]} values but "
                f"{_src(origin).where(0)} has {lengths[0]}; every feature vector must have the "
                "same length")
        dim = int(lengths[0]) if len(lengths) else 0
        del lengths
        finite = np.ones(table.num_rows, dtype=bool)
        for lo, values in _list_chunks(col, dim):
            finite[lo:lo + len(values)] = np.isfinite(values).all(axis=1)
        columns = None
    else:
        for c in others:
            t = table.schema.field(c).type
            if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)):
                raise InputError(f"{origin}: feature column {c!r} has type {t}; expected numbers")
            if table.column(c).null_count:
                raise InputError(f"{_src(origin).at(_first(pc.is_null(table.column(c))))}, column "
                                 f"{c!r} is null")
        columns, dim = others, len(others)
        finite = np.ones(table.num_rows, dtype=bool)
        for c in others:  # one converted column at a time
            finite &= np.isfinite(_float_column(table, c))
    if not finite.all():
        raise InputError(f"{_src(origin).at(_first(~finite))} has a NaN or infinite feature "
                         "value")
    del finite
    pos = _positions(table.column("item"), item_ids, origin, "features")
    if len(np.unique(pos)) != len(pos):
        _, first, counts = np.unique(pos, return_index=True, return_counts=True)
        row = int(np.sort(np.setdiff1d(np.arange(len(pos)), first))[0])
        raise InputError(f"{_src(origin).at(row)}: duplicate features for item "
                         f"{table.column('item')[row].as_py()!r}")
    if len(pos) != len(item_ids):
        absent = np.setdiff1d(np.arange(len(item_ids)), pos)
        raise InputError(
            f"{origin}: {len(absent)} graph item(s) have no features, e.g. item "
            f"{item_ids[int(absent[0])].as_py()!r}; give every item a feature row")
    if check_only:
        return None
    out = np.empty((len(item_ids), dim), dtype=np.float32)
    if columns is None:
        for lo, values in _list_chunks(col, dim):
            out[pos[lo:lo + len(values)]] = values
    else:
        for j, c in enumerate(columns):
            out[pos, j] = _float_column(table, c)
    return out


def _list_chunks(col: pa.ChunkedArray, dim: int) -> Iterator[tuple[int, np.ndarray]]:
    """``(first row, (rows, dim) values)`` per chunk of a list column of equal-length rows
    without nulls: views of Arrow's buffers where the values are float32 already (combining
    the chunks and converting the whole column made two copies of the matrix)."""
    lo = 0
    for chunk in col.chunks:
        values = pc.list_flatten(chunk).to_numpy(zero_copy_only=False)
        yield lo, values.reshape(len(chunk), dim)
        lo += len(chunk)


def _float_column(table: pa.Table, name: str) -> np.ndarray:
    return table.column(name).to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


def feature_only_items(table: pa.Table, item_ids: pa.Array, origin: str) -> pa.Array:
    """Ids of the features table that are not among the interactions' items (cold start).

    These items have content but no engagement yet (the paper's cold-start case); ``prepare``
    adds them to the graph with degree 0. Returned unique, cast to ``item_ids.type``.
    """
    if "item" not in table.column_names:
        raise InputError(f"{origin}: features need an 'item' column; found {table.column_names}")
    items = table.column("item").combine_chunks()
    if items.null_count:
        row = _first(pc.is_null(items).to_numpy(zero_copy_only=False))
        raise InputError(f"{_src(origin).at(row)}, column 'item' is null; drop or fill it")
    items = _cast_ids(items, item_ids, origin, "features")
    unknown = pc.invert(pc.is_in(items, value_set=item_ids))
    return pc.unique(items.filter(unknown))


def align_labels(table: pa.Table, item_ids: pa.Array, origin: str) -> np.ndarray:
    """int64 labels (num_items,) from a table with ``item`` and ``label``; -1 where absent."""
    for col in ("item", "label"):
        if col not in table.column_names:
            raise InputError(f"{origin}: labels need columns 'item' and 'label'")
    pos = _positions(table.column("item"), item_ids, origin, "labels")
    out = np.full(len(item_ids), -1, dtype=np.int64)
    out[pos] = table.column("label").to_numpy().astype(np.int64)
    return out


def _positions(items: pa.ChunkedArray, item_ids: pa.Array, origin: str, what: str) -> np.ndarray:
    items = _cast_ids(items.combine_chunks(), item_ids, origin, what)
    pos = pc.index_in(items, value_set=item_ids)
    if pos.null_count:
        row = _first(pc.is_null(pos).to_numpy(zero_copy_only=False))
        raise InputError(
            f"{_src(origin).at(row)}: {what} given for unknown item {items[row].as_py()!r} "
            "(neither in the interactions nor in the item features); drop it, or add its "
            "interactions or a feature row")
    return pos.to_numpy().astype(np.int64)


def _cast_ids(items: pa.Array, item_ids: pa.Array, origin: str, what: str) -> pa.Array:
    if items.type != item_ids.type:
        try:
            items = items.cast(item_ids.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise InputError(f"{origin}: {what} item ids have type {items.type} but the "
                             f"interactions' ids have type {item_ids.type}; write the "
                             f"{what} item ids as {item_ids.type} (the same ids as the "
                             "interactions)") from err
    return items
