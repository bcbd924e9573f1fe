"""The ``serve`` section of ``benchmarks/RESULTS.md``: every setting's QPS, latency and
server CPU per request, the headline metrics against the issue's targets, the rollout and
what the numbers say about capacity. Rendered only from the results JSON.
"""

from __future__ import annotations

from pathlib import Path

from _common import load_note, markdown_table, metrics_table


def markdown(metrics: list[dict], machine: dict, extra: dict) -> str:
    rows = []
    for key, s in extra["settings"].items():
        load = s.get("load_average") or ["n/a"]
        cpu = s["cpu_ms_per_request"]
        per = extra["args"]["batch"] if key.startswith("batch") else 1
        rows.append([s.get("path", "http"), s["replicas"], s["concurrency"], per, s["requests"],
                     f"{s['qps']:.0f}", f"{s['p50_ms']:.1f}", f"{s['p99_ms']:.1f}", s["wrong"],
                     s["errors_5xx"], f"{s['server_cpu_ms_per_request']:.2f}",
                     f"{cpu['replicas']:.2f} / {cpu['proxy'] + cpu['haproxy']:.2f} / "
                     f"{cpu['controller'] + cpu['other_ray']:.2f} / {cpu['clients']:.2f}",
                     load[0]])
    by_name = {m["name"]: m for m in metrics}
    batch = extra["args"]["batch"]
    targets = {"serve_requests": (10_000, ">= 10,000"), "serve_wrong_answers": (0, "0"),
               "serve_errors_5xx": (0, "0"), "rollout_failures": (0, "0"),
               "serve_vs_inprocess_qps_ratio": (0.4, ">= 0.4"),
               "serve_p99_ms_c8_1rep": (20, "<= 20"),
               "serve_server_cpu_ms_per_request_c32_1rep": (1.0, "<= 1.0")}
    headline = [by_name[n] for n in ("serve_requests", "serve_qps_c32_1rep", "serve_qps_c32_2rep",
                                     "serve_p99_ms_c32_1rep", "serve_p99_ms_c32_2rep",
                                     "serve_server_cpu_ms_per_request_c32_1rep",
                                     "serve_p99_ms_c8_1rep", "serve_handle_qps_c32_1rep",
                                     "serve_handle_p99_ms_c32_1rep", "inprocess_qps",
                                     "inprocess_cpu_ms_per_request",
                                     "serve_vs_inprocess_qps_ratio",
                                     f"serve_related_items_per_s_batch{batch}_c8_1rep",
                                     f"inprocess_related_items_per_s_batch{batch}",
                                     "serve_wrong_answers", "serve_errors_5xx",
                                     "serve_errors_other", "serve_malformed_refused_4xx",
                                     "rollout_requests",
                                     "rollout_failures", "rollout_max_ms") if n in by_name]
    ro = extra["rollout"]
    mode = extra.get("serve_mode") or {}
    reading = []
    c32 = extra["settings"].get("c32_1rep")
    if c32 and "inprocess_cpu_ms_per_request" in by_name:
        cpu = c32["cpu_ms_per_request"]
        per = c32["server_cpu_ms_per_request"]
        reading.append(
            f"At 32 clients on one replica a request costs {per:.2f} CPU ms across every "
            f"serving process (replica {cpu['replicas']:.2f}, Python proxy {cpu['proxy']:.2f}, "
            f"HAProxy {cpu['haproxy']:.2f}, controller and the rest of Ray "
            f"{cpu['controller'] + cpu['other_ray']:.2f}) against "
            f"{by_name['inprocess_cpu_ms_per_request']['value']:.2f} ms for the same call in "
            f"process. Capacity: about {1e3 / per:.0f} requests/s per core of serving "
            "processes (docs/serving.md sizes replicas from it).")
    single = extra["settings"].get("c8_1rep")
    batched = extra["settings"].get(f"batch{batch}_c8_1rep")
    if single and batched:
        reading.append(f"A `/related` request of {batch} items answers "
                       f"{batched['qps'] * batch / single['qps']:.0f}x more related-item lookups "
                       "per second than single-item requests (8 clients, one replica).")
    waited = machine.get("waited_for_load_below")
    when = machine.get("load_average_when_started")
    if waited is not None and when and when[0] >= waited:
        reading.append(f"The script waited up to {extra['args']['max_wait']:.0f} s for the "
                       f"1-min load average to fall below {waited:g}; it was {when[0]:g} when "
                       "the load test started.")
    return "\n\n".join([
        "## Online serving (`bench_serve.py`)",
        f"Ray Serve on 127.0.0.1 serving a quickstart run ({extra['items']} items, index "
        f"ef={extra['index_ef']}); ingress: HAProxy {mode.get('haproxy')}, throughput-optimised "
        f"{mode.get('throughput_optimized')}, access log off; closed loop, "
        f"{extra['args']['requests']} requests per setting ({extra['args']['bad_share']:.0%} "
        "malformed, each expecting its 4xx; of the rest 80% related items of one item, 20% a "
        "5-item group's recommendations, k = 10), every answer compared with the in-process "
        "`Recommender`. `handle`: the same requests through the DeploymentHandle client. "
        "Client threads and the serving processes share the machine's cores.",
        markdown_table(["path", "replicas", "clients", "items per request", "requests", "QPS",
                        "p50 ms", "p99 ms", "wrong", "5xx", "server CPU ms per request",
                        "of which replicas / proxy + HAProxy / rest of Ray; clients",
                        "load (1 min) after"], rows),
        metrics_table(headline, targets),
        *([f"Rollout of another run directory under load (8 clients): {ro['requests']} "
           f"requests, {ro['rollout_seconds']:.1f} s from `serve.run` to rolled out, answers "
           f"by run { {Path(k).name: v for k, v in ro['answers_by_run'].items()} }."]
          if ro else []),
        *([" ".join(reading)] if reading else []),
        f"Machine: {machine.get('cpu_model')}, {machine.get('cpus_usable')} usable cores; "
        f"{load_note(machine)}"])
