"""The in-process walker: the whole graph in one :class:`GraphShard`, no Ray.

It is the reference the sharded service must match exactly (same walks for the same seed),
the fast path for graphs that fit one machine, and the baseline of ``bench_walks.py``.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from pinsage_ray.sampling.api import Reducer, WalkService, assemble, chunks
from pinsage_ray.sampling.shard import GraphShard, Walkers, WalkSpec

logger = logging.getLogger(__name__)


class LocalWalker(WalkService):
    """Random walks over a graph directory in this process.

    Args:
        graph_dir: graph directory from :func:`pinsage_ray.prepare`.
        max_walkers: walkers advanced together per chunk (bounds memory: about
            ``max_walkers * (3 + walk_length) * 8`` bytes).
    """

    def __init__(self, graph_dir: str | os.PathLike, *, max_walkers: int = 2_000_000) -> None:
        self.shard = GraphShard(graph_dir)
        self.num_items = self.shard.num_items
        self.max_walkers = int(max_walkers)

    def advance(self, w: Walkers, spec: WalkSpec) -> Walkers:
        """Run every step of ``spec`` for walkers starting at their seeds."""
        for step in range(spec.walk_length):
            self.shard.item_hop(w, spec, step)
            self.shard.group_hop(w, spec, step)
        return w

    def _walk(self, seeds: np.ndarray, spec: WalkSpec, reducer: Reducer,
              avoid: dict | None = None) -> dict[str, np.ndarray]:
        per_chunk = max(1, self.max_walkers // spec.num_walks)
        parts = []
        for sl in chunks(len(seeds), per_chunk):
            positions = np.arange(sl.start, sl.stop, dtype=np.int64)
            w = self.advance(Walkers.start(positions, seeds[sl], spec), spec)
            parts.append(reducer(w, spec, avoid))
        return assemble(parts, len(seeds), spec)
