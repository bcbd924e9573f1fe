"""The Ray Serve application: replicas that each hold one loaded run and answer its JSON API.

:func:`deployment` builds the application (``serve.run`` deploys it), :func:`start` starts
Ray and Serve on a host and port and deploys it (what ``pinsage-ray serve`` runs). Each
replica loads the run's embeddings and HNSW index once, in ``__init__``, and answers
:class:`~pinsage_ray.serve.service.RecommenderService`'s endpoints.

Rolling out another run: ``serve.run(deployment(new_run_dir), name=...)`` with the running
application's name. The run directory is a constructor argument, so Serve starts replicas of
the new run and stops the old ones; ``max_surge_percent=100`` makes it start each new replica
*before* stopping an old one (Serve's default stops first), so requests keep being answered
throughout. Changing only ``num_replicas`` is a light update: no replica restarts.

A replica runs one request at a time (an ``asyncio.Lock``; queries take well under a
millisecond, and hnswlib must not be queried while items are added). Adding items runs in a
thread under that lock so the replica's event loop stays responsive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from pinsage_ray.serve.service import RecommenderService

logger = logging.getLogger(__name__)

#: Response header naming the run that answered (useful while a new run rolls out).
RUN_HEADER = "X-Pinsage-Run"
DEFAULT_APP_NAME = "pinsage"


@serve.deployment(
    # A bad run fails its replicas on load; give up after a few tries, not Serve's 20.
    max_constructor_retry_count=3,
    # Start a replica of the new version before stopping an old one (no gap in a rollout).
    max_surge_percent=100,
)
class RecommenderDeployment:
    """A Serve replica holding one :class:`RecommenderService` (one loaded run)."""

    def __init__(self, run_dir: str, ef: int | None = None) -> None:
        self.service = RecommenderService.load(run_dir, ef=ef)
        self.run_dir = self.service.rec.run_dir
        self._lock: asyncio.Lock | None = None
        self._num_replicas = 1
        logger.info("replica loaded %s: %d items, ef=%d", self.run_dir,
                    len(self.service.rec.ids), self.service.rec.index.ef)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's light update (``user_config``): the deployment's replica count."""
        self._num_replicas = int(config.get("num_replicas", 1))
        self.service.allow_add = self._num_replicas == 1

    async def __call__(self, request: Request) -> Response:
        body = await request.body()
        if self._lock is None:  # created on the replica's event loop
            self._lock = asyncio.Lock()
        method = request.method
        path = _strip_prefix(request.url.path, request.scope.get("root_path", ""))
        endpoint = path.strip("/")
        if endpoint == "health":  # liveness: answered even while items are being added
            status, answer = self.service.handle(method, path, body)
            answer["num_replicas"] = self._num_replicas
        else:
            async with self._lock:
                if endpoint == "items":  # embeds new items: up to seconds, not microseconds
                    status, answer = await asyncio.to_thread(self.service.handle, method,
                                                             path, body)
                else:
                    status, answer = self.service.handle(method, path, body)
        return Response(json.dumps(answer).encode(), status_code=status,
                        media_type="application/json", headers={RUN_HEADER: self.run_dir})


def _strip_prefix(path: str, root_path: str) -> str:
    return path[len(root_path):] if root_path and path.startswith(root_path) else path


def deployment(run_dir: str | os.PathLike, *, num_replicas: int = 1, ef: int | None = None,
               num_cpus: float = 0.25, max_ongoing_requests: int = 64) -> serve.Application:
    """A Ray Serve application answering related items and recommendations from ``run_dir``.

    Args:
        run_dir: a trained run with ``embeddings/`` and ``index/`` (``pinsage-ray embed``,
            ``pinsage-ray index``). Each replica loads it once.
        num_replicas: replicas (processes) answering requests.
        ef: HNSW search ef (None: the one tuned at index build time); a request may set its
            own.
        num_cpus: logical CPUs reserved per replica. A replica is mostly idle between
            sub-millisecond queries; a fraction lets replicas (and a rollout's surge) fit
            beside other work on a small machine.
        max_ongoing_requests: requests Serve sends a replica before holding them back in
            its router. The replica runs one at a time and queues the rest in order; a
            router that holds requests back retries with backoff, which at 32 clients on
            one replica cut throughput about 6x with 8 (bench_serve.py), hence 64.

    Returns:
        The application: ``serve.run(deployment(run_dir), name="pinsage")``. Running it
        again under the same name with another ``run_dir`` rolls the new run out.

    Raises:
        ValueError: a bad setting.
        FileNotFoundError: ``run_dir`` has no index or no embeddings yet.

    Example::

        from ray import serve
        from pinsage_ray.serve import deployment

        serve.run(deployment("runs/ml100k", num_replicas=2), name="pinsage")
        # POST http://127.0.0.1:8000/related  {"item": 50, "k": 10}
    """
    from pinsage_ray.inference.model_io import run_path

    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas={num_replicas!r}; expected an integer >= 1")
    if ef is not None and (isinstance(ef, bool) or not isinstance(ef, int) or ef < 1):
        raise ValueError(f"ef={ef!r}; expected an integer >= 1 or None (the index's own)")
    if not isinstance(num_cpus, (int, float)) or isinstance(num_cpus, bool) or num_cpus < 0:
        raise ValueError(f"num_cpus={num_cpus!r}; expected a number >= 0 (CPUs per replica)")
    if isinstance(max_ongoing_requests, bool) or not isinstance(max_ongoing_requests, int) \
            or max_ongoing_requests < 1:
        raise ValueError(f"max_ongoing_requests={max_ongoing_requests!r}; expected an "
                         "integer >= 1")
    run_dir = run_path(run_dir)  # absolute: replicas may start in another directory
    if "://" not in run_dir:  # fail here, not in every replica (Serve retries those)
        for part, command in (("embeddings", "embed"), ("index", "index")):
            if not os.path.isdir(os.path.join(run_dir, part)):
                raise FileNotFoundError(f"{os.path.join(run_dir, part)}: not found; run "
                                        f"`pinsage-ray {command} {run_dir}` first")
    return RecommenderDeployment.options(
        num_replicas=num_replicas, max_ongoing_requests=max_ongoing_requests,
        ray_actor_options={"num_cpus": num_cpus},
        user_config={"num_replicas": num_replicas},
    ).bind(run_dir, ef)


