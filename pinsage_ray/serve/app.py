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

What a replica runs (one index query at a time, single-item ``/related`` requests batched
with ``@serve.batch``) is in :mod:`pinsage_ray.serve.replica`. Python callers skip HTTP
through a ``DeploymentHandle`` (:func:`pinsage_ray.serve.client`), answered by the same code.

:func:`start_serve` starts Ray and Serve with the ingress of :mod:`pinsage_ray.serve.settings`
(HAProxy and the throughput-optimised mode by default, access logs off) and says what took
effect.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from ray import serve

from pinsage_ray.serve import settings
from pinsage_ray.serve.replica import (DEPLOYMENT_OPTIONS, MAX_BATCH, RUN_HEADER, WATCH_SECONDS,
                                      PlainIngress)

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_APP_NAME", "MAX_BATCH", "RUN_HEADER", "RecommenderDeployment", "deployment",
           "serving_mode", "start", "start_serve", "stop"]

DEFAULT_APP_NAME = "pinsage"
#: What :func:`start_serve` started: the mode that took effect, the fallback note, whether
#: this process started the Ray instance.
_STATE: dict[str, Any] = {"mode": None, "note": None, "own_instance": False}

#: The replica with the hand-written JSON routing (the default API).
RecommenderDeployment = serve.deployment(name="RecommenderDeployment", **DEPLOYMENT_OPTIONS)(
    PlainIngress)


def typed_deployment() -> Any:
    """The replica routed by FastAPI (:mod:`pinsage_ray.serve.typed`), imported on first use."""
    from pinsage_ray.serve.typed import TypedDeployment

    return TypedDeployment


def deployment(run_dir: str | os.PathLike, *, num_replicas: int = 1, ef: int | None = None,
               num_cpus: float = 0.25, max_ongoing_requests: int = 64,
               api: str = "plain", access_log: bool = False,
               watch_updates: float = WATCH_SECONDS,
               partition_actors: bool = False) -> serve.Application:
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
        api: ``"plain"`` (hand-written routing, the default) or ``"fastapi"`` (pydantic
            models and an OpenAPI page at ``/docs``; slower, see docs/serving.md).
        access_log: the replicas' per-request access log lines (off by default: a log
            record per request is work a replica does not need; Serve's own default is on).
        watch_updates: seconds between a replica's checks for a new version of the run
            (``pinsage-ray update``); a new one is loaded beside the old and swapped in with
            no failed request and no restart. 0: keep the version loaded at start.
        partition_actors: for a partitioned index (``pinsage-ray index --partitions P``):
            each replica serves it from one Ray actor per partition
            (:class:`~pinsage_ray.index.PartitionActors`) instead of loading every
            partition into its own process; ``POST /items`` is then refused (read-only).

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
    if api not in ("plain", "fastapi"):
        raise ValueError(f"api={api!r}; expected 'plain' or 'fastapi'")
    if isinstance(watch_updates, bool) or not isinstance(watch_updates, (int, float)) \
            or watch_updates < 0:
        raise ValueError(f"watch_updates={watch_updates!r}; expected seconds >= 0 (0: never "
                         "switch to a new version)")
    run_dir = run_path(run_dir)  # absolute: replicas may start in another directory
    if "://" not in run_dir:  # fail here, not in every replica (Serve retries those)
        for part, command in (("embeddings", "embed"), ("index", "index")):
            if not os.path.isdir(os.path.join(run_dir, part)):
                raise FileNotFoundError(f"{os.path.join(run_dir, part)}: not found; run "
                                        f"`pinsage-ray {command} {run_dir}` first")
    dep = RecommenderDeployment if api == "plain" else typed_deployment()
    return dep.options(
        num_replicas=num_replicas, max_ongoing_requests=max_ongoing_requests,
        ray_actor_options={"num_cpus": num_cpus},
        logging_config={"enable_access_log": bool(access_log)},
        user_config={"num_replicas": num_replicas},
    ).bind(run_dir, ef, float(watch_updates), bool(partition_actors))


