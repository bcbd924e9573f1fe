#!/usr/bin/env python
"""Serving benchmark: a bounded closed-loop HTTP load test of ``pinsage_ray.serve`` on 127.0.0.1.

A quickstart run (planted synthetic graph, ``--items`` items, trained and indexed once, kept in
``--cache-dir``) is served by Ray Serve on 127.0.0.1, started as ``pinsage-ray serve`` starts
it (HAProxy ingress, throughput-optimised mode, access logs off; ``--no-haproxy``,
``--no-throughput-optimized`` and ``--api fastapi`` measure the alternatives). A fixed list
of requests (``--bad-share`` malformed, each expecting its 4xx naming the field; of the rest
80% related items of one item, 20% recommendations for a group of 5 items; k = 10; seeded) is
sent by ``C`` client threads in a closed loop (each sends its next request when the answer arrives,
one keep-alive connection each), ``--requests`` requests per setting, for C = 1, 8, 32 and
1, 2 replicas. Every answer is checked against the in-process ``Recommender``'s answer to the
same request (ids and scores exactly, as JSON carries them). In the same run, the in-process
QPS: the same requests called on ``Recommender`` directly, one thread. Then a rollout: while
8 clients send requests, a copy of the run (another directory) replaces the served one.

Metrics: ``serve_requests`` (every request sent, warm-up and rollout included),
``serve_qps_c{C}_{R}rep``, ``serve_p50_ms_c{C}_{R}rep``, ``serve_p99_ms_c{C}_{R}rep``,
``inprocess_qps``, ``serve_vs_inprocess_qps_ratio`` (``serve_qps_c32_1rep`` / in-process
QPS), ``serve_wrong_answers``, ``serve_errors_5xx``, ``serve_errors_other`` (other statuses,
dropped connections), ``serve_malformed_refused_4xx``, ``serve_handle_qps_c32_1rep`` and
``serve_handle_p99_ms_c32_1rep`` (the same requests through the ``DeploymentHandle``
client), ``rollout_requests``, ``rollout_failures``, ``rollout_max_ms``; and CPU time, which a
busy machine does not inflate as it does latency: ``serve_server_cpu_ms_per_request_c{C}_{R}rep``
(every serving process: replicas, the Python proxy, HAProxy and its manager, controller,
raylet, GCS; per role in the JSON) and ``inprocess_cpu_ms_per_request``.
A batched setting (8 clients, 1 replica, ``--batch`` items per ``/related`` request) gives
``serve_related_items_per_s_batch32_c8_1rep`` beside
``inprocess_related_items_per_s_batch32``.

Client, proxy and replicas share the machine's cores: on 2 cores the client threads take a
good part of them, so the numbers are a floor for what a separate client would see.

    python benchmarks/bench_serve.py             # about 3-5 min (+2 min to build the run once)
    python benchmarks/bench_serve.py --quick     # 300 requests per setting, scratch results
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
if "--no-throughput-optimized" not in sys.argv:
    # Read when ray.serve is imported: this process's DeploymentHandle client (the handle
    # rows) routes as a driver on a cluster started with it does, about 2x the calls/s.
    os.environ.setdefault("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from _common import (REPO, add_guard_args, finish_machine, guard_machine,  # noqa: E402
                     load_average, machine_info, metric, publish, setup_logging,
                     usable_cores)
from serve_load import (BAD, CpuMeter, Tally, closed_loop, handle_closed_loop,  # noqa: E402
                        percentile_ms)
from serve_report import markdown  # noqa: E402

NAME = "serve"
APP = "bench-serve"
log = logging.getLogger("bench_serve")


# --------------------------------------------------------------------------- the run
def build_run(cache: Path, items: int, groups: int, seed: int) -> Path:
    """A quickstart workdir's run (graph, model, embeddings, index), built once per size."""
    workdir = cache / f"serve_qs_{items}_{groups}_s{seed}"
    run = workdir / "run"
    if not (run / "index" / "manifest.json").exists():
        log.info("building the served run in %s (pinsage-ray quickstart, once)", workdir)
        subprocess.run([sys.executable, "-m", "pinsage_ray.cli", "quickstart", "--workdir",
                        str(workdir), "--items", str(items), "--groups", str(groups),
                        "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
    return run


#: Malformed requests in the load mix (a share of every setting's requests): each must get
#: its 4xx naming the field, never a 5xx. ``ITEM`` stands for a valid item id.
BAD_REQUESTS = [
    ("/related", {"item": "ITEM", "k": 0}, 400, "k=0"),
    ("/related", {"item": 10**12}, 404, "item id 1000000000000"),
    ("/related", {"item": "not-an-id"}, 400, "item:"),
    ("/related", {"item": "ITEM", "k": "ten"}, 400, "k="),
    ("/recommend", {"items": ["ITEM"] * 2000}, 413, "items: 2000 ids"),
    ("/related", b"{not json", 400, "not JSON"),
]


def make_requests(rec: Any, n: int, seed: int, bad_share: float = 0.0
                  ) -> list[tuple[str, bytes, Any]]:
    """``n`` requests ``(path, JSON body, expected JSON answer)``; repeats after 2,000.

    A ``bad_share`` of them are :data:`BAD_REQUESTS`, whose expected answer is
    ``{"status": 4xx, "error_names": field}``.
    """
    rng = np.random.default_rng(seed)
    ids = rec.ids.tolist()
    out = []
    for _ in range(min(n, 2000)):
        draw = rng.random()
        if draw < bad_share:
            path, body, status, field = BAD_REQUESTS[int(rng.integers(len(BAD_REQUESTS)))]
            item = ids[int(rng.integers(len(ids)))]
            raw = body if isinstance(body, bytes) else json.dumps(body).replace(
                '"ITEM"', json.dumps(item)).encode()
            out.append((path, raw, {BAD: status, "error_names": field}))
        elif draw < bad_share + 0.8 * (1 - bad_share):
            item = ids[int(rng.integers(len(ids)))]
            body = {"item": item, "k": 10}
            expected = {"item": item, "similar": rec.similar_items(item, 10)}
            out.append(("/related", body, expected))
        else:
            group = [ids[int(i)] for i in rng.choice(len(ids), 5, replace=False)]
            body = {"items": group, "k": 10}
            expected = {"group_items": group, "recommended": rec.recommend_for_group(group, 10)}
            out.append(("/recommend", body, expected))
    out = [(p, b if isinstance(b, bytes) else json.dumps(b).encode(), json.loads(json.dumps(e)))
           for p, b, e in out]
    return [out[i % len(out)] for i in range(n)]


def make_batch_requests(rec: Any, n: int, size: int, seed: int) -> list[tuple[str, bytes, Any]]:
    """``n`` requests for the related items of ``size`` items each (one index query)."""
    rng = np.random.default_rng(seed + 1)
    ids = rec.ids.tolist()
    out = []
    for _ in range(n):
        items = [ids[int(i)] for i in rng.choice(len(ids), size, replace=False)]
        results = [{"item": i, "similar": r}
                   for i, r in zip(items, rec.similar_items_batch(items, 10))]
        out.append(("/related", json.dumps({"items": items, "k": 10}).encode(),
                    json.loads(json.dumps({"results": results}))))
    return out


def inprocess_qps(rec: Any, requests: list, repeats: int) -> tuple[float, list[float], float]:
    """Requests/s of the same requests called on the ``Recommender`` itself, one thread;
    ``(median, all repeats, median CPU ms per request)``."""
    calls = []
    for path, body, expected in requests:
        if BAD in expected:  # a malformed request: no in-process call to compare with
            continue
        b = json.loads(body)
        if path == "/related":
            calls.append(lambda b=b: rec.similar_items(b["item"], b["k"]))
        else:
            calls.append(lambda b=b: rec.recommend_for_group(b["items"], b["k"]))
    rates, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        for c in calls:
            c()
        rates.append(len(calls) / (time.perf_counter() - t0))
        cpu.append(1e3 * (time.thread_time() - c0) / len(calls))
    return statistics.median(rates), rates, statistics.median(cpu)


# --------------------------------------------------------------------------- main
def wait_for_quiet(max_load: float, max_wait_s: float) -> list[float] | None:
    """Poll the 1-min load average until it is below ``max_load`` or time runs out."""
    deadline = time.monotonic() + max_wait_s
    while True:
        load = load_average()
        if load is None or load[0] < max_load or time.monotonic() >= deadline:
            return load
        log.info("load average %s >= %.1f; waiting (up to %.0f s more)", load, max_load,
                 deadline - time.monotonic())
        time.sleep(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_benchmark(args: argparse.Namespace, machine: dict) -> tuple[list[dict], dict]:
    from ray import serve

    from pinsage_ray.recommender import Recommender
    from pinsage_ray.serve import deployment, serving_mode, start_serve
    from pinsage_ray.serve.app import stop

    cache = Path(args.cache_dir)
    run = build_run(cache, args.items, args.groups, args.seed)
    rec = Recommender.load(run)
    requests = make_requests(rec, args.requests, args.seed, args.bad_share)
    warmup = requests[: args.warmup]
    inproc, inproc_all, inproc_cpu_ms = inprocess_qps(rec, requests[:2000], args.repeats)
    log.info("in process: %.0f requests/s, %.3f CPU ms each", inproc, inproc_cpu_ms)
    batch_requests = (make_batch_requests(rec, args.requests // 4, args.batch, args.seed)
                      if args.batch else [])
    t0 = time.perf_counter()
    for _, body, _ in batch_requests:
        rec.similar_items_batch(json.loads(body)["items"], 10)
    inproc_batch = len(batch_requests) * args.batch / max(time.perf_counter() - t0, 1e-9)

    # A fresh local instance with pinsage-ray serve's defaults (or what the flags turn off).
    port = free_port()
    start_serve(host="127.0.0.1", port=port, haproxy=not args.no_haproxy,
                throughput_optimized=not args.no_throughput_optimized, num_cpus=2,
                include_dashboard=False, log_to_driver=False, object_store_memory=400 * 2**20)
    mode, note = serving_mode()
    log.info("Serve ingress: %s%s", mode.describe(), f" ({note})" if note else "")
    metrics: list[dict] = []
    settings: dict[str, Any] = {}
    total = {"sent": 0, "wrong": 0, "errors_5xx": 0, "errors_other": 0, "refused": 0}
    examples: list[str] = []

    def count(tally: Tally) -> None:
        for key in ("wrong", "errors_5xx", "errors_other", "refused"):
            total[key] += getattr(tally, key)
        total["sent"] += tally.sent
        examples.extend(tally.examples)

    best = 0.0
    options: dict[str, Any] = {"api": args.api}
    if args.max_ongoing is not None:
        options["max_ongoing_requests"] = args.max_ongoing
    try:
        def measure(key: str, reqs: list, c: int, replicas: int,
                    via_handle: bool = False) -> dict[str, Any]:
            meter = CpuMeter()
            tally, seconds = (handle_closed_loop(APP, reqs, c) if via_handle
                              else closed_loop(port, reqs, c))
            cpu = meter.seconds()
            count(tally)
            per_request = {k: 1e3 * v / max(tally.sent, 1) for k, v in cpu.items()}
            p50, p99 = percentile_ms(tally.latencies, 50), percentile_ms(tally.latencies, 99)
            settings[key] = out = {
                "concurrency": c, "replicas": replicas, "requests": tally.sent,
                "seconds": seconds, "qps": len(tally.latencies) / seconds, "p50_ms": p50,
                "p99_ms": p99, "mean_ms": 1e3 * float(np.mean(tally.latencies)),
                "wrong": tally.wrong, "errors_5xx": tally.errors_5xx,
                "errors_other": tally.errors_other, "refused_as_expected": tally.refused,
                "path": "handle" if via_handle else "http", "cpu_ms_per_request": per_request,
                "server_cpu_ms_per_request": sum(v for k, v in per_request.items()
                                                 if k != "clients"),
                "load_average": load_average()}
            log.info("%s: %.0f QPS, p50 %.1f ms, p99 %.1f ms, wrong %d, 5xx %d, CPU ms per "
                     "request %s", key, out["qps"], p50, p99, tally.wrong, tally.errors_5xx,
                     {k: round(v, 2) for k, v in per_request.items()})
            return out

        for replicas in args.replicas:
            serve.run(deployment(run, num_replicas=replicas, **options), name=APP)
            count(closed_loop(port, warmup, max(args.concurrency))[0])
            for c in args.concurrency:
                key = f"c{c}_{replicas}rep"
                out = measure(key, requests, c, replicas)
                best = max(best, out["qps"])
                metrics += [metric(f"serve_qps_{key}", out["qps"], "requests/s"),
                            metric(f"serve_p50_ms_{key}", out["p50_ms"], "ms", False),
                            metric(f"serve_p99_ms_{key}", out["p99_ms"], "ms", False),
                            metric(f"serve_server_cpu_ms_per_request_{key}",
                                   out["server_cpu_ms_per_request"], "CPU ms", False)]
            if replicas == 1 and 32 in args.concurrency:  # Python callers: no HTTP
                key = "c32_1rep"
                out = measure(f"handle_{key}", requests, 32, 1, via_handle=True)
                metrics += [metric(f"serve_handle_qps_{key}", out["qps"], "requests/s"),
                            metric(f"serve_handle_p99_ms_{key}", out["p99_ms"], "ms", False),
                            metric(f"serve_handle_server_cpu_ms_per_request_{key}",
                                   out["server_cpu_ms_per_request"], "CPU ms", False)]
            if replicas == 1 and args.batch:  # many related-item lookups in one request
                key = f"batch{args.batch}_c8_1rep"
                out = measure(key, batch_requests, 8, 1)
                metrics += [metric(f"serve_related_items_per_s_{key}",
                                   out["qps"] * args.batch, "items/s"),
                            metric(f"serve_p99_ms_{key}", out["p99_ms"], "ms", False)]
        rollout = (rollout_run(port, run, requests, max(args.replicas), deployment, serve,
                               options) if not args.no_rollout else None)
        if rollout:
            count(rollout["tally"])
    finally:
        stop(APP)  # our own Ray instance: ended whole, without Serve's 30 s replica drain
    metrics += [
        metric("serve_requests", total["sent"], "requests"),
        metric("inprocess_qps", inproc, "requests/s"),
        metric("inprocess_cpu_ms_per_request", inproc_cpu_ms, "CPU ms", False),
        *([metric(f"inprocess_related_items_per_s_batch{args.batch}", inproc_batch,
                  "items/s")] if args.batch else []),
        metric("serve_vs_inprocess_qps_ratio",
               settings.get("c32_1rep", {}).get("qps", best) / inproc, "ratio"),
        metric("serve_wrong_answers", total["wrong"], "answers", False),
        metric("serve_errors_5xx", total["errors_5xx"], "responses", False),
        metric("serve_errors_other", total["errors_other"], "responses", False),
        metric("serve_malformed_refused_4xx", total["refused"], "responses"),
        *([metric("rollout_requests", rollout["tally"].sent, "requests"),
           metric("rollout_failures", rollout["failures"], "requests", False),
           metric("rollout_max_ms", rollout["max_ms"], "ms", False)] if rollout else []),
    ]
    extra = {"args": vars(args), "run_dir": str(run), "items": len(rec.ids),
             "index_ef": rec.index.ef, "settings": settings, "inprocess_qps_repeats": inproc_all,
             "serve_mode": {"haproxy": mode.haproxy,
                            "throughput_optimized": mode.throughput_optimized,
                            "fallback_note": note, "access_log": False},
             "rollout": ({k: v for k, v in rollout.items() if k != "tally"} if rollout
                         else None),
             "failure_examples": examples[:10]}
    return metrics, extra


def rollout_run(port: int, run: Path, requests: list, replicas: int, deployment: Any,
                serve: Any, options: dict[str, Any]) -> dict[str, Any]:
    """Roll a copy of the run out while 8 clients send requests; count what failed."""
    copy = run.parent / "run_rollout_copy"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("logs"))
    stop = threading.Event()
    box: dict[str, Any] = {}
    loader = threading.Thread(target=lambda: box.update(
        result=closed_loop(port, requests, 8, until=stop)))
    loader.start()
    time.sleep(1.0)
    t0 = time.perf_counter()
    serve.run(deployment(copy, num_replicas=replicas, **options), name=APP)
    rollout_s = time.perf_counter() - t0
    time.sleep(1.0)
    stop.set()
    loader.join()
    tally, seconds = box["result"]
    failures = tally.wrong + tally.errors_5xx + tally.errors_other
    log.info("rollout: %d requests in %.1f s (rollout %.1f s), %d failed, max %.0f ms, by run %s",
             tally.sent, seconds, rollout_s, failures, 1e3 * max(tally.latencies), tally.runs)
    shutil.rmtree(copy, ignore_errors=True)
    return {"tally": tally, "failures": failures, "max_ms": 1e3 * max(tally.latencies),
            "rollout_seconds": rollout_s, "answers_by_run": tally.runs,
            "requests": tally.sent}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--requests", type=int, default=None,
                   help="requests per setting (default 2000; 300 with --quick)")
    p.add_argument("--warmup", type=int, default=200, help="untimed requests per replica count")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batch", type=int, default=32,
                   help="items per request of the batched related-items setting (8 clients, "
                   "1 replica, a quarter of --requests); 0: skip it")
    p.add_argument("--no-haproxy", action="store_true",
                   help="Serve's Python proxy (default: HAProxy, as pinsage-ray serve)")
    p.add_argument("--no-throughput-optimized", action="store_true",
                   help="Serve's default mode (default: RAY_SERVE_THROUGHPUT_OPTIMIZED=1)")
    p.add_argument("--api", choices=["plain", "fastapi"], default="plain",
                   help="the replica's HTTP routing: hand-written (default) or FastAPI")
    p.add_argument("--bad-share", type=float, default=0.05,
                   help="share of malformed requests in the mix (each must get its 4xx)")
    p.add_argument("--no-rollout", action="store_true", help="skip the rollout under load")
    p.add_argument("--max-ongoing", type=int, default=None,
                   help="max_ongoing_requests per replica (default: deployment()'s)")
    p.add_argument("--items", type=int, default=5000, help="items of the served run")
    p.add_argument("--groups", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="in-process QPS repeats (median)")
    p.add_argument("--cache-dir", default=str(REPO / ".bench_cache"))
    p.add_argument("--max-load", type=float, default=None,
                   help="wait for the 1-min load average to fall below this before starting "
                        "(default: the usable core count, the guard's limit)")
    p.add_argument("--max-wait", type=float, default=600, help="seconds to wait for that")
    p.add_argument("--quick", action="store_true",
                   help="300 requests per setting, no waiting; results under .bench_cache/quick")
    add_guard_args(p)
    args = p.parse_args(argv)
    if args.max_load is None:
        args.max_load = float(usable_cores())
    if args.quick:
        args.warmup, args.max_wait = 50, 0
    if args.requests is None:
        args.requests = 300 if args.quick else 2000
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    t0 = time.perf_counter()
    run = build_run(Path(args.cache_dir), args.items, args.groups, args.seed)  # before timing
    load = wait_for_quiet(args.max_load, args.max_wait)
    machine = guard_machine(machine_info(), args, committed=not args.quick)
    machine["waited_for_load_below"] = args.max_load
    machine["load_average_when_started"] = load
    log.info("serving %s; load average %s", run, load)
    metrics, extra = run_benchmark(args, machine)
    extra["total_seconds"] = time.perf_counter() - t0
    finish_machine(machine)  # the end-of-run load, for the note in the markdown
    publish(NAME, metrics, machine, extra, markdown(metrics, machine, extra),
            REPO / ".bench_cache" / "quick" if args.quick else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
