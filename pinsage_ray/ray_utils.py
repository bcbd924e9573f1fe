"""Starting or joining Ray the way this library needs it, and keeping Ray's output in its place.

``init_ray()`` joins a running cluster when given an address (``"auto"`` on a ``ray up``
cluster) and otherwise starts a private local instance (``address="local"``, so a stale
``ray start`` on the same machine is never picked up by accident), with the settings that
matter on small machines: a pinned CPU count, no dashboard, and an object store size cap.

Where Ray's output goes (:func:`set_ray_console`). Ray writes to the driver's terminal:

1. every worker's and actor's stdout/stderr, forwarded by its log monitor (the lines prefixed
   ``(TrainController pid=...)``), unless ``ray.init(log_to_driver=False)``. They are always
   also in Ray's session log directory (``<session>/logs/worker-*.out|err``,
   :func:`ray_logs_dir`);
2. the driver's own ``ray`` Python loggers (the token-authentication warning, "Started a local
   Ray instance"): with the console off these propagate to the root logger instead of Ray's
   stderr handler, so the CLI's log file receives them;
3. C++ lines of the driver's core worker: an actor whose constructor arguments live in the
   object store while it may restart is one (:class:`~pinsage_ray.training.producer.
   RemoteBatchProducer` avoids it).

The CLI turns Ray's console off unless ``-v``; the library keeps Ray's defaults.

Ray Train v2 starts a ``PlacementGroupCleaner`` actor that polls Ray's state API (served by
the dashboard) every second to remove the run's placement group should the controller die
uncleanly. Without a dashboard, or with two Ray instances on one machine, each poll fails
(a warning per second, a traceback when it stops; ray-project/ray#65447 catches the second
case upstream). Worse, without a dashboard of its own the cleaner's state API client picks
"the latest" Ray instance on the machine: where another instance runs a dashboard (a
multi-node test cluster beside someone's local Ray), it asks that instance about this run's
controller, finds none, and would remove this run's placement group mid-training.
:func:`torch_trainer_class` leaves the cleaner out whenever the Ray instance this process
started or joined through :func:`init_ray` runs no dashboard: its placement groups end with
the job or the instance anyway.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger(__name__)

#: Where Ray's output goes; see :func:`set_ray_console`.
_CONSOLE = {"ray_to_terminal": True, "init_calls": 0}
#: What init_ray started: {"address": "local" or the cluster's, "context": RayContext}.
_STARTED: dict[str, Any] = {}


def set_ray_console(to_terminal: bool) -> None:
    """Choose where Ray's output goes for the Ray instances started after this call.

    Args:
        to_terminal: True (Ray's default): worker logs and Ray's driver log lines print on
            the terminal. False: worker logs stay in Ray's session log directory
            (:func:`ray_logs_dir`) and Ray's driver loggers propagate to the root logger
            (configure handlers there, e.g. a log file).
    """
    _CONSOLE["ray_to_terminal"] = bool(to_terminal)


def init_ray_calls() -> int:
    """How often :func:`init_ray` was called in this process (work on Ray has begun)."""
    return _CONSOLE["init_calls"]


def ray_console_on() -> bool:
    """Whether Ray's own output (worker logs, progress bars) goes to the terminal."""
    return _CONSOLE["ray_to_terminal"]


def route_ray_loggers() -> None:
    """Send the driver's ``ray*`` loggers to the root logger instead of Ray's own stderr.

    Ray gives its loggers stream handlers to stderr and ``propagate=False``; this removes
    those stream handlers (file handlers stay) and lets records propagate. Called again
    after Ray starts, since Ray configures sub-loggers (``ray.train``, ``ray.data``) lazily.
    """
    names = ["ray", *(n for n in logging.root.manager.loggerDict if n.startswith("ray."))]
    for name in names:
        log = logging.getLogger(name)
        for handler in list(log.handlers):
            if (isinstance(handler, logging.StreamHandler)  # stderr/stdout, not a file
                    and not isinstance(handler, logging.FileHandler)):
                log.removeHandler(handler)
        log.propagate = True


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             object_store_memory: int | None = None, include_dashboard: bool | None = None,
             log_to_driver: bool | None = None, **kwargs: object) -> None:
    """Initialise Ray unless it already is.

    Args:
        address: ``None``/``"local"`` for a new local instance, ``"auto"`` or ``ray://...``
            to join a cluster. ``RAY_ADDRESS`` in the environment is honoured when None.
        num_cpus: logical CPUs of a local instance (ignored when joining a cluster).
        object_store_memory: bytes for a local instance's object store.
        include_dashboard: start the dashboard of a local instance (None: Ray's default,
            which starts it when its dependencies are installed). Ray's state API, which Ray
            Train's placement-group cleaner polls, needs it.
        log_to_driver: print workers' output on this process's terminal (None: as
            :func:`set_ray_console` chose, True by default).
        **kwargs: passed on to ``ray.init``.
    """
    import ray  # imported here so that `import pinsage_ray` does not start loading Ray

    _CONSOLE["init_calls"] += 1
    to_terminal = _CONSOLE["ray_to_terminal"]
    if ray.is_initialized():
        if not to_terminal:  # modules imported since (ray.data, ray.train) add handlers
            route_ray_loggers()
        return
    if not to_terminal:
        route_ray_loggers()
    if log_to_driver is None:
        log_to_driver = to_terminal
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address == "local":
        ctx = ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                       object_store_memory=object_store_memory, log_to_driver=log_to_driver,
                       **kwargs)
    else:
        ctx = ray.init(address=address, log_to_driver=log_to_driver, **kwargs)
    _STARTED.clear()
    _STARTED.update(address=address, context=ctx)
    if not to_terminal:
        route_ray_loggers()
    logger.info("ray initialised: %s; Ray's logs: %s", ray.cluster_resources(), ray_logs_dir())


