"""The walk-service interface shared by the in-process walker and the sharded Ray service.

Subclasses implement one primitive, :meth:`WalkService._walk`, which runs walks for a batch
of seed items and returns, per query, the finished walks grouped at the query (in process, or
on the shard that owns the seed) and reduced there by a :class:`Reducer`. Everything a user
calls (random walks, importance neighbourhoods, co-occurrence pairs, PPR rank-band samples) is
written once here in terms of that primitive, so the two back ends cannot drift apart.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass

import numpy as np

from pinsage_ray.sampling import aggregate
from pinsage_ray.sampling.aggregate import Neighborhood
from pinsage_ray.sampling.shard import Walkers, WalkSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reducer:
    """What to compute from each query's finished walks (picklable; runs next to the data).

    Attributes:
        kind: 'paths' (the walks themselves), 'top_t' or 'rank_band'.
        top_t: T for 'top_t'.
        band: absolute [lo, hi) for 'rank_band'.
        n: samples per query for 'rank_band'.
        num_items: item count (for 'rank_band').
        seed: random seed for 'rank_band'.
    """

    kind: str
    top_t: int = 0
    band: tuple[int, int] = (0, 0)
    n: int = 0
    num_items: int = 0
    seed: int = 0

    def __call__(self, w: Walkers, spec: WalkSpec, avoid: dict | None = None) -> dict:
        """Reduce walkers of whole queries. Returns ``{"positions": (q,), ...}`` arrays."""
        order = np.argsort(w.walker)  # walker ids are unique: any sort gives one order
        walker = w.walker[order]
        positions = walker[:: spec.num_walks] // spec.num_walks
        if self.kind == "paths":
            return {"positions": positions, "paths": w.path[order]}
        visits = w.path[order].reshape(len(positions), -1)
        seeds = w.seed[order][:: spec.num_walks]
        if self.kind == "top_t":
            nb = aggregate.top_t(visits, seeds, self.top_t)
            return {"positions": positions, "ids": nb.ids, "weights": nb.weights,
                    "counts": nb.counts}
        if self.kind == "rank_band":
            av = None if avoid is None else avoid_rows(avoid, positions)
            out = aggregate.rank_band_sample(visits, seeds, positions, self.band, self.n,
                                             self.num_items, self.seed, av)
            return {"positions": positions, "samples": out}
        raise ValueError(f"unknown reducer kind {self.kind!r}")


def avoid_rows(avoid: dict, positions: np.ndarray) -> np.ndarray:
    """Rows of the request-wide ``avoid`` matrix for the given request positions."""
    return avoid["items"][positions]


def _as_items(items: object, num_items: int, name: str = "items") -> np.ndarray:
    arr = np.asarray(items)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected a 1-D array of contiguous int item ids; got dtype "
                         f"{arr.dtype}, shape {arr.shape}. Map original ids with "
                         "GraphStore.item_index().")
    if len(arr) and (arr.min() < 0 or arr.max() >= num_items):
        bad = arr[(arr < 0) | (arr >= num_items)][0]
        raise ValueError(f"{name}: item id {bad} outside [0, {num_items})")
    return arr.astype(np.int64)


class WalkService(abc.ABC):
    """Random-walk sampling over an item-group graph (contiguous item ids in and out)."""

    num_items: int

    @abc.abstractmethod
    def _walk(self, seeds: np.ndarray, spec: WalkSpec, reducer: Reducer,
              avoid: dict | None = None) -> dict[str, np.ndarray]:
        """Run ``spec`` walks from ``seeds``; return reducer outputs in request order."""

    def random_walks(self, items: object, *, num_walks: int = 1, walk_length: int = 10,
                     restart_prob: float = 0.0, seed: int = 0,
                     weighted: bool = True) -> np.ndarray:
        """Walk item -> group -> item from each seed.

        Returns:
            int64 (len(items) * num_walks, walk_length): the item recorded at each step; rows
            ``i * num_walks .. (i+1) * num_walks - 1`` belong to ``items[i]``. Walks from an
            item without edges are all -1.
        """
        seeds = _as_items(items, self.num_items)
        spec = WalkSpec(num_walks, walk_length, restart_prob, seed, weighted)
        if len(seeds) == 0:
            return np.zeros((0, walk_length), dtype=np.int64)
        return self._walk(seeds, spec, Reducer("paths"))["paths"]

    def importance_neighbors(self, items: object, *, num_walks: int = 50, walk_length: int = 2,
                             restart_prob: float = 0.5, top_t: int = 10, seed: int = 0,
                             weighted: bool = True) -> Neighborhood:
        """PinSage's importance-based neighbourhood (section 3.1) of each item.

        Visit counts of the items reached by ``num_walks`` walks (with restarts) from each
        seed; the seed is excluded; the top ``top_t`` by count are kept (ties: smaller id);
        weights are the counts normalised to sum 1. An item without edges gets an empty
        neighbourhood (all -1, weights 0).
        """
        if not isinstance(top_t, (int, np.integer)) or top_t < 1:
            raise ValueError(f"top_t={top_t!r}; expected an integer >= 1")
        seeds = _as_items(items, self.num_items)
        spec = WalkSpec(num_walks, walk_length, restart_prob, seed, weighted)
        if len(seeds) == 0:
            z = np.zeros((0, top_t))
            return Neighborhood(z.astype(np.int64), z.astype(np.float32), z.astype(np.int64))
        out = self._walk(seeds, spec, Reducer("top_t", top_t=int(top_t)))
        return Neighborhood(out["ids"], out["weights"], out["counts"])

    def cooccurrence_pairs(self, items: object, *, num_walks: int = 1, walk_length: int = 1,
                           seed: int = 0, weighted: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Positive training pairs (query, item): the end of short walks without restart.

        With ``walk_length=1`` the item shares a group with the query (a co-engagement).
        Pairs whose walk returned to the query are dropped, and so are the walks of an item
        without edges (a feature-only item: its walks record -1).

        Returns:
            ``(queries, positives)``, int64 arrays of equal length (<= len(items) * num_walks).
        """
        seeds = _as_items(items, self.num_items)
        paths = self.random_walks(seeds, num_walks=num_walks, walk_length=walk_length,
                                  seed=seed, weighted=weighted)
        q = np.repeat(seeds, num_walks)
        last = paths[:, -1] if len(paths) else np.zeros(0, np.int64)
        keep = (last != q) & (last >= 0)
        return q[keep], last[keep]

    def ppr_rank_sample(self, items: object, lo: float, hi: float, n: int, *,
                        num_walks: int = 100, walk_length: int = 4, restart_prob: float = 0.3,
                        seed: int = 0, avoid: np.ndarray | None = None,
                        weighted: bool = True) -> np.ndarray:
        """Hard-negative candidates: ``n`` items per query from PPR ranks ``[lo, hi)``.

        PPR is estimated by the visit counts of walks with restart. ``lo``/``hi`` are absolute
        ranks (int) or fractions of the item count (float in [0, 1]); small graphs have fewer
        items than the paper's 2000-5000 band. Unvisited items share the lowest ranks.

        Args:
            avoid: optional int64 (len(items), k) items never returned per query (the
                positive, say); -1 entries are ignored.

        Returns:
            int64 (len(items), n); -1 where no valid item exists.
        """
        seeds = _as_items(items, self.num_items)
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n={n!r}; expected an integer >= 1")
        band = aggregate.resolve_band(lo, hi, self.num_items)
        spec = WalkSpec(num_walks, walk_length, restart_prob, seed, weighted)
        if len(seeds) == 0:
            return np.zeros((0, n), dtype=np.int64)
        av = None
        if avoid is not None:
            a = np.asarray(avoid, dtype=np.int64)
            a = a.reshape(len(seeds), -1) if a.ndim == 1 else a
            if a.shape[0] != len(seeds):
                raise ValueError(f"avoid has {a.shape[0]} rows for {len(seeds)} items; "
                                 "give one row per query")
            av = {"items": a}
        reducer = Reducer("rank_band", band=band, n=int(n), num_items=self.num_items, seed=seed)
        return self._walk(seeds, spec, reducer, av)["samples"]


def assemble(parts: list[dict], num_queries: int, spec: WalkSpec) -> dict[str, np.ndarray]:
    """Put reducer outputs from several places back into request order."""
    parts = [p for p in parts if p is not None and len(p["positions"])]
    out: dict[str, np.ndarray] = {}
    for key in parts[0]:
        if key == "positions":
            continue
        first = parts[0][key]
        rows_per = first.shape[0] // max(len(parts[0]["positions"]), 1)
        full = np.empty((num_queries * rows_per, *first.shape[1:]), dtype=first.dtype)
        for p in parts:
            rows = (p["positions"][:, None] * rows_per + np.arange(rows_per)).ravel()
            full[rows] = p[key]
        out[key] = full
    return out


def chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
