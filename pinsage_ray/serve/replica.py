"""What runs in a Serve replica: one loaded run, its batched single-item path, its
``DeploymentHandle`` methods and the hand-written HTTP routing (:class:`PlainIngress`).

A replica answers on its event loop, one index query at a time (an ``asyncio.Lock``: hnswlib
must not be queried while items are added; adding runs in a thread under that lock so the loop
stays responsive). The commonest request, one item's related items, is batched with
``@serve.batch``: the requests waiting when the replica gets to them (up to :data:`MAX_BATCH`,
none waited for) become one index query. :mod:`pinsage_ray.serve.app` wraps these classes in
Serve deployments.

A replica follows its run's updates (``pinsage-ray update`` writes a new version and switches
``updates/CURRENT`` atomically; :mod:`pinsage_ray.update.versions`): every ``watch_s``
seconds it reads the pointer in a thread, and when it names another version it loads that
version in a thread (the loop keeps answering from the old one), then swaps it in under the
query lock, between two index queries. No request fails and every answer comes from one
version, named by the ``X-Pinsage-Run`` header of its response. A version that fails to load
is logged and the old one keeps serving; a replica holding unsaved added items
(``POST /items`` without ``save``) keeps them and does not switch.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from pinsage_ray.serve.service import RecommenderService, RelatedQuery
from pinsage_ray.update.versions import current_root

logger = logging.getLogger(__name__)

#: Response header naming the run that answered (useful while a new run rolls out).
RUN_HEADER = "X-Pinsage-Run"
#: Single-item ``/related`` requests answered by one index query, at most.
MAX_BATCH = 32
#: Seconds between a replica's checks for a new version of its run (0: never switch).
WATCH_SECONDS = 2.0

#: Serve options of the deployment, whichever HTTP routing it has.
DEPLOYMENT_OPTIONS: dict[str, Any] = {
    # A bad run fails its replicas on load; give up after a few tries, not Serve's 20.
    "max_constructor_retry_count": 3,
    # Start a replica of the new version before stopping an old one (no gap in a rollout).
    "max_surge_percent": 100,
}


class ReplicaCore:
    """A Serve replica holding one :class:`RecommenderService` (one loaded run): everything
    but the HTTP routing, which :class:`PlainIngress` (or :mod:`pinsage_ray.serve.typed`)
    adds; the ``DeploymentHandle`` methods live here."""

    def __init__(self, run_dir: str, ef: int | None = None,
                 watch_s: float = WATCH_SECONDS, partition_actors: bool = False) -> None:
        self._run, self._ef, self._watch_s = run_dir, ef, float(watch_s)
        self._actors = bool(partition_actors)  # a partitioned index served by its own actors
        self._lock: asyncio.Lock | None = None
        self._watcher: asyncio.Task | None = None
        self._num_replicas = 1
        self._skipped: str | None = None  # a version not switched to (logged once)
        self._install(RecommenderService.load(run_dir, ef=ef, partition_actors=self._actors))

    def _install(self, service: RecommenderService) -> None:
        service.allow_add = self._num_replicas == 1 and not self._actors
        old, self.service = getattr(self, "service", None), service
        if old is not None:
            old.rec.close()  # a previous version's partition actors (no-op without them)
        self.run_dir = service.rec.run_dir  # the version's directory
        self._headers = {RUN_HEADER: self.run_dir}  # the same on every response
        logger.info("replica serves %s: %d items, ef=%d", self.run_dir,
                    len(service.rec.ids), service.rec.index.ef)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's light update (``user_config``): the deployment's replica count."""
        self._num_replicas = int(config.get("num_replicas", 1))
        self.service.allow_add = self._num_replicas == 1 and not self._actors

    def _get_lock(self) -> asyncio.Lock:
        if self._lock is None:  # created on the replica's event loop, with the watcher
            self._lock = asyncio.Lock()
            if self._watch_s > 0:
                self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return self._lock

    async def _watch(self) -> None:
        while True:
            try:
                await self.check_for_update()
            except Exception:  # noqa: BLE001 - keep serving the loaded version
                logger.exception("checking %s for a new version failed; still serving %s",
                                 self._run, self.run_dir)
            await asyncio.sleep(self._watch_s)

    async def check_for_update(self) -> bool:
        """Switch to the run's current version if it is not the one loaded; True if it did."""
        root = await asyncio.to_thread(current_root, self._run)
        if root == self.run_dir or root == self._skipped:
            return False
        if getattr(self.service.rec, "_unsaved", 0):
            self._skipped = root
            logger.warning("not switching to %s: this replica holds %d added items not saved "
                           "into %s (POST /items with \"save\": true)", root,
                           self.service.rec._unsaved, self.run_dir)
            return False
        try:
            new = await asyncio.to_thread(RecommenderService.load, self._run, ef=self._ef,
                                          partition_actors=self._actors)
        except Exception:  # noqa: BLE001 - a broken version must not stop the service
            self._skipped = root
            logger.exception("cannot load %s; still serving %s", root, self.run_dir)
            return False
        async with self._get_lock():  # between two index queries
            self._install(new)
        return True

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.0)
    async def _related_batch(self, plans: list[RelatedQuery]
                             ) -> list[tuple[int, dict, dict[str, str]]]:
        async with self._get_lock():
            return [(*a, self._headers) for a in self.service.related_many(plans)]

    # ------------------------------------------------------------------ DeploymentHandle
    async def similar_items(self, item: Any, k: int = 10) -> list[tuple[Any, float]]:
        """``Recommender.similar_items`` through the replica (batched like ``/related``)."""
        plan = self.service.plan_related({"item": item, "k": k})
        status, answer = ((await self._related_batch(plan))[:2]
                          if isinstance(plan, RelatedQuery) else plan)
        return answer["similar"] if status == 200 else _raise((status, answer))

    async def similar_items_batch(self, items: list[Any], k: int = 10
                                  ) -> list[list[tuple[Any, float]]]:
        """``Recommender.similar_items_batch`` through the replica (one index query)."""
        async with self._get_lock():
            status, answer = self.service.handle("POST", "/related", {"items": items, "k": k})
        return [r["similar"] for r in answer["results"]] if status == 200 \
            else _raise((status, answer))

    async def recommend_for_group(self, items: list[Any], k: int = 10, *,
                                  timestamps: list[float] | None = None,
                                  half_life: float | None = None,
                                  exclude_seen: bool = True) -> list[tuple[Any, float]]:
        """``Recommender.recommend_for_group`` through the replica."""
        async with self._get_lock():
            status, answer = self.service.handle("POST", "/recommend", {
                "items": items, "k": k, "timestamps": timestamps, "half_life": half_life,
                "exclude_seen": exclude_seen})
        return answer["recommended"] if status == 200 else _raise((status, answer))


