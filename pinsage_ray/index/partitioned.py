"""One HNSW index per partition of the items, queried by fan-out and an exact top-k merge.

Past one machine the embeddings stay Parquet parts and no process should build (or hold)
one HNSW graph over every item. A :class:`PartitionedIndex` is P ordinary
:class:`~pinsage_ray.index.HNSWIndex` es over contiguous row ranges of the embeddings
(partition p holds rows ``[bounds[p], bounds[p+1])``, so the concatenated ids are the
embeddings' order). A query asks every partition for its own top ``k + excluded`` and merges
by score: each partition's best k among the items a query may return are in that list, so the
merged top-k equals the top-k of one index over all items whenever the partitions answer
exactly (``search='exact'``); with HNSW each partition's answer is approximate and the merge
adds no error of its own. Each partition keeps its own tuned ``ef`` and its own timed
HNSW-or-exact choice (``search='auto'``), so a small partition can answer exactly.

On disk (local or a URI, written atomically like a single index): ``manifest.json`` with
``kind: "partitioned"`` and one entry per partition (directory, count, the sha256 of its own
manifest), and ``part-00000/`` ... each a saved :class:`HNSWIndex`. :func:`load_index` opens
either layout. The parallel build (one Ray task per partition, each reading only its rows of
the embeddings) is :func:`pinsage_ray.inference.index_build.build_run_index`; this
module has no Ray in it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from pinsage_ray.index import _hnsw_io as io
from pinsage_ray.index._hnsw_io import PARTITIONED_KIND, IndexIntegrityError
from pinsage_ray.index.config import (HNSWConfig, as_matrix, check_int, exclusion_lists,
                                      normalize_ids, query_matrix)
from pinsage_ray.index.hnsw import HNSWIndex

logger = logging.getLogger(__name__)

__all__ = ["PartitionedIndex", "exclusion_ids", "load_index", "merge_top", "partition_bounds",
           "partition_entries", "partition_top", "saved_kind"]


def partition_bounds(count: int, partitions: int) -> np.ndarray:
    """``(partitions + 1,)`` row bounds splitting ``count`` rows into near-equal ranges."""
    check_int("partitions", partitions, 1, "e.g. 4 (one per node)")
    if partitions > max(count, 1):
        raise ValueError(f"partitions={partitions} exceeds the {count} items; use at most "
                         f"{max(count, 1)}")
    return np.round(np.linspace(0, count, partitions + 1)).astype(np.int64)


def part_dir_name(p: int) -> str:
    return f"part-{p:05d}"


def partitioned_manifest(entries: list[dict[str, Any]], count: int, dim: int, space: str,
                         **extra: Any) -> dict[str, Any]:
    """The top ``manifest.json`` of a partitioned index: ``entries`` hold each partition's
    ``dir``, ``count`` and ``manifest_sha256``, in row order."""
    return {**extra, "kind": PARTITIONED_KIND, "format_version": io.FORMAT_VERSION,
            "count": int(count), "dim": int(dim), "space": space, "partitions": entries}


def exclusion_ids(exclude: Any, single: bool, q: int, by: str, count: int,
                  ids: Callable[[], np.ndarray], object_ids: bool) -> list[np.ndarray] | None:
    """Each query row's excluded items as caller ids (``by='position'``: global positions
    mapped through ``ids()``), checked; None without exclusions."""
    if exclude is None:
        return None
    rows = exclusion_lists([exclude] if single else list(exclude), q, by, count)
    every = ids() if by == "position" else None
    kind = object if object_ids else None
    return [np.asarray(every[r].tolist() if by == "position" else r, dtype=kind) for r in rows]


def partition_top(part: HNSWIndex, q: np.ndarray, k: int,
                  ex: list[np.ndarray] | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One partition's answer to a fan-out query: its best ``k + (excluded items it
    holds)`` (at most its live items) with excluded ids scored ``-inf``, and per query row the
    live items it holds that may be returned. ``ex``: excluded caller ids per row, or None.
    Shared by :class:`PartitionedIndex` and partitions served from their own actors."""
    deleted = part.deleted
    live = len(part) - len(deleted)
    held = np.zeros(len(q), dtype=np.int64)  # live excluded items this partition holds
    if ex is not None:
        for r, e in enumerate(ex):
            pos = np.asarray([part._pos[i] for i in e.tolist() if i in part._pos],
                             dtype=np.int64)
            held[r] = np.count_nonzero(~np.isin(pos, deleted))
    fetch = int(min(live, k + held.max(initial=0)))
    available = live - held
    if fetch < 1:
        return (np.empty((len(q), 0), dtype=part.ids.dtype), np.empty((len(q), 0)), available)
    ids, scores = part.query(q, fetch)
    scores = scores.astype(np.float64)
    if ex is not None and held.any():
        for r, e in enumerate(ex):
            if held[r]:
                scores[r, np.isin(ids[r], e)] = -np.inf
    return ids, scores, available


