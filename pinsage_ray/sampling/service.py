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

Losing a *node* loses more: the shard process and the walker batches in that node's object
store, which the other shards' next rounds take as arguments, so Ray's own retry cannot finish
the request. A request therefore watches its shards while it waits (their state and restart
count in the GCS actor table, every ``POLL_S``): when one restarted or is not alive, or the
request fails with a lost actor or object, the request waits until every shard is alive again
(on a replacement node, if one offers the resources) and is submitted again from the start.
Walks are pure functions of their arguments, so the retried request returns exactly what an
undisturbed one would. A shard that does not come back within ``recovery_timeout_s`` ends the
request with :class:`ShardUnavailableError` naming it; the actor keeps waiting for capacity, so
the service answers again once a node that offers it joins.

Placement: with ``resources=None`` the shards request the ``pinsage_shard`` custom resource
whenever the cluster advertises it (``cluster.yaml`` gives each ``cpu_worker`` one unit), one
unit each (one shard per node) when there are as many units as shards, else an equal fraction;
and never on the head node while the cluster has other nodes (:func:`~pinsage_ray.ray_utils.
off_head_options`), since they reserve no CPU.

A :class:`ShardedGraph` pickles by its actors' *names* (unique per service) and looks them up
when unpickled, so it can be a constructor argument of a restartable actor (the batch
producers): Ray cannot keep handles or object references in such arguments alive for a
restart and prints an error line on the driver's terminal when it sees one.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

import numpy as np
import ray

from pinsage_ray.graph.partition import PartitionBook
from pinsage_ray.graph.store import GraphStore
from pinsage_ray.ray_utils import off_head_options, resource_share
from pinsage_ray.sampling.api import Reducer, WalkService, assemble, chunks
from pinsage_ray.sampling.shard import GraphShard, Walkers, WalkSpec, route

logger = logging.getLogger(__name__)

#: Custom resource of the nodes meant for shard actors (``cluster.yaml``: ``cpu_worker``).
SHARD_RESOURCE = "pinsage_shard"
#: Seconds between checks of the shards' state while a request waits.
POLL_S = 0.5


class ShardUnavailableError(RuntimeError):
    """A walk shard's actor is not available (its node was lost and no node that offers the
    resources it needs joined in time, or the actor is dead). Nothing was returned; the same
    call can be repeated once capacity is back."""


def default_shard_resources(num_shards: int) -> dict[str, float]:
    """``{"pinsage_shard": x}`` sized to the cluster's units of it, or ``{}`` without any.

    With at least ``num_shards`` units each shard asks for one (one shard per node); with fewer,
    ``1 / ceil(num_shards / units)``, so the shards pack evenly onto the nodes that have them.
    """
    return resource_share(SHARD_RESOURCE, num_shards)


def _is_lost(err: BaseException) -> bool:
    """Whether ``err`` (or the error it wraps) says an actor or an object went away."""
    lost = (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError)
    seen = 0
    while err is not None and seen < 8:
        if isinstance(err, lost):
            return True
        err = getattr(err, "cause", None) or err.__cause__
        seen += 1
    return False


class _ShardsLost(Exception):
    """Internal: a request must be submitted again once ``shards`` are back."""

    def __init__(self, shards: list[int], why: str) -> None:
        super().__init__(why)
        self.shards, self.why = shards, why


