"""One shard of the graph and the vectorised walk step (plain Python, no Ray).

A walk step (paper section 3.1, after Pixie) goes item -> group -> item, so one step is two
hops: the *item hop* runs on the shard owning the walker's item and picks one of its groups;
the *group hop* runs on the shard owning that group, picks one of its items, records it in the
walker's path and, with probability ``restart_prob``, sends the walker back to its seed for the
next step. Each hop advances a whole batch of walkers with a handful of numpy operations
(gathers from the CSR arrays), never a Python loop per walker.

Every random draw comes from :mod:`pinsage_ray.sampling.rng` keyed by (seed, walker id, step,
hop), so a walker's trajectory is the same whichever shard advances it: 1, 2 or 4 shards and
the in-process walker return identical walks.

An item without edges (a feature-only, cold-start item from ``prepare``) has nowhere to go:
a walker started there becomes *dead* (``node = -1``) at its first item hop, records -1 at
every step and is routed to its seed's shard, so the item's walks, importance neighbourhood
and co-occurrence pairs are empty. Walkers never reach such an item from a group.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from pinsage_ray.graph.partition import PartitionBook
from pinsage_ray.graph.store import CSRSlice, GraphFormatError, GraphStore
from pinsage_ray.sampling import rng

logger = logging.getLogger(__name__)

ITEM_HOP, GROUP_HOP = 0, 1  # rng stream ids


@dataclass(frozen=True)
class WalkSpec:
    """Parameters of one walk request.

    Attributes:
        num_walks: walks started from each seed item.
        walk_length: steps per walk; each step is item -> group -> item and records one item.
        restart_prob: probability of jumping back to the seed after each step.
        seed: random seed; with the same seed a request returns identical results.
        weighted: pick edges proportionally to their weight (else uniformly).
    """

    num_walks: int
    walk_length: int
    restart_prob: float = 0.0
    seed: int = 0
    weighted: bool = True

    def __post_init__(self) -> None:
        for name in ("num_walks", "walk_length"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name}={v!r}; expected an integer >= 1")
        if not 0.0 <= float(self.restart_prob) < 1.0:
            raise ValueError(f"restart_prob={self.restart_prob!r}; expected a float in [0, 1)")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool):
            raise ValueError(f"seed={self.seed!r}; expected an integer")


@dataclass
class Walkers:
    """A batch of walkers in flight (struct of arrays; all int64).

    Attributes:
        walker: (n,) global walker id = query position * num_walks + walk index.
        seed: (n,) seed item of each walker (global item id).
        node: (n,) current node: a global item id before an item hop, a group id after it;
            -1 for a dead walker (its seed item has no edges).
        path: (n, walk_length) items visited at each step; -1 for steps not yet taken.
    """

    walker: np.ndarray
    seed: np.ndarray
    node: np.ndarray
    path: np.ndarray

    def __len__(self) -> int:
        return len(self.walker)

    def take(self, idx: np.ndarray) -> Walkers:
        return Walkers(self.walker[idx], self.seed[idx], self.node[idx], self.path[idx])

    @staticmethod
    def start(positions: np.ndarray, seeds: np.ndarray, spec: WalkSpec) -> Walkers:
        """Walkers for queries at ``positions`` (request order) seeded at ``seeds``."""
        w = spec.num_walks
        walker = (np.asarray(positions, np.int64)[:, None] * w + np.arange(w)).ravel()
        seed = np.repeat(np.asarray(seeds, np.int64), w)
        path = np.full((len(walker), spec.walk_length), -1, dtype=np.int64)
        return Walkers(walker, seed, seed.copy(), path)

    @staticmethod
    def concat(parts: list[Walkers | None]) -> Walkers | None:
        parts = [p for p in parts if p is not None and len(p)]
        if not parts:
            return None
        if len(parts) == 1:
            p = parts[0]
            # Batches arriving through the object store are read-only views.
            return p if p.path.flags.writeable else Walkers(p.walker, p.seed, p.node,
                                                            p.path.copy())
        return Walkers(*(np.concatenate([getattr(p, f) for p in parts])
                         for f in ("walker", "seed", "node", "path")))

    def split(self, dest: np.ndarray, num_shards: int) -> list[Walkers | None]:
        """Partition by destination shard (a list of length ``num_shards``)."""
        if num_shards == 1:
            return [self]
        parts: list[Walkers | None] = []
        for s in range(num_shards):  # S passes beat one stable argsort for the few shards used
            idx = np.flatnonzero(dest == s)
            parts.append(self.take(idx) if len(idx) else None)
        return parts


class _Rows:
    """CSR rows of one side with what a hop needs precomputed.

    Weighted choice uses integer prefix sums ``cum`` of weights quantised per row to 24 bits
    (``max(1, round(w / row_max * 2**24))``): integer sums are exact whatever row a shard
    starts at, so the same walker picks the same edge under any sharding (float prefix sums
    would round differently at different offsets). A guide table (Chen and Asau's indexed
    search) makes a draw O(1) expected: ``guide[s + k]`` is the edge holding the point
    ``k / deg`` of row ``[s, e)``'s weight, and a draw at ``u`` starts from
    ``guide[s + floor(u * deg)]`` and steps forward (about one edge on average).
    """

    _SCALE = float(1 << 24)

    def __init__(self, csr: CSRSlice, side: str, weighted: bool,
                 empty_groups: bool = False) -> None:
        deg = np.diff(csr.indptr)
        # Items may have no edges (feature-only items); a group always has one, unless an
        # update removed all its items (``empty_groups``: no item links to it any more).
        if side != "item" and csr.num_rows and deg.min() == 0 and not empty_groups:
            raise GraphFormatError(f"{side} {csr.lo + int(np.argmin(deg))} has no edges; "
                                   "graph directories from prepare() never do: re-run prepare")
        self.lo = csr.lo
        self.indptr = csr.indptr
        self.indices = csr.indices
        self.cum: np.ndarray | None = None
        self.guide: np.ndarray | None = None
        if weighted and csr.num_rows:
            nonempty = deg > 0
            row_max = np.zeros(csr.num_rows, dtype=np.float64)
            if nonempty.any():  # reduceat over non-empty rows only (empty rows hold no edges)
                row_max[nonempty] = np.maximum.reduceat(csr.weights,
                                                        csr.indptr[:-1][nonempty])
            rel = csr.weights / np.repeat(row_max, deg)
            q = np.maximum(1, np.rint(rel * self._SCALE)).astype(np.int64)
            self.cum = np.concatenate([[0], np.cumsum(q)])
            self.guide = self._guide_table(deg)

    def _guide_table(self, deg: np.ndarray) -> np.ndarray:
        s = np.repeat(self.indptr[:-1], deg)
        a, b, d = self.cum[s], self.cum[s + np.repeat(deg, deg)], np.repeat(deg, deg)
        k = np.arange(len(s)) - s
        # A lower bound of the row-relative point k * (b - a) / d (float error < 1 unit).
        t = a + np.maximum(np.floor(k * ((b - a) / d)).astype(np.int64) - 1, 0)
        return np.searchsorted(self.cum, t, side="right") - 1  # sorted queries: one pass

    def choose(self, nodes: np.ndarray, u: np.ndarray, weighted: bool) -> np.ndarray:
        """One neighbour per node (global ids in, global ids of the other side out).

        A node without edges, or a negative node (a dead walker), gives -1.
        """
        local = np.maximum(nodes - self.lo, 0)  # a negative node is masked out below
        s = self.indptr[local]
        e = self.indptr[local + 1]
        empty = (e == s) | (nodes < 0)
        if empty.any():
            out = np.full(len(nodes), -1, dtype=np.int64)
            live = np.flatnonzero(~empty)
            if len(live):
                out[live] = self._choose(s[live], e[live], u[live], weighted)
            return out
        return self._choose(s, e, u, weighted)

    def _choose(self, s: np.ndarray, e: np.ndarray, u: np.ndarray,
                weighted: bool) -> np.ndarray:
        """One edge per row ``[s, e)`` (every row non-empty)."""
        if self.cum is None or not weighted:
            return self.indices[s + (u * (e - s)).astype(np.int64)]
        a = self.cum[s]
        target = a + (u * (self.cum[e] - a)).astype(np.int64)
        idx = self.guide[s + (u * (e - s)).astype(np.int64)]
        # Step forward to the edge with cum[j] <= target < cum[j + 1].
        todo = np.flatnonzero(self.cum[idx + 1] <= target)
        while len(todo):
            idx[todo] += 1
            todo = todo[self.cum[idx[todo] + 1] <= target[todo]]
        return self.indices[idx]


class GraphShard:
    """The CSR rows of one shard's items and groups, and the two walk hops over them.

    Plain class: the Ray actor in :mod:`pinsage_ray.sampling.service` wraps it, and the
    in-process walker uses one shard that owns the whole graph. The constructor loads its rows
    from the graph directory, so a restarted actor reloads itself.

    Args:
        graph_dir: graph directory (local path or URI).
        book: partition book; ``None`` means a single shard owning everything.
        shard_id: which shard of ``book`` this is.
    """

    def __init__(self, graph_dir: str | os.PathLike, book: PartitionBook | None = None,
                 shard_id: int = 0) -> None:
        store = GraphStore(graph_dir)
        if book is None:
            book = PartitionBook(np.array([0, store.num_items]), np.array([0, store.num_groups]))
        if not 0 <= shard_id < book.num_shards:
            raise ValueError(f"shard_id={shard_id}; expected 0 <= shard_id < {book.num_shards}")
        self.book = book
        self.shard_id = shard_id
        self.num_items = store.num_items
        weighted = store.weighted
        self.items = _Rows(store.rows("item", *book.range("item", shard_id)), "item", weighted)
        self.groups = _Rows(store.rows("group", *book.range("group", shard_id)), "group",
                            weighted, empty_groups=store.has("item_removed.npy"))
        logger.debug("shard %d/%d loaded items %s groups %s", shard_id, book.num_shards,
                     book.range("item", shard_id), book.range("group", shard_id))

    def item_hop(self, w: Walkers, spec: WalkSpec, step: int) -> Walkers:
        """Walkers on this shard's items move to one of the item's groups.

        A walker on an item without edges (or already dead) gets ``node = -1``.
        """
        u = rng.uniforms(spec.seed, w.walker, step, ITEM_HOP)
        w.node = self.items.choose(w.node, u, spec.weighted)
        return w

    def group_hop(self, w: Walkers, spec: WalkSpec, step: int) -> Walkers:
        """Walkers on this shard's groups move to an item, record it, maybe restart.

        A dead walker (``node == -1``) records -1 and stays dead (its seed has no edges, so
        a restart could not revive it).
        """
        u, v = rng.two_uniforms(spec.seed, w.walker, step, GROUP_HOP)
        item = self.groups.choose(w.node, u, spec.weighted)
        w.path[:, step] = item
        if spec.restart_prob > 0.0:
            w.node = np.where((v < spec.restart_prob) & (item >= 0), w.seed, item)
        else:
            w.node = item
        return w


def route(book: PartitionBook, side: str, w: Walkers) -> np.ndarray:
    """Destination shard of each walker: the owner of its ``node`` on ``side``; a dead walker
    (``node < 0``) goes to its seed's owner, where its query is reduced."""
    dest = book.shard_of(side, w.node)
    dead = w.node < 0
    if dead.any():
        dest[dead] = book.shard_of("item", w.seed[dead])
    return dest