def start(run_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
          num_replicas: int = 1, name: str = DEFAULT_APP_NAME, route_prefix: str = "/",
          address: str | None = None, **options: Any) -> str:
    """Start Ray (unless running) and Serve on ``host:port``, deploy ``run_dir``; return its URL.

    Serve's HTTP options are fixed when Serve starts in a Ray instance: if it already runs
    there, the application is deployed on its existing host and port.

    Args:
        run_dir, num_replicas, **options: see :func:`deployment`.
        host, port: where Serve's HTTP proxy listens (127.0.0.1: this machine only).
        name: the application's name; deploy again under it to roll out another run.
        route_prefix: URL path the endpoints live under.
        address: a Ray cluster to join (None: a new local instance).

    Raises:
        ValueError: a bad setting, or the replicas could not load the run (the reason
            given).
    """
    import ray
    from ray.exceptions import RayError

    from pinsage_ray.inference.model_io import run_path
    from pinsage_ray.ray_utils import init_ray, ray_console_on, route_ray_loggers

    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port={port!r}; expected an integer in 1..65535")
    app = deployment(run_dir, num_replicas=num_replicas, **options)
    app_dir = run_path(run_dir)
    if not (ray.is_initialized() or address or os.environ.get("RAY_ADDRESS")):
        _check_port_free(host, port)  # a new local instance: fail before starting Ray
    init_ray(address)
    if not ray_console_on():  # Serve's driver loggers, set up on import: to the log file
        route_ray_loggers()
    try:
        serve.start(http_options={"host": host, "port": port})
    except RayError as err:  # e.g. the proxy could not bind
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        raise ValueError(f"Serve could not start on {host}:{port}: "
                         f"{lines[-1] if lines else err}") from None
    try:
        serve.run(app, name=name, route_prefix=route_prefix)
    except RuntimeError as err:  # the application failed to deploy: say why in one line
        reason = _deploy_failure(name) or " ".join(str(err).split())
        serve.delete(name)
        raise ValueError(f"{app_dir}: the replicas could not load the run: {reason}") \
            from None
    return f"http://{host}:{port}{route_prefix.rstrip('/')}"


def _check_port_free(host: str, port: int) -> None:
    """Raise ValueError when something already listens on ``host:port``."""
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port,
                                                          type=socket.SOCK_STREAM)[0]
    except socket.gaierror as err:
        raise ValueError(f"host={host!r}: not an address of this machine ({err})") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(addr)
        except OSError as err:
            raise ValueError(f"{host}:{port} cannot be listened on ({err.strerror}); choose "
                             "another port or host") from None


def _deploy_failure(name: str) -> str | None:
    """The exception message that made the application's replicas fail, from Serve's status.

    Serve keeps the replica constructor's traceback in the deployment's status message; its
    last line is ``module.ErrorClass: message``.
    """
    import re

    try:
        app = serve.status().applications.get(name)
    except Exception:  # noqa: BLE001 - only an error message is at stake
        return None
    for dep in (app.deployments.values() if app else []):
        lines = [line.strip() for line in (dep.message or "").splitlines() if line.strip()]
        if lines:
            return re.sub(r"^[\w.]+(Error|Exception|Warning)\w*: ", "", lines[-1])
    return None


def wait_until_stopped(name: str = DEFAULT_APP_NAME) -> None:
    """Block until Ctrl-C or SIGTERM, then :func:`stop` (``pinsage-ray serve``)."""
    import signal
    import time

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop(name)


def stop(name: str = DEFAULT_APP_NAME) -> None:
    """Delete the application, shut Serve down if no other application is left, leave Ray.

    What Ray prints meanwhile (the Serve controller's shutdown reaches the driver as a
    ``(raylet)`` line on stdout, whatever ``log_to_driver``) goes to this module's log.
    """
    import contextlib
    import io

    import ray

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            serve.delete(name)
            if not serve.status().applications:
                serve.shutdown()
            ray.shutdown()  # stops the thread that prints Ray's error messages
    except KeyboardInterrupt:  # a second Ctrl-C: skip the rest, Ray exits with the process
        pass
    finally:
        if printed.getvalue().strip():
            logger.info("Ray, while stopping: %s", printed.getvalue().strip())


def serve_summary(url: str, run_dir: str | os.PathLike, num_replicas: int, logs: str) -> str:
    """What ``pinsage-ray serve`` prints once the application answers."""
    return "\n".join([
        f"serving {os.fspath(run_dir)} at {url}/ ({num_replicas} replica(s)); Ctrl-C stops",
        f"  GET  {url}/health",
        f"  POST {url}/related    {{\"item\": ID, \"k\": 10}} or {{\"items\": [ID, ...]}}",
        f"  POST {url}/recommend  {{\"items\": [ID, ...], \"k\": 10}} (a group's items)",
        f"  POST {url}/items      {{\"ids\": [...], \"features\": [[...]], \"groups\": [[...]]}}",
        f"  logs: {logs}",
        "docs: docs/serving.md"])
