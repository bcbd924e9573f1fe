"""Starting or joining Ray the way this library needs it.

``init_ray()`` joins a running cluster when given an address (``"auto"`` on a ``ray up``
cluster) and otherwise starts a private local instance (``address="local"``, so a stale
``ray start`` on the same machine is never picked up by accident), with the settings that
matter on small machines: a pinned CPU count, no dashboard, and an object store size cap.
"""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def init_ray(address: str | None = None, *, num_cpus: int | None = None,
             object_store_memory: int | None = None, include_dashboard: bool | None = None,
             **kwargs: object) -> None:
    """Initialise Ray unless it already is.

    Args:
        address: ``None``/``"local"`` for a new local instance, ``"auto"`` or ``ray://...``
            to join a cluster. ``RAY_ADDRESS`` in the environment is honoured when None.
        num_cpus: logical CPUs of a local instance (ignored when joining a cluster).
        object_store_memory: bytes for a local instance's object store.
        include_dashboard: start the dashboard of a local instance (None: Ray's default,
            which starts it when its dependencies are installed). Ray's state API, which Ray
            Train's placement-group cleaner polls, needs it.
        **kwargs: passed on to ``ray.init``.
    """
    import ray  # imported here so that `import pinsage_ray` does not start loading Ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address == "local":
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=include_dashboard,
                 object_store_memory=object_store_memory, log_to_driver=True, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    logger.info("ray initialised: %s", ray.cluster_resources())
