"""A Python path to a served run without HTTP: :func:`client` over a Serve ``DeploymentHandle``.

For driver scripts and other Serve applications in the same Ray cluster. The calls reach the
replicas through Serve's router (no HTTP proxy, no JSON) and are answered by the same code as
the HTTP endpoints, so the answers equal ``Recommender``'s (ids and scores as Python values).
Errors are the library's: ``KeyError`` for an item not in the run, ``ValueError`` for a bad
argument (Ray re-raises them in the caller, wrapped in a ``RayTaskError`` that is also an
instance of the original class).

Example::

    from pinsage_ray.serve import client

    rec = client("pinsage")                 # the application's name (pinsage-ray serve's)
    rec.similar_items(42, k=10)             # [(id, score), ...], as Recommender.similar_items
    rec.recommend_for_group([1, 2, 3], k=10)

The methods wait for their answer (``.result()``). In async code (another Serve deployment),
await the handle instead: ``await client(name).handle.similar_items.remote(item, k)``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """numpy scalars and arrays as Python values (the replica checks id types like JSON's)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class ServeClient:
    """``Recommender``'s query methods, answered by a served application's replicas.

    Args:
        handle: the application's ``DeploymentHandle`` (``serve.get_app_handle(name)``).
        timeout_s: seconds to wait for one answer.
    """

    def __init__(self, handle: Any, *, timeout_s: float = 60.0) -> None:
        self.handle = handle
        self.timeout_s = timeout_s

    def similar_items(self, item: Any, k: int = 10) -> list[tuple[Any, float]]:
        """The ``k`` items most similar to ``item`` (``Recommender.similar_items``)."""
        return self.handle.similar_items.remote(_plain(item), k).result(
            timeout_s=self.timeout_s)

    def similar_items_batch(self, items: Any, k: int = 10) -> list[list[tuple[Any, float]]]:
        """:meth:`similar_items` of many items in one index query."""
        return self.handle.similar_items_batch.remote(_plain(items), k).result(
            timeout_s=self.timeout_s)

    def recommend_for_group(self, items: Any, k: int = 10, *,
                            timestamps: Any = None, half_life: float | None = None,
                            exclude_seen: bool = True) -> list[tuple[Any, float]]:
        """Items to recommend to a group given its items (``Recommender.recommend_for_group``)."""
        return self.handle.recommend_for_group.remote(
            _plain(items), k, timestamps=_plain(timestamps), half_life=_plain(half_life),
            exclude_seen=exclude_seen).result(timeout_s=self.timeout_s)

    def submit(self, item: Any, k: int = 10) -> Any:
        """Send a :meth:`similar_items` call and return its ``DeploymentResponse`` without
        waiting (``.result()`` waits): many calls in flight at once use the batching."""
        return self.handle.similar_items.remote(_plain(item), k)


def client(name: str = "pinsage", *, timeout_s: float = 60.0) -> ServeClient:
    """A :class:`ServeClient` for the served application ``name`` in the connected Ray.

    Raises:
        ValueError: no application of that name runs (the running ones are named).
    """
    from ray import serve

    try:
        handle = serve.get_app_handle(name)
    except Exception as err:  # noqa: BLE001 - Serve raises several kinds for "not found"
        try:
            running = sorted(serve.status().applications)
        except Exception:  # noqa: BLE001 - only the message is at stake
            running = []
        raise ValueError(f"name={name!r}: no such Serve application ({type(err).__name__}); "
                         f"running: {running or 'none'}") from None
    _separate_router_loop(handle)
    return ServeClient(handle, timeout_s=timeout_s)


def _separate_router_loop(handle: Any) -> None:
    """Let a synchronous caller use ``handle``.

    In a process where ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` was set before Ray Serve was
    imported (a job on a cluster started with it, for one), handles route on the caller's
    asyncio loop and ``.result()`` outside one fails ("No event loop running"). Outside an
    event loop, the handle gets a router loop of its own (Serve 2.60's ``_init`` option;
    skipped where that is not available or the handle is already in use).
    """
    import asyncio

    try:
        asyncio.get_running_loop()
        return  # async code: the caller's loop serves (await handle.method.remote(...))
    except RuntimeError:
        pass
    try:
        handle._init(_run_router_in_separate_loop=True)
    except (AttributeError, RuntimeError, TypeError) as err:
        logger.debug("handle keeps its router options: %s", err)
