"""Per-block steps of the distributed ``prepare`` (plain functions, no Ray).

:mod:`pinsage_ray.graph.prepare_ray` runs these on Ray workers, one input fragment or one
sorted block at a time; they are plain functions of pyarrow tables so that they can be tested
and read without Ray. Each reuses the single-process code of :mod:`pinsage_ray.graph.inputs`
and :mod:`pinsage_ray.graph.prepare` on its block, so both engines check, encode and merge
with the same code and give the same errors and bytes.

A fragment is one CSV file or a run of row groups of one Parquet file. Rows carry ``seq``:
the file's index (in the order ``pyarrow.dataset`` lists a folder, which is the order the
local engine reads it) shifted left by 40 bits, plus the row's index within its file, so
``seq`` orders rows exactly as the single-process engine's table does.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from pinsage_ray.graph import inputs
from pinsage_ray.graph.inputs import InputError
from pinsage_ray.graph.edges import encode_ids, merge_edges
from pinsage_ray.graph.sources import Source

logger = logging.getLogger(__name__)

#: Bits of ``seq`` that hold the row within its file (2**40 rows per file).
ROW_BITS = 40


@dataclass(frozen=True)
class Fragment:
    """One unit of parallel reading: a CSV file or consecutive row groups of a Parquet file.

    Attributes:
        file_index: the file's position in the input's file list.
        path: the file's path on ``fs``.
        row_groups: the Parquet row groups, or ``()`` for the whole file.
        offset: index within the file of the fragment's first row.
    """

    file_index: int
    path: str
    row_groups: tuple[int, ...]
    offset: int


class FileRows(Source):
    """A :class:`Source` that names the rows of one fragment as the whole input's Source names
    them (``part-1.csv line 3``), and remembers the last row it named (to order errors)."""

    def __new__(cls, name: str, fmt: str, fs: Any, path: str, fragment: Fragment) -> FileRows:
        self = super().__new__(cls, name, fmt, fs, path)
        self.fragment, self.asked = fragment, None
        return self

    def _file_of(self, row: int) -> tuple[str, int]:
        self.asked = int(row)
        return self.fragment.path, self.fragment.offset + int(row)


def read_fragment(fragment: Fragment, fmt: str, fs: Any, schema: pa.Schema,
                  user_path: str) -> pa.Table:
    """The fragment's rows, typed by the whole input's schema (as the local read types them)."""
    try:
        if fmt == "parquet" and fragment.row_groups:
            frag = pads.ParquetFileFormat().make_fragment(
                fragment.path, filesystem=fs, row_groups=list(fragment.row_groups))
            return frag.to_table(schema=schema)
        return pads.dataset(fragment.path, filesystem=fs, format=fmt,
                            schema=schema).to_table()
    except (pa.ArrowException, OSError, ValueError) as err:  # damaged or not that format
        text = " ".join(str(err).split())[:300]
        raise InputError(f"input {user_path!r}: cannot be read as {fmt} ({text}); check the "
                         "file is a complete, valid Parquet/CSV file") from None


def clean_rows(table: pa.Table, columns: dict[str, str], origin: FileRows) -> pa.Table:
    """Map columns and validate like the local engine, then keep what the graph needs:
    ``item``, ``group`` (int64 or string), ``w`` (float64; 1.0 without a weight column),
    ``t`` (int64, with timestamps) and ``seq``. Zero-weight rows are kept (counted later)."""
    table = inputs.map_columns(table, columns, origin)
    if table.num_rows:
        inputs.validate_interactions(table, origin)
    elif not {"item", "group"} <= set(table.column_names):
        # no rows to build from: the driver reports empty input, as the local engine does
        return pa.table({"seq": pa.array([], pa.int64())})
    out = {"item": _ids(table.column("item")), "group": _ids(table.column("group"))}
    out["w"] = (table.column("weight").to_numpy().astype(np.float64)
                if "weight" in table.column_names else np.ones(table.num_rows))
    if "timestamp" in table.column_names:
        out["t"] = table.column("timestamp").cast(pa.int64()).combine_chunks()
    frag = origin.fragment
    out["seq"] = ((np.int64(frag.file_index) << np.int64(ROW_BITS))
                  + frag.offset + np.arange(table.num_rows, dtype=np.int64))
    return pa.table(out)


def _ids(column: pa.ChunkedArray) -> pa.Array:
    """Ids as the local ``_encode`` sees them: integers as int64, large strings as strings."""
    column = column.combine_chunks()
    if pa.types.is_integer(column.type):
        return column.cast(pa.int64())
    if pa.types.is_large_string(column.type):
        return column.cast(pa.string())
    return column


#: The order in which ``inputs.validate_interactions`` runs its checks, by message pattern.
_RANKS = [(re.compile(r"cannot be read as"), 0), (re.compile(r": no column '"), 1),
          (re.compile(r"missing column\(s\)"), 2)]
_COLS = ("item", "group", "weight", "timestamp")


def error_rank(message: str) -> int:
    """Where a check comes in ``validate_interactions`` (lower: checked first).

    The local engine runs every check over the whole table before the next, so its error is
    the first failing check, at its first row. Each block reports its own first error; the
    driver keeps the lowest (rank, row order), which is the local engine's error.
    """
    for pattern, rank in _RANKS:
        if pattern.search(message):
            return rank
    m = re.search(r"column '(\w+)' is null", message)
    if m and m.group(1) in _COLS:
        return 10 + 2 * _COLS.index(m.group(1))
    m = re.search(r"column '(\w+)' has type", message)
    if m and m.group(1) in ("item", "group"):
        return 11 + 2 * _COLS.index(m.group(1))
    if m and m.group(1) == "weight":
        return 20
    if "column 'weight' = " in message:
        return 21
    if m and m.group(1) == "timestamp":
        return 22
    return 30


def check_fragment(fragment: Fragment, fmt: str, fs: Any, schema: pa.Schema, user_path: str,
                   name: str, root: str, columns: dict[str, str]) -> tuple | None:
    """``(rank, seq, message)`` of the fragment's first error, or None when it is clean."""
    origin = FileRows(name, fmt, fs, root, fragment)
    try:
        clean_rows(read_fragment(fragment, fmt, fs, schema, user_path), columns, origin)
    except InputError as err:
        row = origin.asked if origin.asked is not None else 0
        seq = (fragment.file_index << ROW_BITS) + fragment.offset + row
        return error_rank(str(err)), seq, str(err)
    return None