def merge_top(answers: list[tuple[np.ndarray, np.ndarray, np.ndarray]], k: int, count: int,
              single: bool) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k of the partitions' :func:`partition_top` answers (ties keep partition
    order, then each partition's rank); ``count``: items in every partition together."""
    available = np.sum([a for _, _, a in answers], axis=0)
    if k > available.min(initial=count):
        raise ValueError(f"k={k} exceeds the {count} indexed items minus "
                         f"{count - int(available.min())} excluded or deleted")
    ids = np.concatenate([i for i, _, _ in answers], axis=1)
    scores = np.concatenate([s for _, s, _ in answers], axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    ids = np.take_along_axis(ids, order, 1)
    scores = np.take_along_axis(scores, order, 1).astype(np.float32)
    return (ids[0], scores[0]) if single else (ids, scores)


class PartitionedIndex:
    """P :class:`HNSWIndex` partitions answering as one index (same query API).

    Positions are global: partition p's local position ``j`` is position
    ``offsets[p] + j``. Items added later (:meth:`add_items`) go to the last partition.
    """

    def __init__(self, parts: Sequence[HNSWIndex], manifest: dict[str, Any] | None = None) -> None:
        if not parts:
            raise ValueError("parts is empty; a partitioned index needs at least one partition")
        dims, spaces = {p.dim for p in parts}, {p.space for p in parts}
        if len(dims) > 1 or len(spaces) > 1:
            raise ValueError(f"partitions disagree: dims {sorted(dims)}, spaces {sorted(spaces)}")
        self._parts = list(parts)
        self._manifest = dict(manifest or {})

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(sum(len(p) for p in self._parts))

    @property
    def parts(self) -> tuple[HNSWIndex, ...]:
        """The partitions, in row order."""
        return tuple(self._parts)

    @property
    def offsets(self) -> np.ndarray:
        """``(P + 1,)`` global position where each partition starts (and the total)."""
        return np.concatenate([[0], np.cumsum([len(p) for p in self._parts])]).astype(np.int64)

    @property
    def dim(self) -> int:
        return self._parts[0].dim

    @property
    def space(self) -> str:
        return self._parts[0].space

    @property
    def ids(self) -> np.ndarray:
        """Caller ids in global position order; read-only."""
        out = np.concatenate([p.ids for p in self._parts])
        out.flags.writeable = False
        return out

    @property
    def deleted(self) -> np.ndarray:
        """Global positions marked deleted (int64, sorted)."""
        return np.concatenate([p.deleted + o for p, o in zip(self._parts, self.offsets)]
                              ).astype(np.int64)

    @property
    def ef(self) -> int:
        """The largest partition ``ef`` (each partition keeps its own tuned one)."""
        return max(p.ef for p in self._parts)

    @ef.setter
    def ef(self, value: int) -> None:
        for p in self._parts:
            p.ef = value

    @property
    def search(self) -> str:
        """``'hnsw'`` or ``'exact'`` when every partition agrees, else ``'mixed'``."""
        kinds = {p.search for p in self._parts}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @search.setter
    def search(self, value: str) -> None:
        for p in self._parts:
            p.search = value

    @property
    def recall_at_k(self) -> float | None:
        """Item-weighted mean of the partitions' held-out recall (None if one is unmeasured)."""
        recalls = [p.recall_at_k for p in self._parts]
        if any(r is None for r in recalls):
            return None
        return float(np.average(recalls, weights=[max(len(p), 1) for p in self._parts]))

    @property
    def manifest(self) -> dict[str, Any]:
        """The partitioned manifest, with each partition's own manifest under ``parts``."""
        return {**self._manifest, "kind": PARTITIONED_KIND, "count": len(self), "dim": self.dim,
                "space": self.space, "search": self.search, "recall_at_k": self.recall_at_k,
                "parts": [p.manifest for p in self._parts]}

    def _owner(self, item_id: Any) -> tuple[int, int]:
        key = int(item_id) if isinstance(item_id, np.integer) else item_id
        for i, part in enumerate(self._parts):
            try:
                return i, part.position_of(key)
            except KeyError:
                continue
        raise KeyError(f"id {item_id!r} is not in the index ({len(self)} items)")

    def position_of(self, item_id: Any) -> int:
        """Global position of a caller id; raises ``KeyError`` if absent."""
        p, j = self._owner(item_id)
        return int(self.offsets[p] + j)

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, vectors: np.ndarray, ids: Any, partitions: int,
              config: HNSWConfig | None = None) -> "PartitionedIndex":
        """Build P partitions in this process, one after another (the parallel build over
        Ray tasks is :func:`pinsage_ray.inference.index_build.build_run_index`)."""
        x = as_matrix(vectors, "vectors")
        ids_arr = normalize_ids(ids, len(x))
        bounds = partition_bounds(len(x), partitions)
        parts = [HNSWIndex.build(x[lo:hi], ids_arr[lo:hi], config)
                 for lo, hi in zip(bounds[:-1], bounds[1:])]
        return cls(parts, {"bounds": bounds.tolist()})

    # ------------------------------------------------------------------ query
    def _exclusions(self, exclude: Any, single: bool, q: int, by: str) -> list[np.ndarray] | None:
        return exclusion_ids(exclude, single, q, by, len(self), lambda: self.ids,
                             self._parts[0].ids.dtype == object)

    def query(self, vectors: np.ndarray, k: int,
              exclude: Sequence[Iterable[Any] | None] | Iterable[Any] | None = None,
              exclude_by: str = "id") -> tuple[np.ndarray, np.ndarray]:
        """Top-k over every partition: same arguments and results as :meth:`HNSWIndex.query`.

        Each partition returns its best ``k + (excluded items it holds)`` (at most its live
        items); excluded ids are dropped and the rest merged by score (ties keep partition
        order, then each partition's rank).
        """
        q, single = query_matrix(vectors, k, exclude_by, self.dim)
        ex = self._exclusions(exclude, single, len(q), exclude_by)
        return merge_top([partition_top(part, q, k, ex) for part in self._parts], k,
                         len(self), single)

    # ------------------------------------------------------------------ update
    def add_items(self, vectors: np.ndarray, ids: Any) -> None:
        """Append items to the last partition (ids new to every partition)."""
        new = normalize_ids(ids, len(as_matrix(vectors, "vectors", self.dim)))
        for v in new.tolist():
            if any(v in p._pos for p in self._parts[:-1]):
                raise ValueError(f"id {v!r} is already in the index; ids must be unique - "
                                 "rebuild to replace an item's vector")
        self._parts[-1].add_items(vectors, new)

    def _by_owner(self, ids: Any) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for row, v in enumerate(np.asarray(ids).tolist()):
            groups.setdefault(self._owner(v)[0], []).append(row)
        return groups

    def replace_items(self, vectors: np.ndarray, ids: Any) -> None:
        """New vectors for items already in the index, each in the partition that holds it."""
        x = as_matrix(vectors, "vectors", self.dim)
        ids_arr = normalize_ids(ids, len(x))
        for p, rows in self._by_owner(ids_arr).items():
            self._parts[p].replace_items(x[rows], ids_arr[rows])

    def mark_deleted(self, ids: Any) -> None:
        """Never return these items again (marked in the partitions that hold them)."""
        ids_arr = np.asarray(ids)
        for p, rows in self._by_owner(ids_arr).items():
            self._parts[p].mark_deleted(ids_arr[rows])

    # ------------------------------------------------------------------ persistence
    def write_files(self, directory: Path) -> None:
        """Write every partition and then the partitioned manifest into ``directory``."""
        entries = []
        for p, part in enumerate(self._parts):
            sub = Path(directory) / part_dir_name(p)
            sub.mkdir()
            part.write_files(sub)
            entries.append({"dir": sub.name, "count": len(part),
                            "manifest_sha256": io.sha256_file(sub / io.MANIFEST_FILE)})
        io.write_manifest(Path(directory), partitioned_manifest(
            entries, len(self), self.dim, self.space, **self._manifest))

    def save(self, path: str | Path) -> None:
        """Atomically write the partitioned index (a URI: uploaded with the manifest last)."""
        if io.is_uri(path):
            io.upload_index_dir(self.write_files, str(path))
        else:
            io.atomic_write_dir(Path(path), self.write_files)
        logger.info("Saved partitioned index (%d items in %d partitions) to %s", len(self),
                    len(self._parts), path)

    @classmethod
    def load(cls, path: str | Path, ef: int | None = None, num_threads: int = 1,
             search: str | None = None) -> "PartitionedIndex":
        """Load and verify a directory written by :meth:`save` (each partition verified as
        :meth:`HNSWIndex.load` verifies one index, and against the partitioned manifest)."""
        if io.is_uri(path):
            with io.downloaded_index_dir(str(path)) as local:
                return cls.load(local, ef=ef, num_threads=num_threads, search=search)
        keep, entries = partition_entries(path)
        parts = []
        for sub, count in entries:
            part = HNSWIndex.load(sub, ef=ef, num_threads=num_threads, search=search)
            if len(part) != count:
                raise IndexIntegrityError(f"{sub}: {len(part)} items, the partitioned manifest "
                                          f"says {count}")
            parts.append(part)
        return cls(parts, keep)