class ShardServer:
    """Body of a shard actor (plain class; :class:`ShardedGraph` wraps it with ``ray.remote``)."""

    def __init__(self, graph_dir: str, book: PartitionBook, shard_id: int) -> None:
        self.shard = GraphShard(graph_dir, book, shard_id)
        self.book = book
        self.shard_id = shard_id

    def info(self) -> dict[str, Any]:
        ctx = ray.get_runtime_context()
        return {"shard_id": self.shard_id, "pid": os.getpid(), "node_id": ctx.get_node_id(),
                "actor_id": ctx.get_actor_id(),
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
        resources: custom resources per actor. None: ``pinsage_shard`` when the cluster
            advertises it (:func:`default_shard_resources`); ``{}``: none; e.g.
            ``{"pinsage_shard": 1}`` puts one shard on each node that offers a unit.
        max_restarts: actor restarts after a crash or a lost node (``-1``: unlimited; a
            restart waits for a node that offers the actor's resources).
        max_walkers: walkers per request chunk (bounds memory per round).
        timeout_s: seconds to wait for one request chunk (retries included) before raising
            ``GetTimeoutError`` (or :class:`ShardUnavailableError` when a shard is down).
        recovery_timeout_s: seconds a request waits for a lost shard to be alive again before
            raising :class:`ShardUnavailableError` naming it.
        max_request_retries: times one request chunk is submitted again after losing shards.

    Attributes:
        recoveries: request chunks submitted again after a shard was lost (for monitoring).
    """

    def __init__(self, graph_dir: str | os.PathLike, num_shards: int = 2, *,
                 num_cpus: float = 0, resources: dict[str, float] | None = None,
                 max_restarts: int = -1, max_walkers: int = 2_000_000,
                 timeout_s: float = 600.0, recovery_timeout_s: float = 300.0,
                 max_request_retries: int = 3) -> None:
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
        self.recovery_timeout_s = recovery_timeout_s
        self.max_request_retries = int(max_request_retries)
        self.recoveries = 0
        self.resources = (default_shard_resources(self.book.num_shards) if resources is None
                          else dict(resources))
        actor_cls = ray.remote(ShardServer)
        # Out of order: a restarted shard must not wait (Ray: 30 s) for calls of an abandoned
        # attempt that will never come; hop and reduce are pure, so order does not matter.
        options = dict(num_cpus=num_cpus, max_restarts=max_restarts,
                       max_task_retries=max_restarts, resources=self.resources,
                       allow_out_of_order_execution=True)
        options.update(off_head_options())  # zero CPU: off the head while other nodes are up
        token = uuid.uuid4().hex[:12]
        self.names = [f"pinsage-shard-{token}-{s}" for s in range(self.book.num_shards)]
        self.actors = [actor_cls.options(name=name, **options).remote(self.graph_dir, self.book, s)
                       for s, name in enumerate(self.names)]
        self.shard_info: list[dict[str, Any]] = [{} for _ in self.actors]
        self._restarts_seen: list[int | None] = [None] * len(self.actors)
        try:
            self._ping(time.monotonic() + timeout_s)
        except ShardUnavailableError:
            self.shutdown()
            raise
        logger.info("started %d walk shards over %s (resources %s)", num_shards,
                    self.graph_dir, self.resources)

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
            parts.extend(self._run_chunk(seeds[sl], positions, spec, reducer, avoid))
        return assemble(parts, len(seeds), spec)

    def _run_chunk(self, seeds: np.ndarray, positions: np.ndarray, spec: WalkSpec,
                   reducer: Reducer, avoid: dict | None) -> list[dict | None]:
        """Submit one chunk, gather it; after losing a shard, wait for it and submit again."""
        deadline = time.monotonic() + self.timeout_s
        attempt = 0
        while True:
            restarts = list(self._restarts_seen)  # as of the last check: costs no call here
            refs = self.submit(seeds, positions, spec, reducer, avoid)
            try:
                return self._gather(refs, restarts, deadline)
            except _ShardsLost as lost:
                if attempt >= self.max_request_retries:
                    raise ShardUnavailableError(
                        f"walk request lost shards {lost.shards} {attempt + 1} times (last: "
                        f"{lost.why}); max_request_retries={self.max_request_retries}") from None
                attempt += 1
                self.recoveries += 1
                logger.warning("walk request: %s; waiting for shards %s, then submitting the "
                               "request again (attempt %d)", lost.why, lost.shards, attempt + 1)
                del refs
                self._wait_alive(min(deadline, time.monotonic() + self.recovery_timeout_s),
                                 lost.shards)

    def _gather(self, refs: list[ray.ObjectRef], restarts: list[int | None],
                deadline: float) -> list[dict | None]:
        """``ray.get(refs)``, watching the shards: :class:`_ShardsLost` when one went away."""
        pending = list(refs)
        while pending:
            left = deadline - time.monotonic()
            if left <= 0:
                down = self._down(restarts)
                if down:
                    raise self._unavailable(down, "the request's timeout_s", self.timeout_s)
                raise ray.exceptions.GetTimeoutError(
                    f"walk request not done within timeout_s={self.timeout_s}s")
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=min(POLL_S, left))
            if pending:
                down = self._down(restarts)
                if down:
                    raise _ShardsLost(down, "shard(s) restarted or not alive mid-request")
        try:
            return ray.get(refs)
        except Exception as err:  # noqa: BLE001 - re-raised unless a shard or its node was lost
            if not _is_lost(err):
                raise
            why = f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}"
            raise _ShardsLost(self._down(restarts) or list(range(self.num_shards)), why) from None

    # ----------------------------------------------------------------- shard health
    def _states(self) -> list[dict[str, Any] | None]:
        """Each shard actor's GCS record (``State``, ``NumRestarts``), None where unknown."""
        out: list[dict[str, Any] | None] = []
        for info in self.shard_info:
            try:  # Ray's GCS actor table; no dashboard needed (tests pin the fields read)
                from ray._private import state as ray_state

                rec = ray_state.actors(actor_id=info["actor_id"]) if info.get("actor_id") else {}
            except Exception:  # noqa: BLE001 - another Ray version: fall back to errors only
                rec = {}
            out.append(rec or None)
        return out

    def _restarts(self) -> list[int | None]:
        return [None if r is None else r.get("NumRestarts") for r in self._states()]

    def _down(self, restarts: list[int | None]) -> list[int]:
        """Shards not alive now, or restarted since ``restarts`` was taken (a restart on a
        live node is survived by Ray's own retry too; submitting again is merely safe)."""
        return [k for k, rec in enumerate(self._states()) if rec is not None and (
            rec.get("State") != "ALIVE" or rec.get("NumRestarts") != restarts[k])]

    def _wait_alive(self, deadline: float, shards: list[int]) -> None:
        """Return once every shard is alive and answers; else :class:`ShardUnavailableError`."""
        while True:
            states = self._states()
            dead = [k for k, r in enumerate(states) if r is not None and r.get("State") == "DEAD"]
            if dead:
                raise self._unavailable(dead, "", None)
            if all(r is None or r.get("State") == "ALIVE" for r in states):
                break
            if time.monotonic() >= deadline:
                down = [k for k, r in enumerate(states) if r is not None
                        and r.get("State") != "ALIVE"]
                raise self._unavailable(down or shards, "recovery_timeout_s",
                                        self.recovery_timeout_s)
            time.sleep(POLL_S)
        self._ping(deadline)

    def _ping(self, deadline: float) -> None:
        """Ask every shard for its info (node, pid) by ``deadline``; refreshes ``shard_info``."""
        refs = [a.info.remote() for a in self.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs),
                            timeout=max(0.0, deadline - time.monotonic()))
        done = set(ready)
        late = [k for k, r in enumerate(refs) if r not in done]
        if late:
            raise self._unavailable(late, "the time allowed", None)
        try:
            self.shard_info = ray.get(refs)
        except Exception as err:  # noqa: BLE001
            if not _is_lost(err):
                raise
            raise self._unavailable(list(range(self.num_shards)), "", None) from err
        self._restarts_seen = self._restarts()

    def _unavailable(self, shards: list[int], limit: str,
                     seconds: float | None) -> ShardUnavailableError:
        states = self._states()
        names = []
        for k in shards:
            lo, hi = self.book.range("item", k)
            state = states[k].get("State", "?") if states[k] else "unknown"
            names.append(f"shard {k} of {self.num_shards} (items [{lo}, {hi}), actor "
                         f"{self.names[k] if k < len(self.names) else '?'}, {state})")
        waited = "" if not limit else (f" within {limit}"
                                       + (f"={seconds:g}s" if seconds is not None else ""))
        needs = self.resources or {"CPU": 0}
        if any(s and s.get("State") == "DEAD" for s in (states[k] for k in shards)):
            fix = "it is dead (killed, or out of max_restarts): start a new ShardedGraph"
        else:
            fix = (f"it needs a node that offers {needs}; add one (the shard restarts there "
                   "by itself) and repeat the call")
        return ShardUnavailableError(
            f"walk shard unavailable{waited}: {'; '.join(names)}; {fix}")

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
