"""Approximate nearest-neighbour retrieval over PinSage item embeddings.

PinSage (Ying et al., KDD 2018) turns the trained item embeddings into recommendations by
nearest-neighbour lookup in embedding space (Section 3.5, "Efficient nearest-neighbor
lookups"; evaluated in Section 4). The paper used LSH; this module uses HNSW (hnswlib), which
gives better recall per query cost, and adds what a production index needs:

* :func:`~pinsage_ray.index.exact.exact_topk` - brute-force top-k, the recall baseline.
* :class:`HNSWConfig` - validated build/search settings.
* :class:`HNSWIndex` - build with ``ef`` tuned on held-out queries and a timed choice
  between HNSW and exact search (:mod:`.tuning`), batched queries that can exclude items
  (e.g. the query item or already-seen pins), appending cold-start items, and atomic,
  checksummed save/load (see :mod:`._hnsw_io`).

Scores are always "higher = more similar": cosine similarity, inner product, or negative
squared L2 distance.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import hnswlib
import numpy as np
from tqdm import tqdm  # not tqdm.auto: it warns at import in a notebook without ipywidgets

from pinsage_ray.index import _hnsw_io as io
from pinsage_ray.index._hnsw_io import IndexIntegrityError
from pinsage_ray.index.config import (EF_LADDER, HNSWConfig, as_matrix, check_int, exclusion_lists,
                                      normalize_ids, query_matrix)
from pinsage_ray.index.exact import SPACES, exact_topk
from pinsage_ray.index.tuning import SEARCH_MODES, choose_search, held_out_split, tune_ef

logger = logging.getLogger(__name__)

__all__ = ["EF_LADDER", "HNSWConfig", "HNSWIndex", "IndexIntegrityError", "SEARCH_MODES", "SPACES",
           "exact_topk"]


class HNSWIndex:
    """HNSW index over item embeddings keyed by the caller's ids.

    Positions ``0..N-1`` (the order of ``ids``) are hnswlib's labels; ``ids[position]`` is
    the caller's id (int64 or str). Create with :meth:`build` or :meth:`load`. Queries use
    HNSW or exact search (:attr:`search`); the graph is kept either way. Not safe to query
    concurrently with :meth:`add_items` or an ``ef``/``search`` change.
    """

    def __init__(self, index: hnswlib.Index, ids: np.ndarray, manifest: dict[str, Any],
                 num_threads: int = 1) -> None:
        self._index, self._ids, self._manifest = index, ids, manifest
        self._num_threads = num_threads
        self._pos: dict[Any, int] = {v: i for i, v in enumerate(ids.tolist())}
        self._vectors: np.ndarray | None = None  # (N, D) copy for exact search, else None
        index.set_ef(int(manifest["ef"]))
        if "search" not in manifest:  # written before exact search existed: HNSW
            manifest.update(search="hnsw", hnsw_recall_at_k=manifest.get("recall_at_k"))
        self.search = manifest["search"]

    # ------------------------------------------------------------------ properties
    def __len__(self) -> int:
        return len(self._ids)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self._manifest["dim"])

    @property
    def space(self) -> str:
        """``'cosine'``, ``'ip'`` or ``'l2'``."""
        return str(self._manifest["space"])

    @property
    def ids(self) -> np.ndarray:
        """``(N,)`` caller ids in position order (int64, or object array of str); read-only."""
        view = self._ids.view()
        view.flags.writeable = False
        return view

    @property
    def ef(self) -> int:
        """Search ef currently applied to hnswlib (as reported by hnswlib); unused by exact search."""
        return int(self._index.ef)

    @ef.setter
    def ef(self, value: int) -> None:
        check_int("ef", value, 1, "e.g. 64")
        self._manifest["ef"] = int(value)
        self._index.set_ef(int(value))

    @property
    def search(self) -> str:
        """``'hnsw'`` or ``'exact'``: how :meth:`query` searches (saved with the index)."""
        return str(self._manifest["search"])

    @search.setter
    def search(self, value: str) -> None:
        if value not in ("hnsw", "exact"):
            raise ValueError(f"search must be 'hnsw' or 'exact', got {value!r}")
        # exact search scans a plain matrix: hnswlib's own copy of the vectors (for 'cosine'
        # normalised, which leaves cosine scores unchanged)
        self._vectors = self._stored_vectors(0) if value == "exact" else None
        self._manifest.update(search=value, recall_at_k=1.0 if value == "exact"
                              else self._manifest.get("hnsw_recall_at_k"))

    def _stored_vectors(self, start: int) -> np.ndarray:
        labels = np.arange(start, len(self), dtype=np.int64)
        if not len(labels):
            return np.empty((0, self.dim), dtype=np.float32)
        live = ~np.isin(labels, self._manifest.get("deleted", []))  # hnswlib hides deleted rows
        out = np.zeros((len(labels), self.dim), dtype=np.float32)
        if live.any():
            out[live] = self._index.get_items(labels[live], return_type="numpy")
        return out

    @property
    def recall_at_k(self) -> float | None:
        """Recall@k_for_recall of :meth:`query` on held-out queries, measured at build time.

        1.0 for exact search; None if not measured (``recall_sample=0`` or a single item).
        """
        return self._manifest.get("recall_at_k")

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of the build/format metadata written to ``manifest.json``."""
        return dict(self._manifest)

    def position_of(self, item_id: Any) -> int:
        """Position (hnswlib label) of a caller id; raises ``KeyError`` if absent."""
        key = int(item_id) if isinstance(item_id, np.integer) else item_id
        try:
            return self._pos[key]
        except (KeyError, TypeError):
            raise KeyError(f"id {item_id!r} is not in the index ({len(self)} items)") from None

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, vectors: np.ndarray, ids: Any, config: HNSWConfig | None = None,
              show_progress: bool = False) -> "HNSWIndex":
        """Build the graph, tune ``ef`` on held-out queries and choose HNSW or exact search.

        With ``config.recall_sample > 0`` a seeded sample of the vectors is inserted last:
        ``ef`` is tuned with the sample as queries against the graph of all other vectors
        (recall@k against :func:`exact_topk` over those vectors), which is the recall a query
        that is not in the index gets; then the sample is inserted and, for
        ``search='auto'``, both searches are timed on it (:mod:`.tuning`).

        Args:
            vectors: ``(N, D)`` float32 embeddings (other float dtypes are converted).
            ids: ``(N,)`` unique caller ids, integers or strings.
            config: settings; defaults to ``HNSWConfig()``.
            show_progress: show insertion progress in ~5% steps.

        Returns:
            The built index holding all N vectors; ``manifest`` holds ``ef``, ``search``,
            ``recall_at_k`` (held-out; 1.0 for exact search), ``hnsw_recall_at_k``,
            ``recall_curve``, ``hnsw_qps``/``exact_qps`` and ``build_seconds``.
        """
        config = config or HNSWConfig()
        x = as_matrix(vectors, "vectors")
        n, d = x.shape
        ids_arr = normalize_ids(ids, n)
        index = hnswlib.Index(space=config.space, dim=d)
        index.init_index(max_elements=n, M=config.M, ef_construction=config.ef_construction,
                         random_seed=config.seed)
        index.set_num_threads(config.num_threads)
        held, rest = held_out_split(n, config.recall_sample, config.seed)
        manifest: dict[str, Any] = {
            "format_version": io.FORMAT_VERSION, "dim": d, "count": n, "space": config.space,
            "M": int(config.M), "ef_construction": int(config.ef_construction), "seed": int(config.seed),
            "k_for_recall": int(config.k_for_recall), "target_recall": float(config.target_recall),
            "ef": int(config.ef or EF_LADDER[-1]), "recall_at_k": None, "recall_curve": {},
            "recall_measured_at_count": None, "recall_queries": None, "hnsw_recall_at_k": None,
            "search_requested": config.search, "hnsw_qps": None, "exact_qps": None,
        }
        self = cls(index, ids_arr, manifest, num_threads=config.num_threads)
        start = time.perf_counter()
        bar = tqdm(total=n, desc="HNSW index", unit="item", disable=not show_progress)
        self._insert(x, rest, bar)
        manifest["build_seconds"] = time.perf_counter() - start
        reached = True
        if len(held):
            reached = self._tune(x, held, rest, config)
        elif config.ef is None:
            logger.info("HNSW tune: %d item(s), nothing to hold out; ef=%d untuned", n, self.ef)
        start = time.perf_counter()
        self._insert(x, held, bar)
        bar.close()
        manifest["build_seconds"] += time.perf_counter() - start
        self._choose_search(x[held], config, reached)
        logger.info("Built HNSW index: %d x %d %s, search=%s, ef=%d, held-out recall@%d=%s, %.2fs", n, d,
                    config.space, self.search, self.ef, config.k_for_recall, self.recall_at_k,
                    manifest["build_seconds"])
        return self

    def _insert(self, x: np.ndarray, positions: np.ndarray, bar: tqdm) -> None:
        step = max(1000, len(x) // 20)  # x[pos] copies: ~5% of x at a time
        for lo in range(0, len(positions), step):
            pos = positions[lo : lo + step]
            self._index.add_items(x[pos], pos, self._num_threads)
            bar.update(len(pos))

    def _tune(self, x: np.ndarray, held: np.ndarray, rest: np.ndarray, config: HNSWConfig) -> bool:
        """Tune (or, for an explicit ef, measure) held-out recall while only ``rest`` is indexed.

        Returns whether HNSW reaches ``target_recall`` (always True for an explicit ef: there
        is no other ef to try).
        """
        start = time.perf_counter()
        k = min(config.k_for_recall, len(rest))
        ladder = [int(config.ef)] if config.ef else sorted({max(e, k) for e in EF_LADDER})

        def knn(q: np.ndarray, kk: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
            self._index.set_ef(ef)
            return self._knn(q, kk)

        res = tune_ef(knn, x[held], x[rest], rest, k, config.space, ladder, config.target_recall)
        self._manifest.update(ef=res.ef, hnsw_recall_at_k=res.recall, recall_at_k=res.recall,
                              recall_measured_at_count=len(rest), recall_queries="held_out",
                              recall_query_count=len(held), tune_seconds=time.perf_counter() - start,
                              recall_curve={str(e): r for e, r in res.curve.items()})
        self._index.set_ef(res.ef)
        return res.reached or config.ef is not None

    def _choose_search(self, queries: np.ndarray, config: HNSWConfig, reached: bool) -> None:
        """Resolve ``config.search`` (timing both on ``queries`` for 'auto') and apply it."""
        k = min(config.k_for_recall, len(self))
        timed = config.search == "auto" and len(queries)
        vectors = self._stored_vectors(0) if timed else None  # what exact search would scan
        choice = choose_search(config.search, queries, lambda q: self._knn(q, k),
                               lambda q: exact_topk(q, vectors, k, self.space), reached)
        self.search = choice.search
        self._manifest.update(search_reason=choice.reason, hnsw_qps=choice.hnsw_qps,
                              exact_qps=choice.exact_qps)
        if not reached and choice.search == "hnsw":
            logger.warning("HNSW tune: no ef reaches held-out recall@%d >= %.3f (best %.4f at ef=%d). "
                           "Raise M/ef_construction for a better graph, or use search='exact'.",
                           config.k_for_recall, config.target_recall, self._manifest["hnsw_recall_at_k"],
                           self.ef)

    # ------------------------------------------------------------------ query
    def _knn(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """hnswlib search -> (positions (Q,k) int64, scores (Q,k) float32, higher = better)."""
        try:
            labels, dist = self._index.knn_query(q, k=k, num_threads=self._num_threads)
        except RuntimeError:  # graph search found < k items: retry once with a wider beam
            ef = self.ef
            self._index.set_ef(max(ef, 4 * k))
            try:
                labels, dist = self._index.knn_query(q, k=k, num_threads=self._num_threads)
            finally:
                self._index.set_ef(ef)
        scores = -dist if self.space == "l2" else 1.0 - dist
        return labels.astype(np.int64), scores.astype(np.float32)

    def _exclude_positions(self, exclude: Sequence[Iterable[Any] | None], by: str, q: int) -> list[np.ndarray]:
        out = []
        for items in exclusion_lists(exclude, q, by, len(self)):
            if by == "id":  # ids not in the index can never be returned: simply ignored
                items = np.asarray([self._pos[i] for i in items if i in self._pos], dtype=np.int64)
            out.append(np.unique(items))
        return out

    def query(self, vectors: np.ndarray, k: int, exclude: Sequence[Iterable[Any] | None] | Iterable[Any] | None = None,
              exclude_by: str = "id") -> tuple[np.ndarray, np.ndarray]:
        """Top-k neighbours: approximate (HNSW) or exact, as :attr:`search` says.

        Args:
            vectors: ``(Q, D)`` or ``(D,)`` float32 queries.
            k: results per query.
            exclude: items never to return. For 2-D input, one collection (set, list, array or
                None) per query; for 1-D input, a single collection. Over-fetches
                ``k + len(exclude)`` so that k results remain.
            exclude_by: ``'id'`` (caller ids; unknown ids are ignored) or ``'position'``.

        Returns:
            ``(ids, scores)``: ``(Q, k)`` ids (index id dtype) and ``(Q, k)`` float32 scores,
            best first (``(k,)`` each for 1-D input). Scores: cosine similarity, inner product or
            negative squared L2 distance.
        """
        q, single = query_matrix(vectors, k, exclude_by, self.dim)
        ex = None
        if exclude is not None:
            ex = self._exclude_positions([exclude] if single else exclude, exclude_by, len(q))
        if self._manifest.get("deleted") and self._vectors is not None:  # hnswlib skips them
            ex = [np.union1d(e, self.deleted) for e in (ex or [np.zeros(0, np.int64)] * len(q))]
        n_ex = [len(e) for e in ex] if ex else [0]
        if k > len(self) - max(n_ex):
            raise ValueError(f"k={k} exceeds the {len(self)} indexed items minus {max(n_ex)} excluded")
        fetch = min(len(self) - (0 if self._vectors is not None else len(self.deleted)),
                    k + max(n_ex))
        if self._vectors is not None:
            labels, scores = exact_topk(q, self._vectors, fetch, self.space)
        else:
            labels, scores = self._knn(q, fetch)
        if ex and max(n_ex):
            mask = np.stack([np.isin(row, e) for row, e in zip(labels, ex)])
            order = np.argsort(mask, axis=1, kind="stable")  # kept (False) first, rank preserved
            labels = np.take_along_axis(labels, order, 1)
            scores = np.take_along_axis(scores, order, 1)
        labels, scores = labels[:, :k], scores[:, :k]
        ids = self._ids[labels]
        return (ids[0], scores[0]) if single else (ids, scores)

    # ------------------------------------------------------------------ update
    def add_items(self, vectors: np.ndarray, ids: Any) -> None:
        """Append items (e.g. cold-start pins); they get positions ``len(self)..``.

        Args:
            vectors: ``(M, D)`` float32 embeddings.
            ids: ``(M,)`` new ids, same kind (int/str) as the index's and not already present.

        Raises:
            ValueError: on a dim mismatch, an id kind mismatch or an id already in the index.
        """
        x = as_matrix(vectors, "vectors", self.dim)
        new = normalize_ids(ids, len(x))
        if (new.dtype == object) != (self._ids.dtype == object):
            raise ValueError(f"index ids are {'str' if self._ids.dtype == object else 'int64'}; "
                             f"new ids must be the same kind, got {new.dtype}")
        dup = [v for v in new.tolist() if v in self._pos]
        if dup:
            raise ValueError(f"{len(dup)} id(s) already in the index, e.g. {dup[:5]}; "
                             "ids must be unique - rebuild to replace an item's vector")
        n = len(self)
        if n + len(x) > self._index.get_max_elements():
            self._index.resize_index(max(n + len(x), int(self._index.get_max_elements() * 1.5)))
        self._index.add_items(x, np.arange(n, n + len(x)), self._num_threads)
        self._ids = np.concatenate([self._ids, new])
        if self._vectors is not None:  # exact search scans these too
            self._vectors = np.concatenate([self._vectors, self._stored_vectors(n)])
        self._pos.update((v, n + i) for i, v in enumerate(new.tolist()))
        self._manifest["count"] = len(self._ids)
        logger.info("HNSW add_items: %d new items, %d total", len(x), len(self))

    def replace_items(self, vectors: np.ndarray, ids: Any) -> None:
        """Give items already in the index new vectors (an incremental update's changed rows).

        hnswlib re-links an existing label in place, so positions and ids stay. Raises
        ``KeyError`` for an id not in the index.
        """
        x = as_matrix(vectors, "vectors", self.dim)
        pos = np.asarray([self.position_of(v) for v in normalize_ids(ids, len(x)).tolist()],
                         dtype=np.int64)
        if len(pos):
            self._index.add_items(x, pos, self._num_threads)
            if self._vectors is not None:
                self._vectors[pos] = self._index.get_items(pos, return_type="numpy")
        logger.info("HNSW replace_items: %d vectors replaced", len(pos))

    def refresh_vectors(self, vectors: np.ndarray, ids: Any) -> None:
        """Overwrite the stored vectors of items already in the index, keeping the graph's links.

        Unlike :meth:`replace_items` nothing is re-linked: each node keeps the neighbours it
        was linked to for its old vector, so this costs a copy of the index's level-0 block
        instead of a search per item. Search stays correct (distances are computed on the new
        vectors) but the graph is only as navigable as the old links are for the new
        vectors: fine when vectors moved a little, wrong when they moved far. **Measure
        recall afterwards** (an update does, and rebuilds when the graph no longer reaches
        its target). Goes through hnswlib's own pickling state (``__getstate__`` /
        ``__setstate__``), whose layout it checks first.
        """
        x = as_matrix(vectors, "vectors", self.dim)
        pos = np.asarray([self.position_of(v) for v in normalize_ids(ids, len(x)).tolist()],
                         dtype=np.int64)
        if not len(pos):
            return
        state = dict(self._index.__getstate__()[0])
        if state.get("ser_version") != 1 or state["dim"] != self.dim:
            raise RuntimeError(f"hnswlib pickling state version {state.get('ser_version')!r} "
                               "is not the one refresh_vectors knows (1); use replace_items")
        if self.space == "cosine":  # hnswlib stores cosine vectors normalised
            norm = np.linalg.norm(x, axis=1, keepdims=True)
            x = x / np.where(norm > 0, norm, 1.0)
        external = np.asarray(state["label_lookup_external"], dtype=np.int64)
        internal = np.full(len(self), -1, dtype=np.int64)
        internal[external] = np.asarray(state["label_lookup_internal"], dtype=np.int64)
        rows = internal[pos]
        level0 = np.asarray(state["data_level0"]).view(np.uint8).reshape(
            -1, state["size_data_per_element"]).copy()
        off = state["offset_data"]
        level0[rows, off:off + 4 * self.dim] = np.ascontiguousarray(
            x, dtype=np.float32).view(np.uint8).reshape(len(rows), -1)
        state["data_level0"] = level0.reshape(-1).view(np.int8)
        index = hnswlib.Index.__new__(hnswlib.Index)  # what unpickling does
        index.__setstate__((state,))
        index.set_ef(self.ef)
        index.set_num_threads(self._num_threads)
        self._index = index
        if self._vectors is not None:
            self._vectors[pos] = index.get_items(pos, return_type="numpy")
        logger.info("HNSW refresh_vectors: %d vectors overwritten, links kept", len(pos))

    def mark_deleted(self, ids: Any) -> None:
        """Never return these items again (hnswlib's delete mark; they keep their position).

        Deleted positions are saved in the manifest and excluded from exact search too.
        """
        pos = [self.position_of(v) for v in np.asarray(ids).tolist()]
        deleted = set(self._manifest.get("deleted", []))
        for p in pos:
            if p not in deleted:
                self._index.mark_deleted(int(p))
                deleted.add(int(p))
        self._manifest["deleted"] = sorted(deleted)
        logger.info("HNSW mark_deleted: %d items, %d deleted in all", len(pos), len(deleted))

    @property
    def deleted(self) -> np.ndarray:
        """Positions marked deleted (int64, sorted)."""
        return np.asarray(self._manifest.get("deleted", []), dtype=np.int64)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Atomically write the index directory (``index.bin``, ids file, ``manifest.json``).

        ``path`` may be a URI (``s3://...``): the files are written to a local temp dir and
        uploaded with ``manifest.json`` last (:func:`._hnsw_io.upload_index_dir`).
        """
        if io.is_uri(path):  # hnswlib writes local files: save here, then upload
            io.upload_index_dir(self.write_files, str(path))
        else:
            io.atomic_write_dir(Path(path), self.write_files)
        logger.info("Saved HNSW index (%d items) to %s", len(self), path)

    def write_files(self, directory: Path) -> None:
        """Write the index's files into an existing empty local ``directory`` (not atomic:
        :meth:`save` calls it on a temp directory)."""
        self._index.save_index(str(directory / io.INDEX_FILE))
        ids_file = io.write_ids(self._ids, directory)
        self._manifest.update(count=len(self), ids_file=ids_file, sha256={
            io.INDEX_FILE: io.sha256_file(directory / io.INDEX_FILE),
            ids_file: io.sha256_file(directory / ids_file)})
        io.write_manifest(directory, self._manifest)

    @classmethod
    def load(cls, path: str | Path, ef: int | None = None, num_threads: int = 1,
             search: str | None = None) -> "HNSWIndex":
        """Load and verify a directory written by :meth:`save`.

        Args:
            path: the index directory, local or a URI (``s3://...``: downloaded to a local
                temp dir, verified and loaded there, then the copy is removed).
            ef: search ef to apply (hnswlib does not persist it); default: the manifest's ef.
            num_threads: query threads (-1 = all cores).
            search: ``'hnsw'`` or ``'exact'`` to override the saved choice; default: the
                manifest's (``'hnsw'`` for indexes saved before exact search existed).

        Raises:
            FileNotFoundError: ``path`` is not a directory.
            IndexIntegrityError: missing/unparseable manifest, checksum mismatch, truncated or
                structurally invalid ``index.bin``, or dim/count/ids inconsistencies. The
                corrupted file is never handed to hnswlib.
        """
        if search not in (None, "hnsw", "exact"):
            raise ValueError(f"search must be 'hnsw', 'exact' or None (the saved choice), got {search!r}")
        if io.is_uri(path):  # hnswlib reads local files: download, load into memory, drop
            with io.downloaded_index_dir(str(path)) as local:
                return cls.load(local, ef=ef, num_threads=num_threads, search=search)
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory} is not a directory; nothing to load")
        manifest = io.read_manifest(directory)
        io.verify_checksums(directory, manifest)
        index_path = directory / io.INDEX_FILE
        io.check_index_file(index_path, manifest["dim"], manifest["count"], manifest["M"])
        ids = io.read_ids(directory / manifest["ids_file"], manifest["count"])
        index = hnswlib.Index(space=manifest["space"], dim=manifest["dim"])
        try:
            index.load_index(str(index_path))
        except RuntimeError as exc:
            raise IndexIntegrityError(f"{index_path}: hnswlib rejected the file ({exc})") from exc
        if index.element_count != manifest["count"] or index.dim != manifest["dim"]:
            raise IndexIntegrityError(f"{index_path}: hnswlib reports {index.element_count} x {index.dim}, "
                                      f"manifest says {manifest['count']} x {manifest['dim']}")
        if ef is not None:
            check_int("ef", ef, 1, "e.g. 64, or None for the manifest's ef")
            manifest["ef"] = int(ef)
        if search is not None:
            manifest.setdefault("hnsw_recall_at_k", manifest.get("recall_at_k"))
            manifest["search"] = search
        index.set_num_threads(num_threads)
        return cls(index, ids, manifest, num_threads=num_threads)