class PlainIngress(ReplicaCore):
    """The JSON API routed by hand: :class:`RecommenderService` parses and checks bodies."""

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        method = request.method
        path = _strip_prefix(request.scope["path"], request.scope.get("root_path", ""))
        endpoint = path.strip("/")
        headers = self._headers  # the version that answers: captured with its service
        if endpoint == "health":  # liveness: answered even while items are being added
            status, answer = self.service.handle(method, path, body)
            answer["num_replicas"] = self._num_replicas
        elif endpoint == "related" and method == "POST" \
                and (plan := self.service.plan_related(body)) is not None:
            status, answer, headers = (await self._related_batch(plan)
                                       if isinstance(plan, RelatedQuery) else (*plan, headers))
        else:
            async with self._get_lock():
                headers = self._headers
                if endpoint == "items":  # embeds new items: up to seconds, not microseconds
                    status, answer = await asyncio.to_thread(self.service.handle, method,
                                                             path, body)
                else:
                    status, answer = self.service.handle(method, path, body)
        return Response(json.dumps(answer).encode(), status_code=status,
                        media_type="application/json", headers=headers)


def _strip_prefix(path: str, root_path: str) -> str:
    return path[len(root_path):] if root_path and path.startswith(root_path) else path


def _raise(answer: tuple[int, dict]) -> Any:
    """Raise the library's exception for an error answer (the handle path's errors)."""
    status, body = answer
    message = body.get("error", "error")
    if status == 404:
        raise KeyError(message)
    if status < 500:
        raise ValueError(message)
    raise RuntimeError(message)


