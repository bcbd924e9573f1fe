"""Naming a row of ``prepare``'s input the way its user can find it.

An error about row ``i`` (0-based, as pyarrow counts the rows of the table read) is reported
where the user looks for it:

* a CSV file: its **line number**, the header being line 1 (blank lines, which the CSV reader
  skips, are counted, so the number is what an editor shows);
* a Parquet file: its **row number counted from 1** (what ``parquet-tools`` or a dataframe
  viewer shows as the n-th row);
* a folder of files: the file, then its line or row;
* an in-memory table (``RawDataset``, ``pa.Table``): the row *index*, from 0, as Python indexes
  it (``table.slice(i, 1)``).

Values in messages are printed plainly (``inf``, ``-1.0``, ``'a'``), never as numpy reprs
(``np.float64(inf)``).
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class Source(str):
    """An input's name in messages (a ``str``) that also knows how to name its rows.

    Args:
        name: what the user passed (path or ``<dataset NAME>``).
        fmt: ``"csv"``, ``"parquet"`` or ``None`` (an in-memory table).
        fs, path: the pyarrow filesystem and resolved path of a file or folder.
    """

    fmt: str | None
    fs: Any
    path: str | None

    def __new__(cls, name: str, fmt: str | None = None, fs: Any = None,
                path: str | None = None) -> Source:
        self = super().__new__(cls, name)
        self.fmt, self.fs, self.path = fmt, fs, path
        return self

    def where(self, row: int) -> str:
        """``"line 3"``, ``"row 2 (counted from 1)"``, ``"part-1.csv line 3"`` or ``"row 1"``."""
        row = int(row)
        if self.fmt is None or self.fs is None:
            return f"row {row}"
        try:
            file, local = self._file_of(row)
            prefix = "" if file == self.path else f"{file.rsplit('/', 1)[-1]} "
            if self.fmt == "csv":
                return f"{prefix}line {_csv_line(self.fs, file, local)}"
            return f"{prefix}row {local + 1} (counted from 1)"
        except Exception:  # noqa: BLE001 - an error message must never fail to be made
            logger.debug("could not locate row %d of %s", row, self, exc_info=True)
            return f"data row {row + 1} (counted from 1)"

    def at(self, row: int) -> str:
        """``"<name>: <where>"``, the start of a message about ``row``."""
        return f"{self}: {self.where(row)}"

    def _file_of(self, row: int) -> tuple[str, int]:
        """The file holding data row ``row`` and the row's index within it."""
        import pyarrow.dataset as pads

        dataset = pads.dataset(self.path, filesystem=self.fs, format=self.fmt)
        if len(dataset.files) == 1:
            return dataset.files[0], row
        start = 0
        for fragment in dataset.get_fragments():  # the order to_table() concatenates
            n = fragment.count_rows()
            if row < start + n:
                return fragment.path, row - start
            start += n
        raise IndexError(f"row {row} is past the last file of {self.path}")


def _csv_line(fs: Any, path: str, row: int) -> int:
    """1-based line number of data row ``row`` (0-based) of a CSV file, header = line 1."""
    with fs.open_input_stream(path, compression="detect") as raw:
        text = io.TextIOWrapper(io.BufferedReader(_Readable(raw)), encoding="utf-8",
                                errors="replace", newline="")
        seen = -1  # data rows seen; -1: the header is next
        for number, line in enumerate(text, start=1):
            if not line.strip():
                continue  # the CSV reader skips blank lines
            if seen == row:
                return number
            seen += 1
    raise IndexError(f"{path} has fewer than {row + 1} data rows")


class _Readable(io.RawIOBase):
    """A pyarrow input stream as a raw ``io`` stream (for line-by-line reading)."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def plain(value: Any) -> str:
    """A value as a user reads it: ``inf``, ``-1.0``, ``'a'`` (no ``np.float64(...)``)."""
    if isinstance(value, np.generic):
        value = value.item()
    return repr(value)
