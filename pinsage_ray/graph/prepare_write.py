"""The distributed ``prepare``'s writers: graph files streamed from sorted blocks.

``prepare(engine="ray")``'s driver writes the graph directory from Ray Data's sorted blocks,
one block at a time, so that nothing it holds grows with the edges or (here) with the nodes:

* :class:`NpyStream`: a ``.npy`` file written in pieces, byte for byte (and with the same
  sha256) as ``np.save`` writes the whole array, so both engines give identical files.
* :func:`write_csr`: a CSR side (``indptr``, ``indices``, ``weights``, ``times``) from blocks
  sorted by row. ``indptr`` is written as the rows complete, so no per-row array is held:
  a row may continue into the next block (the group side's sort key is (group, time, first
  row), so a large group can span blocks), and rows without edges (feature-only items) are
  filled in between blocks.
* :class:`DegreeHistogram`: the manifest's degree statistics (min, median, mean, max) from a
  histogram of the degrees, equal to :func:`pinsage_ray.graph.edges.degree_stats` on the
  whole array, in memory set by the largest degree.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pinsage_ray import _io

__all__ = ["DegreeHistogram", "NpyStream", "write_csr"]


class NpyStream:
    """A ``.npy`` file written in pieces (rows along the first axis), byte for byte as
    ``np.save`` writes it whole. ``shape``: the length, or the whole shape."""

    def __init__(self, fs: Any, path: str, dtype: Any, shape: int | tuple[int, ...]) -> None:
        self.shape = (shape,) if isinstance(shape, int) else tuple(shape)
        self.dtype, self.length, self.written = np.dtype(dtype), self.shape[0], 0
        self.stream = fs.open_output_stream(path)
        self.writer = _io._HashingWriter(self.stream)
        np.lib.format.write_array_header_1_0(self.writer, {
            "descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
            "shape": self.shape})

    def write(self, values: np.ndarray) -> None:
        values = np.ascontiguousarray(values, dtype=self.dtype)
        self.writer.write(values.reshape(-1).view(np.uint8).data)
        self.written += len(values)

    def close(self) -> dict:
        """Close the file; its manifest entry (``sha256``, ``bytes``, ``dtype``, ``shape``)."""
        if not self.stream.closed:
            self.stream.close()
        if self.written != self.length:
            raise RuntimeError(f"wrote {self.written} of {self.length} rows")
        return {"sha256": self.writer.sha.hexdigest(), "bytes": self.writer.nbytes,
                "dtype": str(self.dtype), "shape": list(self.shape)}


class DegreeHistogram:
    """Counts of each degree value, added a run of degrees at a time."""

    def __init__(self) -> None:
        self.counts = np.zeros(1, dtype=np.int64)

    def add(self, degrees: np.ndarray) -> None:
        if len(degrees):
            got = np.bincount(degrees)
            if len(got) > len(self.counts):
                self.counts = np.concatenate(
                    [self.counts, np.zeros(len(got) - len(self.counts), dtype=np.int64)])
            self.counts[:len(got)] += got

    def stats(self) -> dict[str, float]:
        """What ``degree_stats`` gives for the array of every degree added."""
        n = int(self.counts.sum())
        if n == 0:
            return {"min": 0, "median": 0, "mean": 0, "max": 0}
        values = np.flatnonzero(self.counts)
        ends = np.cumsum(self.counts)
        lo, hi = (np.searchsorted(ends, [(n - 1) // 2, n // 2], side="right"))
        total = float(np.dot(np.arange(len(self.counts), dtype=np.float64), self.counts))
        return {"min": int(values[0]), "median": float((np.float64(lo) + np.float64(hi)) / 2),
                "mean": round(total / n, 4), "max": int(values[-1])}


def write_csr(fs: Any, tmp: str, side: str, refs: list, n_rows: int, n_edges: int,
              files: dict, *, times: bool) -> tuple[dict[str, float], bool]:
    """Stream blocks sorted by ``side`` into ``{side}_indptr/indices/weights[/times].npy``;
    return the degree statistics and whether any weight differs from 1. ``refs``: Ray
    object refs of the sorted blocks (or the tables themselves), in key order."""
    import pyarrow as pa
    import ray

    row_col, col_col = ("icode", "gcode") if side == "item" else ("gcode", "icode")
    names = {"indices": np.int64, "weights": np.float32, **({"times": np.int64} if times else {})}
    streams = {k: NpyStream(fs, _io.join(tmp, f"{side}_{k}.npy"), d, n_edges)
               for k, d in names.items()}
    streams["indptr"] = NpyStream(fs, _io.join(tmp, f"{side}_indptr.npy"), np.int64, n_rows + 1)
    hist, any_weight = DegreeHistogram(), False
    # Rows below `row` are written; `row` has `open_edges` so far and may continue.
    row, open_edges, edges_before = 0, 0, 0
    try:
        streams["indptr"].write(np.zeros(1, dtype=np.int64))
        for ref in refs:
            table = ref if isinstance(ref, pa.Table) else ray.get(ref)
            rows = table.column(row_col).to_numpy()
            if len(rows):
                hi = int(rows[-1])
                counts = np.bincount(rows - row, minlength=hi - row + 1)
                counts[0] += open_edges
                done = counts[:-1]  # rows row .. hi - 1 are complete: later blocks start at hi
                streams["indptr"].write(edges_before + np.cumsum(done))
                hist.add(done)
                edges_before += int(done.sum())
                row, open_edges = hi, int(counts[-1])
            w = table.column("w").to_numpy()
            any_weight = any_weight or bool(np.any(w != 1.0))
            streams["indices"].write(table.column(col_col).to_numpy())
            streams["weights"].write(w)
            if times:
                streams["times"].write(table.column("t").to_numpy())
            del table, rows, w
        last = np.zeros(n_rows - row, dtype=np.int64)  # the open row, then rows without edges
        last[0] = open_edges
        streams["indptr"].write(edges_before + np.cumsum(last))
        hist.add(last)
    except BaseException:
        for stream in streams.values():
            stream.stream.close()
        raise
    for k, stream in streams.items():
        files[f"{side}_{k}.npy"] = stream.close()
    return hist.stats(), any_weight
