"""Held-out ``ef`` tuning and the HNSW-or-exact search choice made by :meth:`HNSWIndex.build`.

PinSage answers related-item and group queries by nearest-neighbour lookup (Ying et al., KDD
2018, Section 3.5). Two things decide how well and how fast that lookup works, and both are
measured here rather than assumed:

* **Recall on queries that are not in the index.** A query that is itself an indexed vector
  is easy for HNSW: the search lands on that node, whose graph links already are its nearest
  neighbours, so a small ``ef`` looks sufficient. Real queries (pooled group vectors,
  cold-start items) have no such node and need a larger ``ef`` for the same recall. The build
  therefore holds a seeded sample of the vectors out of the graph, tunes ``ef`` with them as
  queries against the graph of the others (:func:`held_out_split`, :func:`tune_ef`), and only
  then inserts them.
* **Whether HNSW is worth it at all.** For catalogues of tens of thousands of items a batched
  matmul (:func:`~pinsage_ray.index.exact.exact_topk`) answers a batch of queries faster than
  HNSW at the target recall, and exactly. :func:`choose_search` times both on the held-out
  queries and picks the faster one, or exact search when no ``ef`` reaches the target.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from pinsage_ray.index.exact import exact_topk

logger = logging.getLogger(__name__)

SEARCH_MODES = ("auto", "hnsw", "exact")
TIMING_QUERIES = 1000  # at most this many held-out queries per timed batch
TIMING_REPEATS = 3  # best of this many runs per method

__all__ = ["SEARCH_MODES", "SearchChoice", "TuneResult", "choose_search", "held_out_split",
           "tune_ef"]

KnnFn = Callable[[np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]


def held_out_split(n: int, sample: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of positions ``0..n-1`` into (held-out queries, the rest), both sorted.

    At most ``n // 2`` positions are held out so that the graph the queries search is at
    least as large as the sample; ``n == 1`` holds out nothing.
    """
    size = min(int(sample), n // 2)
    held = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False)).astype(np.int64)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), held, assume_unique=True)
    return held, rest


@dataclass
class TuneResult:
    """What :func:`tune_ef` measured.

    Attributes:
        ef: the chosen ef (the first rung reaching the target, else the last rung).
        recall: held-out recall@k at ``ef``.
        curve: recall@k per ef tried, in ladder order.
        reached: whether ``recall >= target``.
        k: the k recall was measured at (``k_for_recall`` capped by the graph size).
    """

    ef: int
    recall: float
    curve: dict[int, float] = field(default_factory=dict)
    reached: bool = False
    k: int = 10


def tune_ef(knn: KnnFn, queries: np.ndarray, base: np.ndarray, base_pos: np.ndarray, k: int,
            space: str, ladder: Sequence[int], target: float) -> TuneResult:
    """Walk ``ladder`` until held-out recall@k reaches ``target``.

    Args:
        knn: ``knn(queries, k, ef) -> (positions (Q, k), scores (Q, k))`` over the graph that
            holds exactly the ``base`` vectors (scores higher = better).
        queries: ``(Q, D)`` held-out vectors, not in that graph.
        base: ``(B, D)`` the vectors in the graph; ``base_pos[i]`` is row i's position label.
        k: neighbours per query, ``1 <= k <= B``.
        space: the index space, for the exact truth.
        ladder: ef values to try, ascending.
        target: recall to reach.

    A returned item is a hit if it is in the exact top-k or ties the exact k-th score
    (within float tolerance), so duplicate embeddings do not depress recall.
    """
    truth_i, truth_s = exact_topk(queries, base, k, space)
    truth, kth = base_pos[truth_i], truth_s[:, -1:]
    curve: dict[int, float] = {}
    for ef in ladder:
        labels, scores = knn(queries, k, ef)
        hit = (labels[:, :, None] == truth[:, None, :]).any(-1)
        hit |= scores >= kth - 1e-5 * np.maximum(1.0, np.abs(kth))
        curve[int(ef)] = float(hit.mean())
        logger.debug("HNSW tune: ef=%d held-out recall@%d=%.4f", ef, k, curve[int(ef)])
        if curve[int(ef)] >= target:
            return TuneResult(int(ef), curve[int(ef)], curve, True, k)
    last = int(ladder[-1])
    return TuneResult(last, curve[last], curve, False, k)


@dataclass
class SearchChoice:
    """The search :meth:`HNSWIndex.query` will use and why.

    Attributes:
        search: ``'hnsw'`` or ``'exact'``.
        reason: one line for the log and the manifest.
        hnsw_qps: queries/s of HNSW at the chosen ef on the timed batch (None: not timed).
        exact_qps: queries/s of exact search on the same batch (None: not timed).
    """

    search: str
    reason: str
    hnsw_qps: float | None = None
    exact_qps: float | None = None


def _best_seconds(run: Callable[[], object], repeats: int, enough: float = float("inf")) -> float:
    """Fastest of ``repeats`` runs; stops early once a run takes longer than ``enough``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        if best > enough:
            break
    return max(best, 1e-9)


def choose_search(requested: str, queries: np.ndarray, run_hnsw: Callable[[np.ndarray], object],
                  run_exact: Callable[[np.ndarray], object], hnsw_reaches_target: bool) -> SearchChoice:
    """Resolve ``HNSWConfig.search`` to ``'hnsw'`` or ``'exact'``.

    ``'hnsw'`` and ``'exact'`` are returned as given, untimed. ``'auto'`` times
    ``run_hnsw(batch)`` and ``run_exact(batch)`` on up to :data:`TIMING_QUERIES` of
    ``queries`` (best of :data:`TIMING_REPEATS`, after a small warm-up) and picks exact
    search when it is at least as fast, or when ``hnsw_reaches_target`` is False. With no
    queries (nothing was held out) ``'auto'`` keeps HNSW.

    Both are timed as :meth:`HNSWIndex.query` runs them: HNSW on the index's ``num_threads``,
    exact search on torch's thread pool (``torch.get_num_threads()``).
    """
    choice = _choose(requested, queries, run_hnsw, run_exact, hnsw_reaches_target)
    qps = "" if choice.hnsw_qps is None else (f" (HNSW {choice.hnsw_qps:.0f} QPS, exact "
                                              f"{choice.exact_qps:.0f} QPS)")
    logger.info("HNSW index search: %s - %s%s", choice.search, choice.reason, qps)
    return choice


def _choose(requested: str, queries: np.ndarray, run_hnsw: Callable[[np.ndarray], object],
            run_exact: Callable[[np.ndarray], object], hnsw_reaches_target: bool) -> SearchChoice:
    if requested != "auto":
        return SearchChoice(requested, f"forced by search={requested!r}")
    if len(queries) == 0:
        return SearchChoice("hnsw", "nothing held out to time (recall_sample=0 or 1 item)")
    batch = queries[:TIMING_QUERIES]
    run_hnsw(batch[:8]), run_exact(batch[:8])  # warm-up: lazy allocations and thread pools
    h = _best_seconds(lambda: run_hnsw(batch), TIMING_REPEATS)
    e = _best_seconds(lambda: run_exact(batch), TIMING_REPEATS, enough=3 * h)
    hnsw_qps, exact_qps = len(batch) / h, len(batch) / e
    if not hnsw_reaches_target:
        reason = "HNSW reaches target_recall at no ef of the ladder"
        return SearchChoice("exact", reason, hnsw_qps, exact_qps)
    if exact_qps >= hnsw_qps:
        return SearchChoice("exact", "faster than HNSW", hnsw_qps, exact_qps)
    return SearchChoice("hnsw", "faster than exact search", hnsw_qps, exact_qps)
