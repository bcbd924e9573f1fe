"""Id-addressable matrices stored as part files: how layer outputs pass between passes.

Layer-wise inference writes each layer's vectors batch by batch (one part per batch, from
whichever Ray Data actor computed it) and the next layer gathers rows *by item id*. A
:class:`VectorStore` is a directory of ``part-*.ids.npy`` / ``part-*.vec.npy`` pairs; opening
it builds an index (item id -> part, row) of 12 bytes per item, and a gather reads only the
parts it needs, memory-mapped on a local disk, so no process holds a whole layer in memory.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections import OrderedDict

import numpy as np

from pinsage_ray import _io

logger = logging.getLogger(__name__)


def write_part(directory: str, ids: np.ndarray, vectors: np.ndarray) -> str:
    """Write one part (atomically: temp names, then rename). Returns the part's stem.

    The stem is a function of ``ids`` (first id and count; a pass's batches are disjoint), so
    a batch computed twice, as Ray Data does when an actor dies after writing its part but
    before returning, replaces its own part instead of adding a second copy of its rows.
    """
    fs, path = _io.resolve(directory)
    fs.create_dir(path, recursive=True)
    ids = np.asarray(ids)
    stem = f"part-{int(ids.min()):012d}-n{len(ids)}"
    tmp = f".tmp-{uuid.uuid4().hex[:8]}"
    for suffix, arr in (("ids", np.asarray(ids, np.int64)),
                        ("vec", np.asarray(vectors, np.float32))):
        _io.write_npy(fs, _io.join(path, f"{tmp}.{suffix}.npy"), arr)
    for suffix in ("vec", "ids"):  # ids last: a part counts once its ids file exists
        fs.move(_io.join(path, f"{tmp}.{suffix}.npy"), _io.join(path, f"{stem}.{suffix}.npy"))
    return stem


class VectorStore:
    """Read rows of an (N, D) matrix written as parts by :func:`write_part`.

    Args:
        directory: the parts' directory (local or URI).
        num_rows: N; every id in [0, N) must be present exactly once.
        cache_parts: parts kept open (memory-mapped locally, in memory otherwise).
    """

    def __init__(self, directory: str | os.PathLike, num_rows: int, cache_parts: int = 64) -> None:
        self.fs, self.path = _io.resolve(directory)
        infos = self.fs.get_file_info(_io.pafs.FileSelector(self.path))
        self.stems = sorted(i.base_name[: -len(".ids.npy")] for i in infos
                            if i.base_name.endswith(".ids.npy") and i.base_name.startswith("part-"))
        self.part_of = np.full(num_rows, -1, dtype=np.int32)
        self.row_of = np.zeros(num_rows, dtype=np.int64)
        for k, stem in enumerate(self.stems):
            ids = _io.read_npy(self.fs, _io.join(self.path, f"{stem}.ids.npy"), mmap=False)
            if ids.size and (ids.min() < 0 or ids.max() >= num_rows):
                raise ValueError(f"{self.path}/{stem}: ids outside [0, {num_rows})")
            if (self.part_of[ids] >= 0).any():
                raise ValueError(f"{self.path}: id {int(ids[self.part_of[ids] >= 0][0])} is "
                                 "written by two parts; delete the directory and rerun")
            self.part_of[ids] = k
            self.row_of[ids] = np.arange(len(ids))
        missing = np.flatnonzero(self.part_of < 0)
        if len(missing):
            raise ValueError(f"{self.path}: {len(missing)} of {num_rows} rows missing (e.g. id "
                             f"{int(missing[0])}); the pass that writes it did not finish")
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_parts = cache_parts
        self.dim = int(self._part(0).shape[1]) if self.stems else 0

    def _part(self, k: int) -> np.ndarray:
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        arr = _io.read_npy(self.fs, _io.join(self.path, f"{self.stems[k]}.vec.npy"), mmap=True)
        self._cache[k] = arr
        if len(self._cache) > self.cache_parts:
            self._cache.popitem(last=False)
        return arr

    def gather(self, ids: np.ndarray) -> np.ndarray:
        """Rows for ``ids`` (any shape of int ids) -> array of shape ``ids.shape + (D,)``."""
        flat = np.asarray(ids, dtype=np.int64).ravel()
        out = np.empty((len(flat), self.dim), dtype=np.float32)
        parts = self.part_of[flat]
        for k in np.unique(parts):
            sel = np.flatnonzero(parts == k)
            out[sel] = self._part(int(k))[self.row_of[flat[sel]]]
        return out.reshape(*np.shape(ids), self.dim)