def partition_entries(path: str | Path) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The partitioned manifest at ``path`` (a directory or a URI) without its partition
    list, and each partition's directory and item count, each partition's own manifest
    checked against the sha256 the partitioned manifest recorded."""
    import hashlib

    from pinsage_ray import _io

    fs, root = _io.resolve(str(path))
    where = Path(str(path)) / io.MANIFEST_FILE if not io.is_uri(path) else f"{path}/manifest.json"
    manifest = _read_json(where, fs, _io.join(root, io.MANIFEST_FILE))
    entries = manifest.get("partitions")
    if manifest.get("kind") != PARTITIONED_KIND or not isinstance(entries, list) or not entries:
        raise IndexIntegrityError(f"{where}: not a partitioned index manifest (kind "
                                  "'partitioned' with a partitions list)")
    out = []
    for entry in entries:
        name = str(entry.get("dir"))
        sub = str(Path(str(path)) / name) if not io.is_uri(path) else f"{path}/{name}"
        try:
            with fs.open_input_file(_io.join(root, name, io.MANIFEST_FILE)) as f:
                got = hashlib.sha256(f.read()).hexdigest()
        except (FileNotFoundError, OSError):
            got = None
        if got != entry.get("manifest_sha256"):
            raise IndexIntegrityError(f"{Path(sub) / io.MANIFEST_FILE}: missing or not the "
                                      "manifest the partitioned index was saved with; rebuild "
                                      "the index")
        out.append((sub, entry.get("count")))
    keep = {k: v for k, v in manifest.items() if k not in ("partitions", "count")}
    return keep, out


def _read_json(where: Any, fs: Any, inner: str) -> dict[str, Any]:
    try:
        with fs.open_input_file(inner) as f:
            out = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        parent = where.parent if isinstance(where, Path) else str(where).rsplit("/", 1)[0]
        raise IndexIntegrityError(f"{where}: manifest is missing; {parent} is not a saved "
                                  "index") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IndexIntegrityError(f"{where}: manifest is not valid JSON ({exc})") from exc
    if not isinstance(out, dict):
        raise IndexIntegrityError(f"{where}: manifest must be a JSON object")
    return out


def load_index(path: str | Path, ef: int | None = None, num_threads: int = 1,
               search: str | None = None) -> HNSWIndex | PartitionedIndex:
    """Open a saved index of either layout: one :class:`HNSWIndex` or a
    :class:`PartitionedIndex` (``manifest.json["kind"] == "partitioned"``)."""
    if io.is_uri(path):  # download once, then dispatch on the local copy
        with io.downloaded_index_dir(str(path)) as local:
            return load_index(local, ef=ef, num_threads=num_threads, search=search)
    directory = Path(path)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} is not a directory; nothing to load")
    cls = PartitionedIndex if saved_kind(directory) == PARTITIONED_KIND else HNSWIndex
    return cls.load(directory, ef=ef, num_threads=num_threads, search=search)


def saved_kind(path: str | Path) -> str | None:
    """What a saved index (a directory or a URI) is, from its manifest: ``"partitioned"``
    (a :class:`PartitionedIndex`), ``"single"`` (one :class:`HNSWIndex`, whose manifest has
    no ``kind``), or None when the manifest is missing or unreadable (the load then names
    what is wrong with it)."""
    from pinsage_ray import _io

    fs, root = _io.resolve(str(path))
    try:
        with fs.open_input_file(_io.join(root, io.MANIFEST_FILE)) as f:
            return json.loads(f.read().decode("utf-8")).get("kind", "single")
    except (ValueError, AttributeError, OSError):
        return None
