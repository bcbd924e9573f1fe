"""Turning finished walks into answers: importance neighbourhoods and PPR rank-band samples.

These run where a query's walks gather: in the in-process walker, or on the shard that owns
the query's seed item. Inputs are the visit matrix of each query (all items its walks
recorded), so every function here is plain vectorised numpy and easy to test by hand.

* Importance neighbourhood (paper section 3.1): visit counts of the items reached from the
  seed, the seed itself excluded; the top-T by count (ties: smaller item id first); weights are
  the counts normalised to sum 1 over the kept neighbours. Padded with -1 / 0.
* PPR rank band (paper section 3.3, hard negatives): the visit counts estimate the seed's
  personalised PageRank; items are ranked by count (ties: smaller id first), unvisited items
  share the lowest rank in random order; samples are drawn uniformly from ranks [lo, hi).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pinsage_ray.sampling import rng

PPR_STREAM = 7  # rng stream for rank-band sampling (distinct from the walk hops)


@dataclass
class Neighborhood:
    """Importance-based neighbourhoods of a batch of items.

    Attributes:
        ids: int64 (n, T) neighbour item ids by decreasing visit count; -1 = padding.
        weights: float32 (n, T) normalised visit counts (each row sums to 1, or 0 if empty).
        counts: int64 (n, T) raw visit counts; 0 at padding.
    """

    ids: np.ndarray
    weights: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> Neighborhood:
        return Neighborhood(self.ids[rows], self.weights[rows], self.counts[rows])


@dataclass
class VisitRuns:
    """Distinct visited items per query, sorted by (row, item): the compressed visit counts.

    Attributes:
        row: int64 (R,) query row of each run.
        item: int64 (R,) visited item.
        count: int64 (R,) how many times the row's walks recorded it.
        num_rows: number of query rows.
    """

    row: np.ndarray
    item: np.ndarray
    count: np.ndarray
    num_rows: int


def visit_runs(visits: np.ndarray, exclude: np.ndarray) -> VisitRuns:
    """Count visits per row.

    Args:
        visits: int64 (n, V) items recorded by each query's walks; negative entries ignored.
        exclude: int64 (n,) one item per row not to count (the seed).
    """
    n, v = visits.shape
    s = np.where(visits == exclude[:, None], -1, visits)
    s.sort(axis=1)
    new = np.ones_like(s, dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    starts = np.flatnonzero(new)
    lengths = np.diff(np.append(starts, n * v))
    values = s.ravel()[starts]
    keep = values >= 0
    return VisitRuns(starts[keep] // v, values[keep], lengths[keep], n)


def rank_runs(runs: VisitRuns) -> tuple[np.ndarray, np.ndarray]:
    """Order runs by (row, count desc, item asc); return (order, rank within row)."""
    # Runs are already sorted by (row, item), so a stable sort on one combined key
    # (row, then count descending) keeps smaller items first among ties; about 8x faster than
    # a three-key lexsort on millions of runs.
    cmax = int(runs.count.max()) if len(runs.count) else 0
    order = np.argsort(runs.row * np.int64(cmax + 1) + (cmax - runs.count), kind="stable")
    row_sorted = runs.row[order]
    first = np.searchsorted(row_sorted, np.arange(runs.num_rows))
    rank = np.arange(len(order)) - first[row_sorted]
    return order, rank


def top_t(visits: np.ndarray, seeds: np.ndarray, t: int) -> Neighborhood:
    """Importance neighbourhood of each row from its visit matrix.

    Args:
        visits: int64 (n, V) visited items (negative = none).
        seeds: int64 (n,) the seed items (excluded from their own neighbourhood).
        t: neighbourhood size T.
    """
    runs = visit_runs(visits, seeds)
    n = runs.num_rows
    ids = np.full((n, t), -1, dtype=np.int64)
    counts = np.zeros((n, t), dtype=np.int64)
    order, rank = rank_runs(runs)
    keep = rank < t
    rows, cols = runs.row[order][keep], rank[keep]
    ids[rows, cols] = runs.item[order][keep]
    counts[rows, cols] = runs.count[order][keep]
    total = counts.sum(axis=1, keepdims=True)
    weights = np.divide(counts, total, out=np.zeros((n, t)), where=total > 0).astype(np.float32)
    return Neighborhood(ids, weights, counts)


def resolve_band(lo: float, hi: float, num_items: int) -> tuple[int, int]:
    """Absolute rank band [lo, hi) from absolute ranks or fractions of the item count.

    Floats in (0, 1] (and 0) are fractions of ``num_items - 1`` (the candidates besides the
    query); integers are absolute ranks. The band is clipped to the candidates.
    """
    cand = num_items - 1

    def conv(x: float, name: str) -> int:
        if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name}={x!r}; expected an int rank or a float fraction in [0, 1]")
        if isinstance(x, (float, np.floating)):
            if not 0.0 <= x <= 1.0:
                raise ValueError(f"{name}={x!r}: a float is a fraction of the item count and "
                                 "must lie in [0, 1]; pass an int for an absolute rank")
            return int(round(x * cand))
        if x < 0:
            raise ValueError(f"{name}={x!r}; ranks must be >= 0")
        return min(int(x), cand)

    a, b = conv(lo, "lo"), conv(hi, "hi")
    if a >= b:
        raise ValueError(f"rank band lo={lo!r}, hi={hi!r} is empty for {num_items} items "
                         f"(resolved to [{a}, {b})); make hi larger than lo")
    return a, b


def rank_band_sample(visits: np.ndarray, seeds: np.ndarray, positions: np.ndarray,
                     band: tuple[int, int], n: int, num_items: int, seed: int,
                     avoid: np.ndarray | None = None, max_tries: int = 32) -> np.ndarray:
    """``n`` items per row drawn uniformly from PPR ranks ``[band[0], band[1])``.

    Args:
        visits: int64 (q, V) visits of each query's walks.
        seeds: int64 (q,) query items (never returned).
        positions: int64 (q,) request positions of the rows (key the random draws, so the
            answer does not depend on which shard computes it).
        band: absolute ranks [lo, hi) (see :func:`resolve_band`).
        n: samples per row.
        num_items: item count of the graph.
        seed: random seed.
        avoid: optional int64 (q, k) items never returned per row (e.g. the positive); -1 = none.
        max_tries: redraws for a sample that hits the query, ``avoid`` or (in the unvisited
            tail) a visited item; a sample still bad after that is -1.

    Returns:
        int64 (q, n) sampled items; -1 where no valid item was found.
    """
    runs = visit_runs(visits, seeds)
    q = runs.num_rows
    order, rank = rank_runs(runs)
    per_row = np.bincount(runs.row, minlength=q)
    first = np.concatenate([[0], np.cumsum(per_row)])[:-1]
    ranked = runs.item[order]  # row-major, by decreasing count
    visited_keys = runs.row * np.int64(num_items) + runs.item  # sorted (runs are row, item)
    lo, hi = band
    out = np.full((q, n), -1, dtype=np.int64)
    pending = np.ones((q, n), dtype=bool)
    rows = np.repeat(np.arange(q), n)
    sample_ids = (np.repeat(positions.astype(np.int64), n) * n + np.tile(np.arange(n), q))
    for attempt in range(max_tries):
        idx = np.flatnonzero(pending.ravel())
        if len(idx) == 0:
            break
        r_rows = rows[idx]
        u, v = rng.two_uniforms(seed, sample_ids[idx], attempt, PPR_STREAM)
        r = lo + (u * (hi - lo)).astype(np.int64)
        in_visited = r < per_row[r_rows]
        cand = np.where(in_visited, ranked[np.minimum(first[r_rows] + r, len(ranked) - 1)]
                        if len(ranked) else -1, (v * num_items).astype(np.int64))
        bad = cand == seeds[r_rows]
        tail = ~in_visited
        if tail.any():
            keys = r_rows[tail] * np.int64(num_items) + cand[tail]
            pos = np.searchsorted(visited_keys, keys)
            hit = pos < len(visited_keys)
            hit[hit] = visited_keys[pos[hit]] == keys[hit]
            bad[tail] |= hit
        if avoid is not None:
            bad |= (avoid[r_rows] == cand[:, None]).any(axis=1)
        good = ~bad
        out.ravel()[idx[good]] = cand[good]
        pending.ravel()[idx[good]] = False
    return out
