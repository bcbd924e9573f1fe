"""A saved :class:`~pinsage_ray.index.PartitionedIndex` served from one Ray actor per partition.

:class:`PartitionedIndex` loads every partition into the process that queries, and asks them
one after another: at the paper's size (40 partitions of 22 GB, docs/scaling.md) that is one
880 GB process. :class:`PartitionActors` opens the same directory with each partition in its
own actor (spread over the cluster, each loading only its own ``part-NNNNN/``), sends a query
to every actor at once and merges their answers in the caller. The per-partition step and the
merge are :func:`~pinsage_ray.index.partitioned.partition_top` and
:func:`~pinsage_ray.index.partitioned.merge_top`, the code :meth:`PartitionedIndex.query`
runs, so both give the same ids and scores (tested on exact and HNSW search, with exclusions
and deleted items).

The caller keeps only the caller ids of every partition (for ``ids``/``position_of``, which
the :class:`~pinsage_ray.recommender.Recommender` checks against its embeddings at load);
vectors and HNSW graphs stay in the actors. The index is read-only here: an update writes a
new version on disk (``pinsage-ray update``) and a new :class:`PartitionActors` serves it.

On 2 cores a query pays a Ray round trip per partition (about 1 ms) that a local
:class:`PartitionedIndex` does not; the point is memory per process and parallel search on
a cluster, not latency on a laptop.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from pinsage_ray.index import _hnsw_io as io
from pinsage_ray.index.config import check_int, query_matrix
from pinsage_ray.index.hnsw import HNSWIndex
from pinsage_ray.index.partitioned import (exclusion_ids, merge_top, partition_entries,
                                           partition_top)

logger = logging.getLogger(__name__)

__all__ = ["PartitionActors"]

#: Queries up to this many bytes are sent inline with each actor call, larger ones put once.
INLINE_QUERY_BYTES = 64 * 1024


class _Partition:
    """The actor body: one partition, loaded and verified in the actor's process."""

    def __init__(self, path: str, count: int, ef: int | None, search: str | None) -> None:
        self.error = None  # a damaged partition: reported by describe(), not a dead actor
        try:
            self.index = HNSWIndex.load(path, ef=ef, search=search)
            if len(self.index) != count:
                raise io.IndexIntegrityError(f"{path}: {len(self.index)} items, the "
                                             f"partitioned manifest says {count}")
        except (io.IndexIntegrityError, FileNotFoundError) as err:
            self.error = f"{type(err).__name__}: {err}"

    def describe(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        ix = self.index
        return {"ids": ix.ids, "deleted": ix.deleted, "dim": ix.dim, "space": ix.space,
                **self.settings()}

    def settings(self) -> dict[str, Any]:
        """What :meth:`set` can change (without the ids, which it cannot)."""
        ix = self.index
        return {"ef": ix.ef, "search": ix.search, "recall_at_k": ix.recall_at_k,
                "manifest": ix.manifest}

    def load_rows(self, run_dir: str, lo: int, hi: int) -> str | None:
        """Hold rows ``[lo, hi)`` of ``run_dir``'s embeddings: this partition's live items,
        checked id for id; an error message instead of raising (the caller raises it)."""
        from pinsage_ray.inference.embeddings_io import read_embedding_rows

        try:
            ids, rows = read_embedding_rows(run_dir, lo, hi)
        except (ValueError, OSError) as err:  # EmbeddingsError is a ValueError
            return f"{type(err).__name__}: {err}"
        live = np.delete(self.index.ids, self.index.deleted)
        if ids.to_numpy(zero_copy_only=False).tolist() != live.tolist():
            return (f"IndexIntegrityError: {run_dir}: embeddings rows [{lo}, {hi}) are not "
                    "the items of the index partition that should hold them; the index was "
                    "built from other embeddings")
        self.rows = rows
        return None

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        return self.rows[rows]

    def node_id(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def top(self, q: np.ndarray, k: int, ex: list | None) -> tuple:
        return partition_top(self.index, q, k, ex)

    def set(self, name: str, value: Any) -> dict[str, Any]:
        setattr(self.index, name, value)
        return self.settings()


class PartitionActors:
    """The partitions of a saved partitioned index, each in its own Ray actor.

    Same query API as :class:`PartitionedIndex` (``query``, ``ids``, ``deleted``,
    ``position_of``, ``ef``, ``search``, ``manifest``...); read-only. Create with
    :meth:`load`; :meth:`close` ends the actors (they also end with the driver).
    """

    def __init__(self, actors: list, infos: list[dict[str, Any]], manifest: dict[str, Any],
                 row_starts: np.ndarray | None = None) -> None:
        self._actors, self._infos, self._manifest = actors, infos, manifest
        self._ids = [i["ids"] for i in infos]
        self._pos: dict[Any, tuple[int, int]] = {}
        self._row_starts = row_starts  # embeddings rows per actor, when they hold them

    @classmethod
    def load(cls, path: str | Path, ef: int | None = None, search: str | None = None, *,
             num_cpus: float = 0.0, memory_gib: float | None = None,
             timeout_s: float = 600.0, embeddings: str | None = None) -> "PartitionActors":
        """Start one actor per partition of the index saved at ``path`` (a directory every
        node can read, or a URI: each actor downloads only its partition).

        Args:
            ef, search: as :meth:`PartitionedIndex.load` (None: each partition's own).
            num_cpus: CPUs each actor reserves. 0 (the default) reserves none: a
                partition actor waits between queries, and reservations can leave it
                unplaceable (a version swap loads a second set of actors beside the first).
            embeddings: a run directory whose embeddings the index was built from: each
                actor also holds its partition's rows of them (its live items, checked id
                for id), served by :meth:`embedding_rows`, so that the caller needs no
                embeddings matrix.
            timeout_s: seconds to wait for every actor to load its partition before the
                actors are ended and a clear error raised (instead of waiting forever for
                resources the cluster cannot give).
            memory_gib: memory each actor reserves (None: none), so that Ray places the
                partitions on nodes with room for them (set it on a real cluster: the
                ``SPREAD`` strategy alone may put a partition on the head node).
        """
        import ray

        from pinsage_ray.ray_utils import init_ray

        if not num_cpus >= 0:
            raise ValueError(f"num_cpus={num_cpus!r}; expected CPUs >= 0 per partition actor")
        if not timeout_s > 0:
            raise ValueError(f"timeout_s={timeout_s!r}; expected seconds > 0")
        if memory_gib is not None and not memory_gib > 0:
            raise ValueError(f"memory_gib={memory_gib!r}; expected GiB > 0 or None")
        if ef is not None:
            check_int("ef", ef, 1, "e.g. 64")
        manifest, entries = partition_entries(path)
        init_ray()
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if num_cpus * len(entries) > cpus:
            raise ValueError(f"num_cpus={num_cpus}: {len(entries)} partition actors need "
                             f"{num_cpus * len(entries):g} CPUs, the cluster has {cpus:g}; "
                             f"pass num_cpus={cpus / len(entries):.2g} or less (or 0)")
        options: dict[str, Any] = {"num_cpus": num_cpus, "scheduling_strategy": "SPREAD"}
        if memory_gib is not None:
            options["memory"] = int(memory_gib * 2**30)
        remote = ray.remote(_Partition).options(**options)
        actors = [remote.remote(sub, count, ef, search) for sub, count in entries]
        try:
            infos = ray.get([a.describe.remote() for a in actors], timeout=timeout_s)
        except BaseException as err:
            for a in actors:
                ray.kill(a)
            if isinstance(err, ray.exceptions.GetTimeoutError):
                raise TimeoutError(
                    f"{path}: {len(actors)} partition actors were not all placed and loaded "
                    f"within {timeout_s:g} s (each asks for {num_cpus:g} CPUs"
                    f"{f' and {memory_gib:g} GiB' if memory_gib else ''}; the cluster has "
                    f"{ray.available_resources()} free): free resources, lower num_cpus or "
                    "memory_gib, or raise timeout_s for very large partitions") from None
            raise
        _raise_first([i["error"] for i in infos if "error" in i], actors)
        starts = None
        if embeddings is not None:
            from pinsage_ray.inference.embeddings_io import embedding_layout

            live = [len(i["ids"]) - len(i["deleted"]) for i in infos]
            starts = np.concatenate([[0], np.cumsum(live)]).astype(np.int64)
            count = embedding_layout(embeddings)["count"]
            if count != starts[-1]:
                _raise_first([f"IndexIntegrityError: {path}: {starts[-1]} live items, the "
                              f"embeddings of {embeddings} have {count}; the index was built "
                              "from other embeddings"], actors)
            _raise_first([e for e in ray.get(
                [a.load_rows.remote(str(embeddings), int(lo), int(hi))
                 for a, lo, hi in zip(actors, starts[:-1], starts[1:])], timeout=timeout_s)
                if e is not None], actors)
        logger.info("serving %d partitions of %s from %d actors", len(actors), path, len(actors))
        return cls(actors, infos, manifest, starts)

    def embedding_rows(self, rows: Any) -> np.ndarray:
        """Rows of the embeddings (live items in index order) from the actors that hold them:
        one row for an int, ``(len(rows), dim)`` for a sequence. Needs ``embeddings=``."""
        import ray

        if self._row_starts is None:
            raise RuntimeError("PartitionActors.load(..., embeddings=RUN_DIR) holds the "
                               "embeddings rows; this one was opened without them")
        flat = np.atleast_1d(np.asarray(rows, dtype=np.int64))
        total = int(self._row_starts[-1])
        if flat.size and (flat.min() < 0 or flat.max() >= total):
            raise IndexError(f"embeddings rows must be in [0, {total}); got "
                             f"{flat.min()}..{flat.max()}")
        part = np.searchsorted(self._row_starts, flat, side="right") - 1
        asked = {int(p): np.flatnonzero(part == p) for p in np.unique(part)}
        got = ray.get([self._actors[p].vectors.remote(flat[sel] - self._row_starts[p])
                       for p, sel in asked.items()])
        out = np.empty((len(flat), self.dim), dtype=got[0].dtype if got else np.float32)
        for sel, values in zip(asked.values(), got):
            out[sel] = values
        return out[0] if np.ndim(rows) == 0 else out

    @property
    def embeddings_count(self) -> int | None:
        """Rows of embeddings the actors hold (None when opened without them)."""
        return None if self._row_starts is None else int(self._row_starts[-1])

    def close(self) -> None:
        """End the partition actors."""
        import ray

        for a in self._actors:
            ray.kill(a)
        self._actors = []

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return int(sum(len(i) for i in self._ids))

    @property
    def num_partitions(self) -> int:
        return len(self._actors)

    @property
    def nodes(self) -> list[str]:
        """The Ray node id each partition's actor runs on, in partition order."""
        import ray

        return ray.get([a.node_id.remote() for a in self._actors])

    @property
    def dim(self) -> int:
        return int(self._infos[0]["dim"])

    @property
    def space(self) -> str:
        return str(self._infos[0]["space"])

    @property
    def ids(self) -> np.ndarray:
        """Caller ids in global position order; read-only."""
        out = np.concatenate(self._ids)
        out.flags.writeable = False
        return out

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(i) for i in self._ids])]).astype(np.int64)

    @property
    def deleted(self) -> np.ndarray:
        return np.concatenate([i["deleted"] + o for i, o in zip(self._infos, self.offsets)]
                              ).astype(np.int64)

    @property
    def ef(self) -> int:
        return max(int(i["ef"]) for i in self._infos)

    @ef.setter
    def ef(self, value: int) -> None:
        check_int("ef", value, 1, "e.g. 64")
        self._set("ef", int(value))

    @property
    def search(self) -> str:
        kinds = {i["search"] for i in self._infos}
        return kinds.pop() if len(kinds) == 1 else "mixed"

    @search.setter
    def search(self, value: str) -> None:
        if value not in ("hnsw", "exact"):
            raise ValueError(f"search must be 'hnsw' or 'exact', got {value!r}")
        self._set("search", value)

    def _set(self, name: str, value: Any) -> None:
        import ray

        for info, changed in zip(self._infos, ray.get([a.set.remote(name, value)
                                                       for a in self._actors])):
            info.update(changed)  # one round trip; the ids stay where they are

    @property
    def recall_at_k(self) -> float | None:
        recalls = [i["recall_at_k"] for i in self._infos]
        if any(r is None for r in recalls):
            return None
        return float(np.average(recalls, weights=[max(len(i), 1) for i in self._ids]))

    @property
    def manifest(self) -> dict[str, Any]:
        return {**self._manifest, "count": len(self), "dim": self.dim, "space": self.space,
                "search": self.search, "recall_at_k": self.recall_at_k, "served_by": "actors",
                "parts": [i["manifest"] for i in self._infos]}

    def position_of(self, item_id: Any) -> int:
        """Global position of a caller id; raises ``KeyError`` if absent."""
        if not self._pos:
            self._pos = {v: (p, j) for p, ids in enumerate(self._ids)
                         for j, v in enumerate(ids.tolist())}
        key = int(item_id) if isinstance(item_id, np.integer) else item_id
        try:
            p, j = self._pos[key]
        except KeyError:
            raise KeyError(f"id {item_id!r} is not in the index ({len(self)} items)") from None
        return int(self.offsets[p] + j)

    # ------------------------------------------------------------------ query
    def query(self, vectors: np.ndarray, k: int,
              exclude: Sequence[Iterable[Any] | None] | Iterable[Any] | None = None,
              exclude_by: str = "id") -> tuple[np.ndarray, np.ndarray]:
        """Top-k over every partition, asked in parallel: as :meth:`PartitionedIndex.query`."""
        import ray

        q, single = query_matrix(vectors, k, exclude_by, self.dim)
        ex = exclusion_ids(exclude, single, len(q), exclude_by, len(self), lambda: self.ids,
                           self._ids[0].dtype == object)
        # One object for every actor when the queries are large; small ones go inline with
        # each call (a put costs more than copying a few vectors).
        q_arg = ray.put(q) if q.nbytes > INLINE_QUERY_BYTES else q
        answers = ray.get([a.top.remote(q_arg, k, ex) for a in self._actors])
        return merge_top(answers, k, len(self), single)

    def _read_only(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("PartitionActors serves a saved index read-only; change the index on "
                        "disk (`pinsage-ray update`, or PartitionedIndex.load, edit, save) and "
                        "load a new PartitionActors")

    add_items = replace_items = mark_deleted = save = _read_only


def _raise_first(errors: list[str], actors: list) -> None:
    """End ``actors`` and raise the first ``"Kind: message"`` of ``errors``, if any."""
    if not errors:
        return
    import ray

    from pinsage_ray.inference.embeddings_io import EmbeddingsError

    for a in actors:
        ray.kill(a)
    kind, _, message = errors[0].partition(": ")
    raise {"FileNotFoundError": FileNotFoundError, "EmbeddingsError": EmbeddingsError,
           "ValueError": EmbeddingsError}.get(kind, io.IndexIntegrityError)(message)