def drop_zero(table: pa.Table) -> pa.Table:
    """Rows of weight > 0 (weights are >= 0 once validated)."""
    return table.filter(pc.greater(table.column("w"), 0))


def key_summary(table: pa.Table, key: str | list[str]) -> tuple[int, Any, Any]:
    """``(rows, first key, last key)`` of a block sorted by ``key`` (keys None when empty)."""
    if table.num_rows == 0:
        return 0, None, None
    keys = [key] if isinstance(key, str) else key
    first = tuple(table.column(k)[0].as_py() for k in keys)
    last = tuple(table.column(k)[table.num_rows - 1].as_py() for k in keys)
    return table.num_rows, first, last


def encode_groups(table: pa.Table, offset: int) -> tuple[pa.Table, pa.Array]:
    """Replace ``group`` by ``gcode`` (offset + rank within this block's distinct groups).

    The block holds every row of its groups (a sorted block, see ``prepare_ray``), so its
    distinct ids are a contiguous run of the global sorted ids, starting at ``offset``.
    """
    ids, codes = encode_ids(table.column("group"))
    out = table.drop_columns(["group"]).append_column("gcode", pa.array(codes + offset))
    return out, ids


def encode_items_and_merge(table: pa.Table, offset: int, n_groups: int,
                           weighted: bool) -> tuple[pa.Table, pa.Array, dict]:
    """Encode ``item`` (marker rows, ``gcode == -1``, add feature-only items) and merge
    duplicate (item, group) edges with the local engine's ``merge_edges``.

    Returns the merged edges sorted by (icode, gcode) with ``w`` (float32) and, with
    timestamps, ``t`` (earliest) and ``fseq`` (``seq`` of the edge's first row); the block's
    distinct item ids; and counts (``rows``, ``edges``, ``items_with_edges``, ``lo``, ``hi``).
    """
    ids, codes = encode_ids(table.column("item"))
    real = table.column("gcode").to_numpy() >= 0
    seq = table.column("seq").to_numpy()[real]
    order = np.argsort(seq, kind="stable")  # input order, as the local table has it
    icode = (codes[real] + offset)[order]
    gcode = table.column("gcode").to_numpy()[real][order]
    w = table.column("w").to_numpy()[real][order] if weighted else None
    has_t = "t" in table.column_names
    t = table.column("t").to_numpy()[real][order] if has_t else None
    edges, report = merge_edges(icode, gcode, w, t, n_groups)
    out = {"icode": edges["item"], "gcode": edges["group"], "w": edges["weight"]}
    if has_t:
        out["t"] = edges["time"]
        out["fseq"] = seq[order][edges["first_row"]]
    counts = {"rows": int(real.sum()), "edges": len(edges["item"]),
              "items_with_edges": len(np.unique(icode)), "lo": offset, "hi": offset + len(ids)}
    return pa.table(out), ids, counts
