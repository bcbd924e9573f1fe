"""Which items an update touches: bounded search for walks, reverse neighbours for layers.

**Neighbourhoods.** A walk step (paper section 3.1) reads the item row of the walker's item,
then the group row of the group it picked, and every random draw is keyed by (seed, walker
id, step, hop) (:mod:`pinsage_ray.sampling.rng`); a restart returns to the seed. So at step
``t`` (0-based) a walk from item ``s`` reads the row of an item at bipartite distance at most
``2t`` from ``s`` and of a group at distance at most ``2t + 1``. Its trajectory, and so the
seed's importance neighbourhood, can differ from the old one only if it reads a changed row:
a changed node at distance at most ``2 * walk_length - 1``. Until the first changed row a
walk reads only unchanged rows, which are identical in the old and new graph, so the
distance is measured on the new graph (an edge change changes the rows at both ends, so each
end is a source itself). :func:`affected_items` runs that multi-source bounded BFS. A removed
item loses its edges, so every walk that recorded it read its groups' changed rows: it drops
out of every neighbourhood by recomputing exactly these items.

**Layers.** Layer ``k + 1`` of item ``i`` reads ``h_k(i)`` and ``t_k(j)`` of its neighbours
``j`` (paper section 3.4). With ``C_0`` the items whose input layer changed (features,
degree, trained-id status, new items) and ``N`` those whose neighbourhood changed,
``C_{k+1} = C_k | N | {i : a neighbour of i is in C_k}``; :func:`layer_change_sets` computes
it from a reverse-neighbour index (item -> items that list it).
"""

from __future__ import annotations

import logging

import numpy as np

from pinsage_ray.graph.store import GraphStore
from pinsage_ray.sampling.aggregate import Neighborhood
from pinsage_ray.sampling.api import Reducer, chunks
from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.sampling.shard import Walkers, WalkSpec

logger = logging.getLogger(__name__)


def affected_items(store: GraphStore, changed_items: np.ndarray, changed_groups: np.ndarray,
                   walk_length: int) -> np.ndarray:
    """bool (num_items,): items within ``2 * walk_length - 1`` bipartite hops of a change.

    Args:
        store: the NEW graph.
        changed_items, changed_groups: bool masks of rows that differ (new rows included).
        walk_length: steps per walk (each step item -> group -> item).
    """
    i_ptr, i_idx = np.asarray(store.array("item_indptr")), np.asarray(store.array("item_indices"))
    g_ptr, g_idx = (np.asarray(store.array("group_indptr")),
                    np.asarray(store.array("group_indices")))
    seen_i, seen_g = changed_items.copy(), changed_groups.copy()
    front_i, front_g = np.flatnonzero(seen_i), np.flatnonzero(seen_g)
    for _ in range(2 * walk_length - 1):
        # one hop: items -> their groups, groups -> their items (both frontiers at once)
        next_g = _neighbours(i_ptr, i_idx, front_i)
        next_i = _neighbours(g_ptr, g_idx, front_g)
        front_g = next_g[~seen_g[next_g]]
        front_i = next_i[~seen_i[next_i]]
        seen_g[front_g] = True
        seen_i[front_i] = True
        if not len(front_i) and not len(front_g):
            break
    return seen_i


def _neighbours(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Unique column ids of CSR ``rows``."""
    if not len(rows):
        return np.zeros(0, dtype=np.int64)
    starts, ends = indptr[rows], indptr[rows + 1]
    deg = ends - starts
    pos = np.repeat(starts - np.cumsum(deg) + deg, deg) + np.arange(int(deg.sum()))
    return np.unique(indices[pos])


def neighbourhoods_of(graph_dir: str, items: np.ndarray, *, num_walks: int, walk_length: int,
                      restart_prob: float, top_t: int, seed: int, num_shards: int = 0,
                      max_walkers: int = 2_000_000) -> Neighborhood:
    """Importance neighbourhoods of ``items`` exactly as a full pass over ``arange(N)`` gives.

    A full pass (``compute_neighbors``) walks every item at request position = its id, and the
    walker id (which keys every draw) is position * num_walks + walk. So the walks here start
    at position = item id, through the library's own walk code, never a copy of it: in
    process (:class:`LocalWalker` and the 'top_t' :class:`Reducer`), or with ``num_shards``
    > 0 on the Ray walk shards (:class:`~pinsage_ray.sampling.service.ShardedGraph`, one
    request chunk at a time with its retry on a lost shard), which give identical walks.
    """
    spec = WalkSpec(num_walks, walk_length, restart_prob, seed, True)
    reducer = Reducer("top_t", top_t=int(top_t))
    items = np.asarray(items, dtype=np.int64)
    ids = np.full((len(items), top_t), -1, dtype=np.int64)
    weights = np.zeros((len(items), top_t), dtype=np.float32)
    counts = np.zeros((len(items), top_t), dtype=np.int64)
    row_of = np.full(int(items.max()) + 1 if len(items) else 0, -1, dtype=np.int64)
    row_of[items] = np.arange(len(items))

    def keep(out: dict | None) -> None:
        if out is not None and len(out["positions"]):
            rows = row_of[out["positions"]]
            ids[rows], weights[rows], counts[rows] = out["ids"], out["weights"], out["counts"]

    per_chunk = max(1, max_walkers // num_walks)
    if num_shards == 0:
        walker = LocalWalker(graph_dir, max_walkers=max_walkers)
        for sl in chunks(len(items), per_chunk):
            part = items[sl]
            keep(reducer(walker.advance(Walkers.start(part, part, spec), spec), spec))
    else:
        from pinsage_ray.sampling import open_walker

        with open_walker(graph_dir, num_shards=num_shards) as service:
            for sl in chunks(len(items), per_chunk):
                part = items[sl]
                for out in service._run_chunk(part, part, spec, reducer, None):
                    keep(out)
    return Neighborhood(ids, weights, counts)


def reverse_index(nb_ids: np.ndarray, num_items: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR (indptr, rows): ``rows[indptr[j]:indptr[j+1]]`` are the items listing ``j``."""
    rows = np.repeat(np.arange(len(nb_ids), dtype=np.int64), nb_ids.shape[1])
    cols = nb_ids.ravel()
    keep = cols >= 0
    rows, cols = rows[keep], cols[keep]
    order = np.argsort(cols, kind="stable")
    indptr = np.zeros(num_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(cols, minlength=num_items), out=indptr[1:])
    return indptr, rows[order]


def layer_change_sets(c0: np.ndarray, nb_changed: np.ndarray, nb_ids: np.ndarray,
                      num_layers: int) -> list[np.ndarray]:
    """bool masks ``[C_0, ..., C_K]``: items whose layer-k output must be recomputed.

    Args:
        c0: bool (N,) items whose input layer (h_0) changed.
        nb_changed: bool (N,) items whose neighbourhood (ids or weights) changed.
        nb_ids: int64 (N, T) the NEW neighbourhood table (-1 = padding).
        num_layers: K convolutions.
    """
    indptr, rows = reverse_index(nb_ids, len(c0))
    sets = [c0.copy()]
    for _ in range(num_layers):
        prev = sets[-1]
        nxt = prev | nb_changed
        src = np.flatnonzero(prev)
        if len(src):
            nxt[_neighbours(indptr, rows, src)] = True
        sets.append(nxt)
    return sets
