"""Per-item quantities of a batch producer without per-item arrays of its own.

A producer used to hold the item degrees (8 bytes per item), their ``log1p`` (4) and the
negative sampler's CDF (8): 40 GB per producer for the paper's 2B items, in every producer.
Here they come from the graph's item CSR, which :class:`~pinsage_ray.graph.GraphStore` opens
memory-mapped (file pages, shared by every producer on a node and paged in as touched):

* :class:`ItemDegrees` reads ``degree[nodes]`` from ``item_indptr`` per request;
* :class:`NegativeSampler` draws the shared easy negatives (paper section 3.3) from an exact
  CDF up to ``cdf_max_items`` items (the draws of earlier versions, so trained models stay
  reproducible); past it without one: ``uniform`` is item ``floor(u * N)``; ``degree``
  (probability proportional to ``degree ** 0.75``) samples by rejection from the edge list:
  an edge chosen uniformly names an item with probability proportional to its degree ``d``,
  kept with probability ``d ** -0.25``, which leaves exactly ``d ** 0.75``. The acceptance
  rate is ``E[d ** -0.25]`` over edges (estimated once from 4,096 evenly spaced edges); each
  round draws what that rate needs for the rest.
"""

from __future__ import annotations

import logging

import numpy as np

from pinsage_ray.graph.store import GraphStore

logger = logging.getLogger(__name__)

#: Negatives from an exact CDF (8 bytes per item) up to this many items.
NEGATIVE_CDF_MAX_ITEMS = 10_000_000
KINDS = ("uniform", "degree")


class ItemDegrees:
    """``degrees[nodes]`` of items from the item CSR's ``indptr``, computed per request.

    ``len()`` is the item count; indexing with an int array returns int64 degrees.
    """

    def __init__(self, indptr: np.ndarray) -> None:
        self.indptr = indptr

    @classmethod
    def of(cls, store: GraphStore) -> ItemDegrees:
        return cls(store.array("item_indptr"))

    def __len__(self) -> int:
        return len(self.indptr) - 1

    def __getitem__(self, nodes: np.ndarray) -> np.ndarray:
        nodes = np.asarray(nodes, dtype=np.int64)
        return np.asarray(self.indptr[nodes + 1] - self.indptr[nodes], dtype=np.int64)

    def log1p(self, nodes: np.ndarray) -> np.ndarray:
        """float32 ``log1p(degree)``: the encoder's degree input."""
        return np.log1p(self[nodes].astype(np.float32))


class NegativeSampler:
    """Shared negatives: ``uniform`` or proportional to ``degree ** 0.75``.

    Args:
        kind: ``'uniform'`` or ``'degree'``.
        degrees: the items' degrees (:class:`ItemDegrees` or an int array).
        edge_items: for ``degree`` past ``cdf_max_items``: the item of every edge (the group
            CSR's ``indices``, memory-mapped).
        cdf_max_items: the exact CDF up to this many items, rejection past it.
    """

    def __init__(self, kind: str, degrees: ItemDegrees | np.ndarray,
                 edge_items: np.ndarray | None = None,
                 cdf_max_items: int = NEGATIVE_CDF_MAX_ITEMS) -> None:
        if kind not in KINDS:
            raise ValueError(f"negative_sampling={kind!r}; expected one of {KINDS}")
        self.kind, self.num_items = kind, len(degrees)
        self.cdf: np.ndarray | None = None
        self.edge_items, self.degrees = edge_items, degrees
        if self.num_items <= cdf_max_items:
            self.method = "cdf"
            p = (np.asarray(degrees[np.arange(self.num_items)], dtype=np.float64) ** 0.75
                 if kind == "degree" else np.ones(self.num_items))
            self.cdf = np.cumsum(p / p.sum())
        elif kind == "uniform":
            self.method = "index"
        else:
            if edge_items is None or not len(edge_items):
                raise ValueError("degree negatives past cdf_max_items need edge_items (the "
                                 "group CSR's indices) with at least one edge")
            self.method = "rejection"
            probe = np.asarray(edge_items[np.linspace(0, len(edge_items) - 1, 4096)
                                          .astype(np.int64)], dtype=np.int64)
            self._accept = float(np.mean(self.degrees[probe].astype(np.float64) ** -0.25))
        logger.debug("negative sampler: %s (%s) over %d items", kind, self.method,
                     self.num_items)

    @classmethod
    def for_graph(cls, kind: str, store: GraphStore, degrees: ItemDegrees,
                  cdf_max_items: int | None = None) -> NegativeSampler:
        """The sampler a producer uses (``cdf_max_items`` None: :data:`NEGATIVE_CDF_MAX_ITEMS`
        as it is at the call)."""
        if cdf_max_items is None:
            cdf_max_items = NEGATIVE_CDF_MAX_ITEMS
        edge_items = (store.array("group_indices")
                      if kind == "degree" and store.num_items > cdf_max_items else None)
        return cls(kind, degrees, edge_items, cdf_max_items)

    def sample(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """``m`` item ids (int64), i.i.d. from the sampler's distribution."""
        n = self.num_items
        if self.method == "index":
            return np.minimum((rng.random(m) * n).astype(np.int64), n - 1)
        if self.method == "cdf":
            idx = np.searchsorted(self.cdf, rng.random(m), side="right")
            return np.minimum(idx, n - 1).astype(np.int64)
        out: list[np.ndarray] = []
        need = m
        while need > 0:
            draw = max(64, int(1.2 * need / max(self._accept, 1e-3)))
            e = rng.integers(0, len(self.edge_items), draw)
            items = np.asarray(self.edge_items[e], dtype=np.int64)
            keep = rng.random(draw) < self.degrees[items].astype(np.float64) ** -0.25
            got = items[keep][:need]
            out.append(got)
            need -= len(got)
        return np.concatenate(out)
