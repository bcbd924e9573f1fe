"""The user-facing recommender: related items and group recommendations from a trained run.

``build_index(run_dir)`` puts the item embeddings of ``run_dir/embeddings`` into an HNSW index
(``run_dir/index``: ``ef`` chosen for recall@10 >= 0.95 on queries held out of the graph, and
exact search used instead where it is faster; :mod:`pinsage_ray.index.tuning`).
:class:`Recommender` loads both and answers in *original* item ids:

* ``similar_items(item, k)``: nearest items by cosine similarity (the item itself excluded);
* ``recommend_for_group(items, k)``: a group's (board's, user's, session's) items are pooled
  into one query vector (mean, optionally recency-weighted) and its nearest items returned,
  the group's own items excluded;
* ``add_items(ids, features, groups)``: embeds items that were not in the graph (cold start)
  and makes them retrievable without retraining; an item with no groups yet (content without
  engagement) is embedded from its features alone. They live in memory until
  ``save_added_items()`` writes them into the run (an embeddings part and the index, each
  step atomic: :mod:`pinsage_ray.inference.added_items`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from pinsage_ray.inference.model_io import run_path

logger = logging.getLogger(__name__)


def build_index(run_dir: str | os.PathLike, config: Any = None, *, partitions: int = 1,
                engine: str = "ray", show_progress: bool | None = None) -> Any:
    """Build and save ``run_dir/index`` from ``run_dir/embeddings``; returns the index.

    ``run_dir`` may be a URI (``s3://...``): the index is built in memory, written to a local
    temp dir and uploaded with its manifest last (:meth:`HNSWIndex.save`). ``partitions=P > 1``
    builds a :class:`~pinsage_ray.index.PartitionedIndex` instead: one index per contiguous
    range of the embeddings, built in parallel as Ray tasks (``engine="ray"``) that each read
    only their own rows, queried by fan-out with an exact top-k merge
    (:mod:`pinsage_ray.inference.index_build`). ``show_progress``: a progress bar on stderr;
    None (default): when stderr is a terminal (:func:`pinsage_ray.console.progress_default`).
    """
    from pinsage_ray.console import progress_default
    from pinsage_ray.index import HNSWConfig
    from pinsage_ray.inference.index_build import build_run_index

    index = build_run_index(run_dir, config or HNSWConfig(), partitions=partitions,
                            engine=engine, show_progress=progress_default(show_progress))
    logger.info("index: %d items, %s search, ef=%d, recall@10=%.3f", len(index), index.search,
                index.ef, index.recall_at_k or float("nan"))
    return index


class IdRows:
    """Item id -> embeddings row. Integer ids: a sorted copy of the ids and their rows, 16
    bytes per item (a dict of Python ints costs about 100, the largest per-item cost left in
    a replica that serves from partition actors); other ids: a dict."""

    def __init__(self, ids: np.ndarray) -> None:
        self._dict: dict[Any, int] | None = None
        if np.issubdtype(ids.dtype, np.integer):
            self._order = np.argsort(ids, kind="stable").astype(np.int64)
            self._sorted = ids[self._order]
        else:
            self._dict = {v: i for i, v in enumerate(ids.tolist())}

    def __len__(self) -> int:
        return len(self._dict) if self._dict is not None else len(self._order)

    def add(self, ids: np.ndarray) -> None:
        """Append new, distinct ``ids`` (of the ids' dtype) as the next rows: inserted into
        the sorted copy (one pass over it), not a re-sort of every id."""
        first = len(self)
        if self._dict is not None:
            self._dict.update({v: first + i for i, v in enumerate(ids.tolist())})
            return
        order = np.argsort(ids, kind="stable")
        at = self._sorted.searchsorted(ids[order])
        self._sorted = np.insert(self._sorted, at, ids[order])
        self._order = np.insert(self._order, at, first + order.astype(np.int64))

    def __contains__(self, item: Any) -> bool:
        try:
            self.rows([item])
        except KeyError:
            return False
        return True

    def rows(self, items: Sequence[Any]) -> np.ndarray:
        """int64 rows of ``items``; ``KeyError(item)`` for the first unknown one."""
        if self._dict is not None:
            return np.array([self._dict[i] for i in items], dtype=np.int64)
        items = list(items)
        keys = np.empty(len(items), dtype=np.int64)
        for j, item in enumerate(items):  # exactly the ids a dict of ints would find
            if isinstance(item, (bool, np.bool_)) or not isinstance(item, (int, np.integer)):
                if not (isinstance(item, (float, np.floating)) and float(item).is_integer()):
                    raise KeyError(item)
            try:
                keys[j] = item
            except (OverflowError, ValueError, TypeError):
                raise KeyError(item) from None
        n = len(self._sorted)
        if len(keys) == 1:  # one /related item: scalar steps, a few microseconds
            at = int(self._sorted.searchsorted(keys[0]))
            if at == n or self._sorted[at] != keys[0]:
                raise KeyError(items[0])
            return self._order[at:at + 1]
        at = np.minimum(self._sorted.searchsorted(keys), max(n - 1, 0))
        found = self._sorted[at] == keys if n else np.zeros(len(keys), bool)
        if not found.all():
            raise KeyError(items[int(np.flatnonzero(~found)[0])])
        return self._order[at]


class _ActorRows:
    """``Recommender.embeddings`` when partition actors hold the rows: indexing (an int or an
    int array, as on the matrix) fetches them from the actors."""

    def __init__(self, index: Any) -> None:
        self.index = index

    def __getitem__(self, rows: Any) -> np.ndarray:
        return self.index.embedding_rows(rows)

    def __len__(self) -> int:
        return int(self.index.embeddings_count)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.index.dim


def _partition_actors(path: str, ef: int | None, run_dir: str) -> Any:
    """The partitioned index at ``path`` served by :class:`PartitionActors`, which also hold
    ``run_dir``'s embeddings rows."""
    from pinsage_ray.index import PartitionActors
    from pinsage_ray.index._hnsw_io import PARTITIONED_KIND
    from pinsage_ray.index.partitioned import saved_kind

    kind = saved_kind(path)  # None (damaged): PartitionActors.load names the problem
    if kind not in (None, PARTITIONED_KIND):
        raise ValueError(f"partition_actors=True: {path} holds one index, not a partitioned "
                         "one; build it with `pinsage-ray index RUN --partitions P`, or load "
                         "without partition_actors")
    return PartitionActors.load(path, ef=ef, embeddings=run_dir)


class Recommender:
    """Related items from a run directory that has ``embeddings/`` and ``index/``.

    Use :meth:`load`; results are lists of ``(original item id, cosine score)``.
    """

    def __init__(self, run_dir: str, index: Any, ids: np.ndarray, embeddings: np.ndarray) -> None:
        self.run_dir = run_dir
        self.index = index
        self.ids = ids
        self.embeddings = embeddings
        self._position = IdRows(ids)
        self._unsaved = 0  # items added since load (or the last save), the last rows

    @classmethod
    def load(cls, run_dir: str | os.PathLike, *, ef: int | None = None,
             partition_actors: bool = False) -> Recommender:
        """Load embeddings and the index (build it first with ``pinsage-ray index``).

        ``partition_actors``: serve a partitioned index (``pinsage-ray index --partitions``)
        from one Ray actor per partition (:class:`~pinsage_ray.index.PartitionActors`),
        each holding its partition's index and embeddings rows, instead of loading them
        into this process, which then holds the item ids only; the index is read-only.

        Raises:
            FileNotFoundError: no index or no embeddings yet.
            IndexIntegrityError: an index file is missing, truncated or corrupted (checksums
                and structure are checked before hnswlib reads it), or the index was built
                from other embeddings than ``run_dir/embeddings``.
            EmbeddingsError: an embeddings part is truncated or corrupted.
        """
        from pinsage_ray.index import IndexIntegrityError, load_index
        from pinsage_ray.inference.embeddings_io import load_embeddings

        from pinsage_ray import _io

        from pinsage_ray.update.versions import current_root

        run_dir = current_root(run_dir)  # after `pinsage-ray update`: its current version
        path = run_path(run_dir, "index")
        fs, inner = _io.resolve(path)
        if not _io.exists(fs, inner):
            raise FileNotFoundError(f"{path}: no index; run `pinsage-ray index {run_dir}` first")
        fix = f"rebuild it with `pinsage-ray index {run_dir}`"
        try:  # checksums and structure are verified before hnswlib reads the file
            index = (_partition_actors(path, ef, run_path(run_dir)) if partition_actors
                     else load_index(path, ef=ef))
        except IndexIntegrityError as err:
            raise IndexIntegrityError(f"{err}; {fix}") from None
        if partition_actors:  # the actors hold the embeddings rows, checked id for id
            ids = np.delete(index.ids, index.deleted)
            return cls(run_path(run_dir), index, ids, _ActorRows(index))
        ids, emb = load_embeddings(run_dir)
        ids = ids.to_numpy(zero_copy_only=False)
        live = np.delete(index.ids, index.deleted)  # an update's removed items: deleted
        if len(live) != len(ids) or live.tolist() != ids.tolist():
            raise IndexIntegrityError(f"{path}: built from other embeddings ({len(index)} items, "
                                      f"embeddings have {len(ids)}); {fix}")
        return cls(run_path(run_dir), index, ids, emb)

    def close(self) -> None:
        """End the partition actors, when the index is served by them (no-op otherwise)."""
        close = getattr(self.index, "close", None)
        if close is not None:
            close()

    def _rows(self, items: Sequence[Any], argument: str) -> np.ndarray:
        try:
            return self._position.rows(items)
        except KeyError as err:
            raise KeyError(f"{argument}: item id {err.args[0]!r} is not in this run's "
                           "embeddings (add new items with Recommender.add_items)") from None

    def vector(self, item: Any) -> np.ndarray:
        """The embedding of one item."""
        return self.embeddings[self._rows([item], "item")[0]]

    def similar_items(self, item: Any, k: int = 10,
                      exclude: Sequence[Any] = ()) -> list[tuple[Any, float]]:
        """The ``k`` items most similar to ``item`` (itself and ``exclude`` left out)."""
        return self.similar_items_batch([item], k, [exclude])[0]

    def similar_items_batch(self, items: Sequence[Any], k: int = 10,
                            exclude: Sequence[Sequence[Any]] | None = None
                            ) -> list[list[tuple[Any, float]]]:
        """:meth:`similar_items` for many items in one index query."""
        rows = self._rows(items, "items")
        excl = [[item, *(exclude[i] if exclude else ())] for i, item in enumerate(items)]
        return self._query(self.embeddings[rows], k, excl)

    def similar_to_vector(self, vector: np.ndarray, k: int = 10,
                          exclude: Sequence[Any] = ()) -> list[tuple[Any, float]]:
        """Nearest items to an arbitrary embedding-space vector."""
        return self._query(np.asarray(vector, np.float32)[None, :], k, [list(exclude)])[0]

    def group_vector(self, items: Sequence[Any], *, timestamps: Sequence[float] | None = None,
                     half_life: float | None = None) -> np.ndarray:
        """Pooled, L2-normalised embedding of a group's items (recency-weighted if asked).

        With ``timestamps`` and ``half_life`` an item's weight is ``0.5 ** (age / half_life)``
        where age is measured from the group's latest timestamp.
        """
        if len(items) == 0:
            raise ValueError("items is empty; a group needs at least one item to pool")
        vecs = self.embeddings[self._rows(items, "items")]
        weights = np.ones(len(items))
        if half_life is not None:
            if timestamps is None or len(timestamps) != len(items):
                raise ValueError("half_life needs one timestamp per item (timestamps=...)")
            ts = np.asarray(timestamps, dtype=np.float64)
            weights = 0.5 ** ((ts.max() - ts) / float(half_life))
        v = (weights[:, None] * vecs).sum(axis=0)
        return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)

    def recommend_for_group(self, items: Sequence[Any], k: int = 10, *,
                            timestamps: Sequence[float] | None = None,
                            half_life: float | None = None,
                            exclude_seen: bool = True) -> list[tuple[Any, float]]:
        """Items to recommend to a group (board, user, session) given its items."""
        v = self.group_vector(items, timestamps=timestamps, half_life=half_life)
        return self.similar_to_vector(v, k, exclude=list(items) if exclude_seen else ())

    def add_items(self, ids: Sequence[Any], features: np.ndarray,
                  groups: Sequence[Sequence[Any]] | None = None, *,
                  seed: int = 0) -> np.ndarray:
        """Embed new items (cold start) and add them to the index; returns their embeddings.

        Args:
            ids: original ids of the new items (not already in this run).
            features: (M, F) their features, the training features' columns.
            groups: per item, the original ids of the groups it belongs to; an empty list
                (or ``groups=None`` for all) for an item without engagement yet: it is
                embedded from its features alone, as a feature-only item of the graph is.
            seed: walk seed of the new items' neighbourhoods.
        """
        from pinsage_ray.inference.coldstart import embed_new_items

        ids = list(ids)
        if len(ids) != len(features):
            raise ValueError(f"ids has {len(ids)} entries for {len(features)} feature rows; "
                             "give one id per new item")
        known = [i for i in ids if i in self._position]
        if known or len(set(ids)) != len(ids):
            bad = known[0] if known else next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"ids: item {bad!r} is already in this run or repeated; new items "
                             "need new, distinct ids")
        if groups is None:
            groups = [[] for _ in ids]
        emb = embed_new_items(self.run_dir, features, groups, seed=seed)
        self.index.add_items(emb, np.asarray(ids, dtype=self.ids.dtype))
        new = np.asarray(ids, dtype=self.ids.dtype)
        self.ids = np.concatenate([self.ids, new])
        self.embeddings = np.concatenate([self.embeddings, emb])
        self._position.add(new)
        self._unsaved += len(ids)
        return emb

    def save_added_items(self) -> dict[str, Any]:
        """Write the items added since :meth:`load` (or the last save) into the run.

        Their embeddings become the run's next embeddings part (listed in
        ``embeddings/_manifest.json`` with its checksum), then the index directory is
        replaced; each step is atomic and a crash between them is repaired by
        ``pinsage-ray index RUN_DIR`` (:mod:`pinsage_ray.inference.added_items`). A later
        :meth:`load` finds the items. One writer per run at a time.

        Returns:
            ``{"saved": items written, "items": items in the run, "part": the new part}``
            (``part`` None when there was nothing to save).
        """
        from pinsage_ray.inference.added_items import append_embeddings

        n = self._unsaved
        if n == 0:
            return {"saved": 0, "items": len(self.ids), "part": None}
        out = append_embeddings(self.run_dir, self.ids[-n:], self.embeddings[-n:])
        self.index.save(run_path(self.run_dir, "index"))
        self._unsaved = 0
        return {"saved": n, "items": int(out["count"]), "part": out["part"]}

    def _query(self, vectors: np.ndarray, k: int,
               exclude: list[list[Any]]) -> list[list[tuple[Any, float]]]:
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k={k!r}; expected an integer >= 1")
        ids, scores = self.index.query(vectors, k, exclude=exclude)
        return [[(_py(i), float(s)) for i, s in zip(row_i, row_s)]
                for row_i, row_s in zip(ids, scores)]


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
