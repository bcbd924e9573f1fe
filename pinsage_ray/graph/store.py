"""The graph directory: the on-disk contract between ``prepare`` and everything downstream.

A graph directory holds the item-group bipartite graph (the paper's pins and boards) with
contiguous ids, as CSR in both directions, plus optional item features, labels and metadata::

    manifest.json          format version, counts, dtypes, per-file size and sha256, degree
                           stats, report
    item_ids.parquet       column ``id``: original item id of contiguous id i (row i)
    group_ids.parquet      the same for groups
    item_indptr.npy        int64 (num_items + 1,)  item -> groups CSR (a feature-only item's
                                                   row is empty: degree 0)
    item_indices.npy       int64 (num_edges,)      group ids, sorted within a row
    item_weights.npy       float32 (num_edges,)    edge weights (> 0; duplicates summed)
    group_indptr.npy       int64 (num_groups + 1,) group -> items CSR
    group_indices.npy      int64 (num_edges,)      item ids, by (timestamp, input order) if timed
    group_weights.npy      float32 (num_edges,)
    group_times.npy        int64 (num_edges,)      only when the input had timestamps
    item_features.npy      float32 (num_items, F)  only with features
    item_labels.npy        int64 (num_items,)      only with labels (e.g. planted communities)
    item_metadata.parquet  ``item`` + display columns, only with metadata

:class:`GraphStore` opens one (local path or ``s3://`` URI) and hands out whole arrays
(memory-mapped when local) or row slices (one ranged read each), so a shard actor can load only
its own rows.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pinsage_ray import _io

logger = logging.getLogger(__name__)

FORMAT_NAME = "pinsage-ray-graph"
FORMAT_VERSION = 1
DIRECTIONS = ("item", "group")
#: Graphs whose files total at most this many bytes are hashed every time they are opened.
VERIFY_MAX_BYTES = 64 << 20
REPREPARE = "re-run `pinsage-ray prepare INPUT GRAPH_DIR --overwrite`"


class GraphFormatError(ValueError):
    """A graph directory is missing, incomplete, corrupted or of an unknown version."""


@dataclass(frozen=True)
class CSRSlice:
    """Rows ``[lo, hi)`` of one CSR direction, with ``indptr`` rebased to start at 0.

    Attributes:
        lo, hi: global id range of the rows (items or groups).
        indptr: int64 (hi - lo + 1,).
        indices: int64 (nnz,) global ids of the other side.
        weights: float32 (nnz,).
    """

    lo: int
    hi: int
    indptr: np.ndarray
    indices: np.ndarray
    weights: np.ndarray

    @property
    def num_rows(self) -> int:
        return self.hi - self.lo

    @property
    def nbytes(self) -> int:
        return self.indptr.nbytes + self.indices.nbytes + self.weights.nbytes


class GraphStore:
    """Read access to a graph directory written by :func:`pinsage_ray.prepare`.

    What is checked when a store opens: the manifest parses and names this format and
    version; every file it lists exists with the size recorded at write time (a truncated
    file fails here); and, when ``verify`` is True or the files total at most
    :data:`VERIFY_MAX_BYTES` (reading them costs well under a second), each file's sha256,
    so a bit flip that still parses is caught too. Larger graphs are hashed only on request
    (``pinsage-ray inspect --verify``). Whole-array reads also check the ``.npy`` header's
    dtype and shape against the manifest, and any unreadable file is a
    :class:`GraphFormatError` naming it.

    Args:
        path: local directory or URI (``s3://bucket/graph``).
        verify: True: hash every file; False: sizes only; None (default): hash when small.

    Raises:
        GraphFormatError: missing or unreadable manifest, unknown format version, missing
            file, size or checksum mismatch.
    """

    def __init__(self, path: str | os.PathLike, *, verify: bool | None = None) -> None:
        self.uri = os.fspath(path)
        self.fs, self.path = _io.resolve(path)
        manifest_path = _io.join(self.path, "manifest.json")
        if not _io.exists(self.fs, manifest_path):
            raise GraphFormatError(
                f"{self.uri!r} is not a graph directory (no manifest.json). Create one with "
                "`pinsage-ray prepare INPUT GRAPH_DIR` or pinsage_ray.prepare()."
            )
        try:
            self.manifest: dict = _io.read_json(self.fs, manifest_path)
        except (ValueError, UnicodeDecodeError) as err:
            raise GraphFormatError(f"{manifest_path}: not valid JSON ({err}); the graph "
                                   f"directory is corrupted: {REPREPARE}") from None
        if not isinstance(self.manifest, dict) or not isinstance(
                self.manifest.get("files"), dict):
            raise GraphFormatError(f"{manifest_path}: not a {FORMAT_NAME} manifest")
        if self.manifest.get("format") != FORMAT_NAME:
            raise GraphFormatError(f"{manifest_path}: not a {FORMAT_NAME} manifest")
        if self.manifest.get("format_version") != FORMAT_VERSION:
            raise GraphFormatError(
                f"{manifest_path}: format_version {self.manifest.get('format_version')!r} "
                f"but this pinsage-ray reads version {FORMAT_VERSION}; re-run prepare."
            )
        self._check_files(verify)

    @classmethod
    def open(cls, path: str | os.PathLike, *, verify: bool | None = None) -> GraphStore:
        return cls(path, verify=verify)

    def _check_files(self, verify: bool | None) -> None:
        files = self.manifest["files"]
        if verify is None:
            verify = sum(int(m.get("bytes", 0)) for m in files.values()) <= VERIFY_MAX_BYTES
        for name, meta in files.items():
            expected = meta if verify else {k: v for k, v in meta.items() if k != "sha256"}
            _io.verify_file(self.fs, _io.join(self.path, name), expected, REPREPARE,
                            error=GraphFormatError)

    def _fail(self, file: str, err: BaseException) -> GraphFormatError:
        return GraphFormatError(f"{_io.join(self.path, file)}: cannot be read "
                                f"({type(err).__name__}: {err}); the file is corrupted: "
                                f"{REPREPARE}")

    # ------------------------------------------------------------------ sizes
    @property
    def num_items(self) -> int:
        return int(self.manifest["num_items"])

    @property
    def num_groups(self) -> int:
        return int(self.manifest["num_groups"])

    @property
    def num_edges(self) -> int:
        return int(self.manifest["num_edges"])

    @property
    def feature_only_items(self) -> int:
        """Items with features but no interactions (degree 0, cold start) added by prepare."""
        return int(self.manifest.get("feature_only_items", 0))

    @property
    def feature_dim(self) -> int:
        return int(self.manifest.get("feature_dim", 0))

    @property
    def has_timestamps(self) -> bool:
        return bool(self.manifest.get("has_timestamps", False))

    @property
    def weighted(self) -> bool:
        """True when some edge weight differs from 1 (weighted walks then differ from uniform)."""
        return bool(self.manifest.get("weighted", False))

    def has(self, name: str) -> bool:
        return name in self.manifest["files"]

    # ------------------------------------------------------------------ arrays
    def array(self, name: str, *, mmap: bool = True) -> np.ndarray:
        """A whole ``.npy`` array, e.g. ``store.array("item_indptr")``."""
        file = f"{name}.npy"
        if file not in self.manifest["files"]:
            raise KeyError(f"{self.uri}: no array {name!r}; has {sorted(self.manifest['files'])}")
        try:
            arr = _io.read_npy(self.fs, _io.join(self.path, file), mmap=mmap)
        except (ValueError, OSError, EOFError) as err:
            raise self._fail(file, err) from None
        meta = self.manifest["files"][file]
        if (str(arr.dtype), list(arr.shape)) != (meta.get("dtype", str(arr.dtype)),
                                                 meta.get("shape", list(arr.shape))):
            raise GraphFormatError(f"{_io.join(self.path, file)}: holds {arr.dtype} "
                                   f"{list(arr.shape)} but the manifest says {meta.get('dtype')} "
                                   f"{meta.get('shape')} (corrupted header): {REPREPARE}")
        return arr

    def rows(self, direction: str, lo: int, hi: int) -> CSRSlice:
        """CSR rows ``[lo, hi)`` of ``direction`` ('item': item->groups, 'group': group->items)."""
        if direction not in DIRECTIONS:
            raise ValueError(f"direction={direction!r}; expected one of {DIRECTIONS}")
        n = self.num_items if direction == "item" else self.num_groups
        if not 0 <= lo <= hi <= n:
            raise ValueError(f"rows [{lo}, {hi}) outside [0, {n}) for direction {direction!r}")
        indptr = self.array_rows(f"{direction}_indptr", lo, hi + 1)
        start, stop = int(indptr[0]), int(indptr[-1])
        indices = self.array_rows(f"{direction}_indices", start, stop)
        weights = self.array_rows(f"{direction}_weights", start, stop)
        return CSRSlice(lo, hi, indptr - start, indices, weights)

    def array_rows(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Rows ``[lo, hi)`` of array ``name`` (e.g. ``"item_features"``), one ranged read:
        what a worker that handles a range of items reads instead of the whole array."""
        file = f"{name}.npy"
        try:
            return _io.read_npy_rows(self.fs, _io.join(self.path, file), lo, hi)
        except (ValueError, OSError, EOFError) as err:
            raise self._fail(file, err) from None

    def degrees(self, direction: str = "item") -> np.ndarray:
        return np.diff(np.asarray(self.array(f"{direction}_indptr")))

    def features(self) -> np.ndarray | None:
        return self.array("item_features") if self.has("item_features.npy") else None

    def labels(self) -> np.ndarray | None:
        return self.array("item_labels") if self.has("item_labels.npy") else None

    # ------------------------------------------------------------------ ids
    def _ids(self, side: str) -> pa.Array:
        file = f"{side}_ids.parquet"
        try:
            table = pq.read_table(_io.join(self.path, file), filesystem=self.fs)
            return table.column("id").combine_chunks()
        except (pa.ArrowException, OSError, ValueError, KeyError) as err:
            raise self._fail(file, err) from None

    @cached_property
    def item_ids(self) -> pa.Array:
        """Original item ids; ``item_ids[i]`` is the original id of contiguous item ``i``."""
        return self._ids("item")

    @cached_property
    def group_ids(self) -> pa.Array:
        return self._ids("group")

    def item_index(self, original: object, *, argument: str = "items") -> np.ndarray:
        """Contiguous ids of original item ids (a scalar or a sequence).

        Raises:
            KeyError: naming the first unknown id.
        """
        return self._index(self.item_ids, "item", original, argument)

    def group_index(self, original: object, *, argument: str = "groups") -> np.ndarray:
        """Contiguous ids of original group ids (a scalar or a sequence)."""
        return self._index(self.group_ids, "group", original, argument)

    def _index(self, known: pa.Array, side: str, original: object, argument: str) -> np.ndarray:
        values = pa.array(original if isinstance(original, (list, tuple, np.ndarray, pa.Array))
                          else [original])
        if values.type != known.type:
            try:
                values = values.cast(known.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise KeyError(
                    f"{argument}: ids of type {values.type} cannot match this graph's {side} ids "
                    f"of type {known.type}"
                ) from err
        idx = pc.index_in(values, value_set=known)
        if idx.null_count:
            bad = values[pc.index(pc.is_null(idx), True).as_py()].as_py()
            raise KeyError(f"{argument}: {side} id {bad!r} is not in graph {self.uri!r}")
        return idx.to_numpy().astype(np.int64)

    def metadata(self) -> pa.Table | None:
        if "item_metadata.parquet" not in self.manifest["files"]:
            return None
        try:
            return pq.read_table(_io.join(self.path, "item_metadata.parquet"), filesystem=self.fs)
        except (pa.ArrowException, OSError, ValueError) as err:
            raise self._fail("item_metadata.parquet", err) from None

    def __repr__(self) -> str:
        return (f"GraphStore({self.uri!r}, items={self.num_items}, groups={self.num_groups}, "
                f"edges={self.num_edges}, feature_dim={self.feature_dim})")