def start(run_dir: str | os.PathLike, *, host: str = "127.0.0.1", port: int = 8000,
          num_replicas: int = 1, name: str = DEFAULT_APP_NAME, route_prefix: str = "/",
          address: str | None = None, haproxy: bool = True, throughput_optimized: bool = True,
          access_log: bool = False, **options: Any) -> str:
    """Start Ray (unless running) and Serve on ``host:port``, deploy ``run_dir``; return its URL.

    Serve's HTTP options and ingress are fixed when Serve starts in a Ray instance: if it
    already runs there, the application is deployed on its existing host, port and ingress.
    :func:`serving_mode` then says which ingress took effect, and why not the one asked for.

    Args:
        run_dir, num_replicas, **options: see :func:`deployment`.
        host, port: where Serve's HTTP ingress listens (127.0.0.1: this machine only).
        name: the application's name; deploy again under it to roll out another run.
        route_prefix: URL path the endpoints live under.
        address: a Ray cluster to join (None: a new local instance).
        haproxy, throughput_optimized, access_log: see :func:`start_serve`.

    Raises:
        ValueError: a bad setting, or the replicas could not load the run (the reason
            given).
    """
    from pinsage_ray.inference.model_io import run_path

    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port={port!r}; expected an integer in 1..65535")
    app = deployment(run_dir, num_replicas=num_replicas, access_log=access_log, **options)
    app_dir = run_path(run_dir)
    start_serve(host=host, port=port, address=address, haproxy=haproxy,
                throughput_optimized=throughput_optimized, access_log=access_log)
    try:
        serve.run(app, name=name, route_prefix=route_prefix)
    except RuntimeError as err:  # the application failed to deploy: say why in one line
        reason = _deploy_failure(name) or " ".join(str(err).split())
        serve.delete(name)
        raise ValueError(f"{app_dir}: the replicas could not load the run: {reason}") \
            from None
    return f"http://{host}:{port}{route_prefix.rstrip('/')}"


def start_serve(*, host: str = "127.0.0.1", port: int = 8000, address: str | None = None,
                haproxy: bool = True, throughput_optimized: bool = True,
                access_log: bool = False, **ray_options: Any) -> settings.ServeMode:
    """Start Ray (unless running) and Serve's HTTP ingress on ``host:port``; what took effect.

    For a new local Ray instance, the ingress variables of :mod:`pinsage_ray.serve.settings`
    go into its environment; where HAProxy cannot start (no binary, its ports taken, or it
    fails), Serve starts again without it and :func:`serving_mode` carries a one-line note
    (logged as a warning). A running instance or cluster keeps its own settings.

    Args:
        host, port: where the ingress listens.
        address: a Ray cluster to join (None: a new local instance).
        haproxy: HAProxy ingress instead of Serve's Python proxy (several times the
            requests/s; its stats and metrics ports bind all interfaces, see settings).
        throughput_optimized: Serve's throughput-optimised mode.
        access_log: Serve's per-request access log lines (off: less work per request).
        **ray_options: for a new local instance, passed on to
            :func:`~pinsage_ray.ray_utils.init_ray` (``num_cpus``...).

    Raises:
        ValueError: ``host:port`` cannot be listened on, or Serve could not start there.
    """
    import ray
    from ray.exceptions import RayError

    from pinsage_ray.ray_utils import init_ray, ray_console_on, route_ray_loggers

    fresh = not (ray.is_initialized() or address or os.environ.get("RAY_ADDRESS"))
    env = settings.serve_env(haproxy, throughput_optimized)
    wanted = settings.requested_mode(env)
    note = None
    if fresh:
        _check_port_free(host, port)  # a new local instance: fail before starting Ray
        obstacle = settings.haproxy_obstacle() if wanted.haproxy else None
        if obstacle:
            env[settings.HAPROXY_VAR], note = "0", settings.fallback_message(obstacle)
    for attempt in range(2):
        previous = settings.apply_env(env) if fresh else {}
        try:
            init_ray(address, **ray_options)  # the raylet, so every Ray worker, inherits env
        finally:
            settings.restore_env(previous)
        if not ray_console_on():  # Serve's driver loggers, set up on import: to the log file
            route_ray_loggers()
        try:
            serve.start(http_options={"host": host, "port": port},
                        logging_config={"enable_access_log": access_log})
            break
        except RayError as err:  # e.g. the proxy could not bind, or HAProxy failed
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            reason = lines[-1] if lines else str(err)
            if not (fresh and attempt == 0 and env[settings.HAPROXY_VAR] == "1"):
                raise ValueError(f"Serve could not start on {host}:{port}: {reason}") from None
            ray.shutdown()  # HAProxy failed: the same instance without it
            env[settings.HAPROXY_VAR], note = "0", settings.fallback_message(reason)
    mode = settings.effective_mode(root_pid=os.getpid())  # a Ray instance this process started
    if mode.haproxy is None and not fresh:  # joined: the cluster's head may be this machine
        mode = settings.effective_mode()
    missing = [var for var, want, got in (
        (settings.HAPROXY_VAR, wanted.haproxy, mode.haproxy),
        (settings.THROUGHPUT_VAR, wanted.throughput_optimized, mode.throughput_optimized))
        if want and got is False and not (note and var == settings.HAPROXY_VAR)]
    if missing:  # a running instance or cluster started without them
        note = (f"{note + '; ' if note else ''}this Ray instance runs Serve without "
                f"{' and '.join(f'{v}=1' for v in missing)}, which must be in its environment "
                "when it starts (see docs/serving.md)")
    if note is None and mode.haproxy and host in ("127.0.0.1", "localhost", "::1") \
            and sum(1 for n in ray.nodes() if n.get("Alive")) > 1:
        note = (f"HAProxy reaches replicas on other nodes at --host {host}, which they cannot "
                "be reached on; serve with --host 0.0.0.0 (and the port closed outside the "
                "cluster) or --no-haproxy")
    if note:
        logger.warning("%s", note)
    _STATE.update(mode=mode, note=note, own_instance=fresh or _STATE["own_instance"])
    logger.info("Serve ingress on %s:%d: %s", host, port, mode.describe())
    return mode