def ray_logs_dir() -> str | None:
    """Ray's session log directory on this machine (worker and actor logs), if known.

    Known when :func:`init_ray` started or joined a Ray instance in this process (the
    directory outlives the instance); None otherwise.
    """
    ctx = _STARTED.get("context")
    if ctx is None:
        return None
    session = getattr(ctx, "address_info", {}).get("session_dir")
    return os.path.join(session, "logs") if session else None


def resource_share(resource: str, count: int) -> dict[str, float]:
    """``{resource: x}`` so that ``count`` actors spread over the nodes that advertise
    ``resource`` (``cluster.yaml``'s custom resources), or ``{}`` when none does.

    With at least ``count`` units each actor asks for one (one per node); with fewer,
    ``1 / ceil(count / units)``, so they pack evenly onto the nodes that have them.
    """
    import math

    import ray

    units = int(ray.cluster_resources().get(resource, 0))
    if units < 1:
        return {}
    return {resource: 1.0 / math.ceil(count / units)}


#: Ray's default node label holding the node's id (on every node since Ray 2.49).
NODE_ID_LABEL = "ray.io/node-id"
#: Resource that Ray gives the head node only.
HEAD_RESOURCE = "node:__internal_head__"


def off_head_options() -> dict[str, Any]:
    """Ray actor options that keep a zero-CPU actor off the head node when the cluster has
    other nodes: ``{"label_selector": {"ray.io/node-id": "!<head's id>"}}``; ``{}`` on a
    single-node instance (a laptop, CI), where the head is the only place to run.

    Walk shards and batch producers reserve no CPU (they must not starve Train workers on a
    small machine), so a head advertising ``CPU: 0`` (``cluster.yaml``) does not keep them off:
    without this they could load graph rows into the memory of the node that runs the GCS and
    the driver. Call it after Ray is initialised.
    """
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    heads = [n["NodeID"] for n in nodes if HEAD_RESOURCE in n.get("Resources", {})]
    if len(nodes) < 2 or len(heads) != 1:
        return {}
    return {"label_selector": {NODE_ID_LABEL: f"!{heads[0]}"}}


def torch_trainer_class() -> type:
    """Ray Train's ``TorchTrainer``, without the placement-group cleaner where it cannot work.

    The cleaner is left out only for a Ray instance (local or a cluster) started or joined by
    :func:`init_ray` that runs no dashboard (its state API is missing, so every poll fails or
    asks another instance, see the module docstring; the placement groups end with the job).
    Otherwise, and whenever Ray's internals differ from what this expects, Ray's own
    ``TorchTrainer`` is returned unchanged.
    """
    from ray.train.torch import TorchTrainer

    ctx = _STARTED.get("context")
    if ctx is None or getattr(ctx, "dashboard_url", None):
        return TorchTrainer
    try:
        from ray.train.v2._internal.callbacks.placement_group_callback import (
            PlacementGroupCleanerCallback,
        )
    except ImportError:  # another Ray version: keep its defaults
        return TorchTrainer
    if not callable(getattr(TorchTrainer, "_create_default_callbacks", None)):
        return TorchTrainer

    class LocalTorchTrainer(TorchTrainer):  # type: ignore[misc, valid-type]
        """TorchTrainer without the placement-group cleaner (see module docstring)."""

        def _create_default_callbacks(self) -> list:
            return [cb for cb in super()._create_default_callbacks()
                    if not isinstance(cb, PlacementGroupCleanerCallback)]

    return LocalTorchTrainer
