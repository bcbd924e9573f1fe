"""Settings and input checks of the HNSW index: :class:`HNSWConfig` and the validation of the
vectors and ids handed to :class:`~pinsage_ray.index.hnsw.HNSWIndex`.

Kept apart from the index itself so that ``hnsw.py`` is about building and searching; every
check here raises ``ValueError`` naming the argument, the value and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pinsage_ray.index.exact import SPACES
from pinsage_ray.index.tuning import SEARCH_MODES

EF_LADDER = (10, 20, 40, 80, 160, 320, 640)

__all__ = ["EF_LADDER", "HNSWConfig", "as_matrix", "check_int", "normalize_ids"]


def check_int(name: str, value: Any, minimum: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"HNSWConfig.{name} must be an integer >= {minimum}, got {value!r}; {fix}")


@dataclass
class HNSWConfig:
    """Build and search settings for :class:`HNSWIndex`.

    Attributes:
        space: ``'cosine'``, ``'ip'`` (inner product) or ``'l2'`` (squared euclidean).
        M: graph out-degree (hnswlib ``M``); 12-48 is typical, higher = better recall, more RAM.
        ef_construction: candidate-list size while building; higher = better graph, slower build.
        ef: search candidate-list size. ``None`` tunes it at build time: the smallest value of
            :data:`EF_LADDER` whose held-out recall@``k_for_recall`` reaches ``target_recall``.
        target_recall: recall the tuner aims for, in (0, 1].
        recall_sample: number of vectors held out of the graph while ``ef`` is tuned and used
            as recall queries, then inserted (at most N // 2; 0 skips measuring, only allowed
            with an explicit ``ef``).
        k_for_recall: the k of the measured recall@k.
        seed: seeds hnswlib's level generator and the recall sample.
        num_threads: threads for building and querying (-1 = all cores). 1 gives a
            reproducible graph.
        search: ``'auto'`` times HNSW (at the tuned ef) against exact search on the held-out
            queries and keeps the faster, or exact search when no ef reaches
            ``target_recall``; ``'hnsw'`` or ``'exact'`` forces one. Exact search keeps a copy
            of the vectors in memory.
    """

    space: str = "cosine"
    M: int = 16
    ef_construction: int = 200
    ef: int | None = None
    target_recall: float = 0.95
    recall_sample: int = 1000
    k_for_recall: int = 10
    seed: int = 0
    num_threads: int = 1
    search: str = "auto"

    def __post_init__(self) -> None:
        if self.space not in SPACES:
            raise ValueError(f"HNSWConfig.space must be one of {SPACES}, got {self.space!r}; "
                             "use 'cosine' for PinSage embeddings")
        check_int("M", self.M, 2, "use 16 (the hnswlib default) or 32 for higher recall")
        check_int("ef_construction", self.ef_construction, 1, "use 200 (default) or at least M")
        if self.ef is not None:
            check_int("ef", self.ef, 1, "pass None to auto-tune, or e.g. 64")
        if isinstance(self.target_recall, bool) or not isinstance(self.target_recall, (int, float)) \
                or not 0.0 < self.target_recall <= 1.0:
            raise ValueError(f"HNSWConfig.target_recall must be a number in (0, 1], got "
                             f"{self.target_recall!r}; e.g. 0.95")
        check_int("recall_sample", self.recall_sample, 0, "e.g. 1000 (0 skips recall measurement)")
        if self.recall_sample == 0 and self.ef is None:
            raise ValueError("HNSWConfig.recall_sample=0 leaves nothing to tune ef=None with; "
                             "set recall_sample >= 1 or give an explicit ef")
        check_int("k_for_recall", self.k_for_recall, 1, "e.g. 10")
        check_int("seed", self.seed, 0, "use a non-negative seed such as 0")
        if self.num_threads != -1:
            check_int("num_threads", self.num_threads, 1, "use a positive count, or -1 for all cores")
        if self.search not in SEARCH_MODES:
            raise ValueError(f"HNSWConfig.search must be one of {SEARCH_MODES}, got {self.search!r}; "
                             "use 'auto' to keep the faster, 'hnsw' or 'exact' to force one")


def as_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D (rows, dim) array, got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} has dim {arr.shape[1]} but the index has dim {dim}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf; clean the embeddings before indexing")
    return arr


def normalize_ids(ids: Any, n: int) -> np.ndarray:
    """Caller ids -> 1-D int64 array or object array of str, checked unique, length ``n``."""
    arr = np.asarray(ids)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"ids must be a 1-D array with one id per vector ({n}), got shape {arr.shape}")
    if arr.dtype.kind in "iu":
        if arr.dtype == np.uint64 and n and arr.max() > np.iinfo(np.int64).max:
            raise ValueError("ids do not fit in int64; pass them as strings instead")
        out = arr.astype(np.int64)
    elif arr.dtype.kind in "USO":
        values = [v.decode() if isinstance(v, bytes) else v for v in arr.tolist()]
        if all(isinstance(v, str) for v in values):
            out = np.array(values, dtype=object)
        elif all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            out = np.array(values, dtype=np.int64)
        else:
            bad = next(v for v in values if not isinstance(v, str))
            raise TypeError(f"ids must be all int or all str; found {type(bad).__name__} {bad!r}")
    else:
        raise TypeError(f"ids must be integers or strings, got dtype {arr.dtype}")
    if len(set(out.tolist())) != n:
        uniq, counts = np.unique(out.astype(str) if out.dtype == object else out, return_counts=True)
        raise ValueError(f"ids must be unique; duplicated: {uniq[counts > 1][:5].tolist()}")
    return out


def exclusion_lists(exclude: Any, q: int, by: str, count: int) -> list[Any]:
    """One exclusion per query, checked: a list of caller ids (``by='id'``) or an int64 array
    of positions in ``[0, count)`` (``by='position'``)."""
    if len(exclude) != q:
        raise ValueError(f"exclude must hold one collection per query ({q}), got {len(exclude)}")
    out: list[Any] = []
    for items in exclude:
        items = [] if items is None else list(np.asarray(list(items)).tolist())
        if by == "position":
            pos = np.asarray(items, dtype=np.int64)
            if pos.size and (pos.min() < 0 or pos.max() >= count):
                raise ValueError(f"exclude positions must be in [0, {count}), got "
                                 f"{pos.min()}..{pos.max()}")
            out.append(pos)
        else:
            out.append(items)
    return out


def query_matrix(vectors: Any, k: Any, exclude_by: str, dim: int) -> tuple[np.ndarray, bool]:
    """Checked query arguments of an index: ``((Q, dim) float32 queries, whether the input
    was one 1-D vector)``."""
    single = np.ndim(vectors) == 1
    q = as_matrix(np.atleast_2d(np.asarray(vectors, dtype=np.float32)), "vectors", dim)
    if exclude_by not in ("id", "position"):
        raise ValueError(f"exclude_by must be 'id' or 'position', got {exclude_by!r}")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return q, single