def serving_mode() -> tuple[settings.ServeMode | None, str | None]:
    """What the last :func:`start_serve` in this process got: ``(mode, fallback note)``."""
    return _STATE["mode"], _STATE["note"]


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

    When :func:`start_serve` started the local Ray instance, ending it is enough.

    What Ray prints meanwhile (the Serve controller's shutdown reaches the driver as a
    ``(raylet)`` line on stdout, whatever ``log_to_driver``) goes to this module's log.
    """
    import contextlib
    import io

    import ray

    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            if not _STATE["own_instance"]:  # a shared instance: leave only our application
                serve.delete(name)
                if not serve.status().applications:
                    serve.shutdown()
            # A Ray instance of our own ends with everything in it (HAProxy included), which
            # skips direct ingress's 30 s drain of each replica.
            ray.shutdown()
            _STATE["own_instance"] = False  # stops the thread that prints Ray's error messages
    except KeyboardInterrupt:  # a second Ctrl-C: skip the rest, Ray exits with the process
        pass
    finally:
        if printed.getvalue().strip():
            logger.info("Ray, while stopping: %s", printed.getvalue().strip())


def serve_summary(url: str, run_dir: str | os.PathLike, num_replicas: int, logs: str) -> str:
    """What ``pinsage-ray serve`` prints once the application answers."""
    mode, _ = serving_mode()
    ingress = (mode.describe() if mode is not None and mode.haproxy is not None
               else "unknown (Serve's controller runs on another machine)")
    return "\n".join([
        f"serving {os.fspath(run_dir)} at {url}/ ({num_replicas} replica(s)); Ctrl-C stops",
        f"  ingress: {ingress}",
        f"  GET  {url}/health",
        f"  POST {url}/related    {{\"item\": ID, \"k\": 10}} or {{\"items\": [ID, ...]}}",
        f"  POST {url}/recommend  {{\"items\": [ID, ...], \"k\": 10}} (a group's items)",
        f"  POST {url}/items      {{\"ids\": [...], \"features\": [[...]], \"groups\": [[...]]}}",
        f"  logs: {logs}",
        "docs: docs/serving.md"])
