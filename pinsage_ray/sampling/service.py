"""The sharded walk service: Ray actors that each hold one graph shard and advance walkers.

Walkers move between shards in rounds. A round is one hop for every walker in the request:
each shard advances the walkers sitting on its nodes and splits the result by destination
shard (``num_returns = num_shards``); the driver passes those *object references* straight on
to the destination shards' next call, so walker data flows shard to shard through the object
store and the driver never pulls it. A walk step (item -> group -> item) is two rounds; after
the last one the walkers go to the shard owning their seed, which reduces them (visit counts,
top-T, rank band) there. A request costs ``num_shards * (2 * walk_length + 1)`` remote calls
whatever its batch size, all submitted before the single ``ray.get``.

Shard methods are pure functions of their inputs and of the graph the actor loaded in its
constructor, so a crashed actor restarts (``max_restarts``), reloads its rows, and Ray retries
the interrupted call (``max_task_retries``) with the same answer.

A :class:`ShardedGraph` pickles by its actors' *names* (unique per service) and looks them up
when unpickled, so it can be a constructor argument of a restartable actor (the batch
producers): Ray cannot keep handles or object references in such arguments alive for a
restart and prints an error line on the driver's terminal when it sees one.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import numpy as np
import ray

from pinsage_ray.graph.partition import PartitionBook
from pinsage_ray.graph.store import GraphStore
from pinsage_ray.sampling.api import Reducer, WalkService, assemble, chunks
from pinsage_ray.sampling.shard import GraphShard, Walkers, WalkSpec, route

logger = logging.getLogger(__name__)


class ShardServer:
    """Body of a shard actor (plain class; :class:`ShardedGraph` wraps it with ``ray.remote``)."""

    def __init__(self, graph_dir: str, book: PartitionBook, shard_id: int) -> None:
        self.shard = GraphShard(graph_dir, book, shard_id)
        self.book = book
        self.shard_id = shard_id

    def info(self) -> dict[str, Any]:
        return {"shard_id": self.shard_id, "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id(),
                "item_range": self.book.range("item", self.shard_id),
                "group_range": self.book.range("group", self.shard_id)}

    def _out(self, parts: list) -> Any:
        return parts[0] if len(parts) == 1 else tuple(parts)

    def hop(self, phase: int, spec: WalkSpec, step: int, init: tuple | None,
            *parts: Walkers | None) -> Any:
        """One round: advance walkers on this shard, return one batch per destination shard.

        Args:
            phase: 0 = item hop (route by group), 1 = group hop (route by next item), 2 = the
                last group hop (route by seed owner, for the reduction).
            init: ``(positions, seeds)`` to start new walkers here (first round only).
        """
        w = Walkers.concat(list(parts))
        if init is not None:
            w = Walkers.concat([w, Walkers.start(init[0], init[1], spec)])
        s = self.book.num_shards
        if w is None:
            return self._out([None] * s)
        if phase == 0:
            self.shard.item_hop(w, spec, step)
            dest = route(self.book, "group", w)
        else:
            self.shard.group_hop(w, spec, step)
            dest = (self.book.shard_of("item", w.seed) if phase == 2
                    else route(self.book, "item", w))
        return self._out(w.split(dest, s))

    def reduce(self, reducer: Reducer, spec: WalkSpec, avoid: dict | None,
               *parts: Walkers | None) -> dict | None:
        w = Walkers.concat(list(parts))
        return None if w is None else reducer(w, spec, avoid)


class ShardedGraph(WalkService):
    """Random-walk sampling served by ``num_shards`` Ray actors.

    Args:
        graph_dir: graph directory (local path or URI every node can read).
        num_shards: number of shard actors.
        num_cpus: CPUs each actor reserves. The default 0 keeps long-lived actors from starving
            Train workers and Data tasks on small machines (they still use CPU when busy).
        resources: extra custom resources per actor, e.g. ``{"pinsage_shard": 1}`` to put one
            shard on each node that advertises it (see ``cluster.yaml``).
        max_restarts: actor restarts after a crash (``-1``: unlimited).
        max_walkers: walkers per request chunk (bounds memory per round).
        timeout_s: seconds to wait for one request chunk before raising ``GetTimeoutError``.
    """

    def __init__(self, graph_dir: str | os.PathLike, num_shards: int = 2, *,
                 num_cpus: float = 0, resources: dict[str, float] | None = None,
                 max_restarts: int = 3, max_walkers: int = 2_000_000,
                 timeout_s: float = 600.0) -> None:
        if not ray.is_initialized():
            raise RuntimeError("ShardedGraph needs Ray: call ray.init() (or "
                               "pinsage_ray.init_ray()) first, or use LocalWalker in-process")
        store = GraphStore(graph_dir)
        self.graph_dir = os.fspath(graph_dir)
        self.num_items = store.num_items
        self.book = PartitionBook.balanced(store.array("item_indptr"),
                                           store.array("group_indptr"), num_shards)
        self.max_walkers = int(max_walkers)
        self.timeout_s = timeout_s
        actor_cls = ray.remote(ShardServer)
        options = dict(num_cpus=num_cpus, max_restarts=max_restarts,
                       max_task_retries=max_restarts, resources=resources or {})
        token = uuid.uuid4().hex[:12]
        self.names = [f"pinsage-shard-{token}-{s}" for s in range(self.book.num_shards)]
        self.actors = [actor_cls.options(name=name, **options).remote(self.graph_dir, self.book, s)
                       for s, name in enumerate(self.names)]
        self.shard_info = ray.get([a.info.remote() for a in self.actors], timeout=timeout_s)
        logger.info("started %d walk shards over %s", num_shards, self.graph_dir)

    @property
    def num_shards(self) -> int:
        return self.book.num_shards

    def submit(self, seeds: np.ndarray, positions: np.ndarray, spec: WalkSpec,
               reducer: Reducer, avoid: dict | None = None) -> list[ray.ObjectRef]:
        """Submit every round of one request chunk; return the reduction refs (one per shard)."""
        s = self.num_shards
        owner = self.book.shard_of("item", seeds)
        init = [(positions[owner == k], seeds[owner == k]) for k in range(s)]
        prev: list[list[Any]] = [[None] * s for _ in range(s)]  # prev[src][dst]
        for step in range(spec.walk_length):
            for phase in (0, 2 if step == spec.walk_length - 1 else 1):
                outs = []
                for k, actor in enumerate(self.actors):
                    first = step == 0 and phase == 0
                    ref = actor.hop.options(num_returns=s).remote(
                        phase, spec, step, init[k] if first else None,
                        *[prev[src][k] for src in range(s)])
                    outs.append([ref] if s == 1 else list(ref))
                prev = outs
        avoid_ref = ray.put(avoid) if avoid is not None else None
        return [actor.reduce.remote(reducer, spec, avoid_ref, *[prev[src][k] for src in range(s)])
                for k, actor in enumerate(self.actors)]

    def _walk(self, seeds: np.ndarray, spec: WalkSpec, reducer: Reducer,
              avoid: dict | None = None) -> dict[str, np.ndarray]:
        per_chunk = max(1, self.max_walkers // spec.num_walks)
        parts: list[dict] = []
        for sl in chunks(len(seeds), per_chunk):
            positions = np.arange(sl.start, sl.stop, dtype=np.int64)
            refs = self.submit(seeds[sl], positions, spec, reducer, avoid)
            parts.extend(ray.get(refs, timeout=self.timeout_s))
        return assemble(parts, len(seeds), spec)

    def shutdown(self) -> None:
        """Kill the shard actors (the service cannot be used afterwards)."""
        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors, self.names = [], []

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "actors": None}  # by name: see the module docstring

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.actors = [ray.get_actor(name) for name in self.names] if self.names else []

    def __enter__(self) -> ShardedGraph:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
