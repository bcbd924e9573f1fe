#!/usr/bin/env python
"""Random-walk throughput: the in-process walker, the sharded Ray service, importance neighbours.

A *hop* is one edge traversal; a walk step (item -> group -> item) is two hops, so a request of
``W`` walkers of length ``L`` is ``2 * W * L`` hops. Measured, each as the median of
``--repeats`` timed runs after one untimed warm-up:

* in-process (``LocalWalker``, numpy pinned to one thread): hops/s of ``random_walks`` over
  ``--walkers`` random seed items (one walk each);
* the sharded service (``ShardedGraph`` on a local Ray with ``num_cpus=2``) with each of
  ``--shards``: the same request, hops/s and the ratio to in-process (same run);
* ``importance_neighbors`` seeds/s, in-process and with 2 shards, at the paper-like setting
  (100 walks per seed, length 2, restart 0.5, T = 50) and a light one (10 walks, T = 10);

on the synthetic graph (``--items`` / ``--groups`` / ``--edges-target``; generated once into
``--cache-dir``) and on Gowalla's training split when ``--data-dir``/gowalla exists.

Writes ``benchmarks/results/walks.json`` and the ``walks`` section of ``benchmarks/RESULTS.md``
(``--quick``: a small graph, written under the cache dir instead, to check the script).

    python benchmarks/bench_walks.py --quick
    nohup /usr/bin/time -v python benchmarks/bench_walks.py > walks.log 2>&1 &
"""

from __future__ import annotations

import os

# "Per core": pin every BLAS/OpenMP pool to one thread before numpy is imported. Ray workers
# inherit the environment, so the shard actors are single-threaded too.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # a busy shared box: no OOM kills
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from _common import (publish, RESULTS_DIR, add_guard_args, finish_machine,  # noqa: E402
                     guard_machine, machine_info, median_of, metric, peak_rss_bytes,
                     update_results_md, write_results, setup_logging)
from _graphs import (add_graph_args, gowalla_graph, mean_group_size_for,  # noqa: E402
                     synthetic_graph)
from _memory import TreeMemory, vm_hwm  # noqa: E402
from walks_report import graph_lines, markdown  # noqa: E402

NAME = "walks"
log = logging.getLogger("bench_walks")

PAPER = dict(num_walks=100, walk_length=2, restart_prob=0.5, top_t=50)
LIGHT = dict(num_walks=10, walk_length=2, restart_prob=0.5, top_t=10)

# --------------------------------------------------------------------------- measurements
def time_walks(service: Any, seeds: np.ndarray, walk_length: int, repeats: int) -> dict:
    """Median seconds of ``random_walks(seeds, num_walks=1)``; hops/s; process CPU per run."""
    cpu: list[float] = []
    out: dict[str, np.ndarray] = {}

    def run() -> None:
        c0 = time.process_time()
        out["paths"] = service.random_walks(seeds, num_walks=1, walk_length=walk_length, seed=1)
        cpu.append(time.process_time() - c0)

    med, times = median_of(run, repeats, warmup=1)
    hops = 2 * len(seeds) * walk_length
    return {"seconds_median": med, "seconds": times, "hops": hops, "hops_per_s": hops / med,
            "driver_cpu_s": cpu[1:], "paths": out["paths"]}


def time_importance(service: Any, seeds: np.ndarray, setting: dict, repeats: int) -> dict:
    out: dict[str, Any] = {}

    def run() -> None:
        out["nb"] = service.importance_neighbors(seeds, seed=1, **setting)

    med, times = median_of(run, repeats, warmup=1)
    return {"seconds_median": med, "seconds": times, "seeds": len(seeds),
            "seeds_per_s": len(seeds) / med,
            "hops_per_s": 2 * len(seeds) * setting["num_walks"] * setting["walk_length"] / med,
            "nb": out["nb"]}


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("paths", "nb")}


def bench_graph(label: str, suffix: str, graph: Path, args: argparse.Namespace,
                metrics: list, extra: dict) -> None:
    """All measurements on one graph; metric names get ``suffix`` (e.g. '_gowalla')."""
    from pinsage_ray import GraphStore, LocalWalker
    from pinsage_ray.sampling.service import ShardedGraph

    rng = np.random.default_rng(12345)
    local = LocalWalker(graph)
    n = local.num_items
    walk_seeds = rng.integers(0, n, args.walkers, dtype=np.int64)
    imp_seeds = {name: rng.choice(n, k, replace=k > n).astype(np.int64)
                 for name, k in (("paper", args.paper_seeds), ("light", args.light_seeds))}
    settings = {"paper": PAPER, "light": LIGHT}
    ex: dict[str, Any] = {"graph_dir": str(graph), "num_items": n,
                          "num_edges": GraphStore(graph).num_edges,
                          "walkers": args.walkers, "walk_length": args.walk_length,
                          "importance_seeds": {k: len(v) for k, v in imp_seeds.items()},
                          "importance_settings": settings}
    extra[label] = ex

    # ---- in-process
    log.info("[%s] in-process random_walks: %d walkers x %d steps", label, args.walkers,
             args.walk_length)
    r = time_walks(local, walk_seeds, args.walk_length, args.repeats)
    ref_paths = r["paths"]
    base = r["hops_per_s"]
    ex["inprocess_walks"] = _strip(r)
    cpu_ratio = float(np.median(r["driver_cpu_s"])) / r["seconds_median"]
    ex["inprocess_walks"]["cpu_over_wall"] = cpu_ratio
    log.info("[%s]   %.2fM hops/s (median %.3f s of %s; cpu/wall %.2f)", label, base / 1e6,
             r["seconds_median"], [round(t, 3) for t in r["seconds"]], cpu_ratio)
    metrics.append(metric(f"walk_hops_per_s_inprocess{suffix}", base, "hops/s"))
    metrics.append(metric(f"walk_hops_per_cpu_s_inprocess{suffix}",
                          r["hops"] / float(np.median(r["driver_cpu_s"])), "hops/cpu-s"))
    ref_nb = {}
    for name, setting in settings.items():
        log.info("[%s] in-process importance_neighbors %s: %d seeds", label, name,
                 len(imp_seeds[name]))
        r = time_importance(local, imp_seeds[name], setting, args.repeats)
        ref_nb[name] = r["nb"]
        ex[f"inprocess_importance_{name}"] = _strip(r)
        log.info("[%s]   %.0f seeds/s (median %.3f s)", label, r["seeds_per_s"],
                 r["seconds_median"])
        metrics.append(metric(f"importance_neighbors_seeds_per_s_{name}{suffix}",
                              r["seeds_per_s"], "seeds/s"))
    del local
    gc.collect()

    # ---- sharded
    sharded_metrics, ratio_metrics, imp_metrics = [], [], []
    for s in args.shards:
        log.info("[%s] starting %d shard(s)", label, s)
        t0 = time.perf_counter()
        svc = ShardedGraph(graph, s)
        start_s = time.perf_counter() - t0
        try:
            r = time_walks(svc, walk_seeds, args.walk_length, args.repeats)
            same = bool(np.array_equal(r["paths"], ref_paths))
            ratio = r["hops_per_s"] / base
            ex[f"sharded_{s}_walks"] = {**_strip(r), "start_s": start_s,
                                        "identical_to_inprocess": same, "ratio": ratio}
            log.info("[%s]   %d shards: %.2fM hops/s, ratio %.2f, identical %s (start %.1f s)",
                     label, s, r["hops_per_s"] / 1e6, ratio, same, start_s)
            sharded_metrics.append(metric(f"walk_hops_per_s_sharded_{s}{suffix}",
                                          r["hops_per_s"], "hops/s"))
            ratio_metrics.append(metric(f"sharded_{s}_vs_inprocess_ratio{suffix}", ratio,
                                        "ratio"))
            if s == 2:
                for name, setting in settings.items():
                    r = time_importance(svc, imp_seeds[name], setting, args.repeats)
                    same = bool(np.array_equal(r["nb"].ids, ref_nb[name].ids)
                                and np.array_equal(r["nb"].counts, ref_nb[name].counts))
                    ex[f"sharded_2_importance_{name}"] = {**_strip(r),
                                                          "identical_to_inprocess": same}
                    log.info("[%s]   2 shards importance %s: %.0f seeds/s, identical %s", label,
                             name, r["seeds_per_s"], same)
                    imp_metrics.append(metric(
                        f"importance_neighbors_seeds_per_s_{name}_sharded_2{suffix}",
                        r["seeds_per_s"], "seeds/s"))
            ex[f"sharded_{s}_actor_peak_rss_bytes"] = [vm_hwm(i["pid"]) for i in svc.shard_info]
        finally:
            svc.shutdown()
            del svc
            gc.collect()
            time.sleep(1.0)  # let the killed actors' memory go before the next start
    metrics.extend(sharded_metrics + ratio_metrics + imp_metrics)
    del ref_paths


# --------------------------------------------------------------------------- re-render
def _command(a: dict) -> str:
    """The command line, from the stored arguments (non-default ones only)."""
    defaults = vars(parse_args([]))
    parts = ["python benchmarks/bench_walks.py"]
    if a.get("quick"):
        parts.append("--quick")
    for key in ("items", "groups", "edges_target", "seed", "walkers", "walk_length", "repeats",
                "shards", "paper_seeds", "light_seeds", "object_store_gb"):
        if not a.get("quick") and a.get(key) != defaults[key]:
            val = a[key]
            parts.append(f"--{key.replace('_', '-')} "
                         + (" ".join(map(str, val)) if isinstance(val, list) else str(val)))
    return " ".join(parts)


def render_only(args: argparse.Namespace) -> int:
    """Re-render the RESULTS.md section from the last results JSON (no measuring)."""
    results_dir = Path(args.cache_dir) / "quick" if args.quick else None
    path = (results_dir or RESULTS_DIR) / f"{NAME}.json"
    doc = json.loads(path.read_text())
    if results_dir is None and "guard" not in doc["machine"]:
        sys.exit(f"{path} was measured without guard_machine (its machine has no 'guard' "
                 "record): rerun the benchmark instead of re-rendering it")
    extra = doc.get("extra", {})
    if args.note is not None:
        extra["note"] = args.note
    extra.setdefault("graph_lines", graph_lines(extra))
    md = markdown(doc["metrics"], doc["machine"], extra,
                  extra.get("command") or _command(extra["args"]))
    write_results(NAME, doc["metrics"], doc["machine"], extra, results_dir=results_dir)
    md_path = update_results_md(NAME, md, path=(results_dir / "RESULTS.md") if results_dir
                                else None)
    print(md)
    print(f"\nre-rendered {md_path} from {path}")
    return 0


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--groups", type=int, default=1_000_000)
    p.add_argument("--edges-target", type=int, default=20_000_000,
                   help="edges wanted; SyntheticConfig.mean_group_size = edges / groups")
    p.add_argument("--seed", type=int, default=0, help="synthetic graph seed")
    p.add_argument("--walkers", type=int, default=1_000_000)
    p.add_argument("--walk-length", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--paper-seeds", type=int, default=20_000)
    p.add_argument("--light-seeds", type=int, default=100_000)
    add_graph_args(p, data_help="folder holding gowalla/",
                   cache_help="generated graphs are kept here between runs")
    p.add_argument("--object-store-gb", type=float, default=2.0)
    p.add_argument("--no-gowalla", action="store_true")
    p.add_argument("--note", default=None,
                   help="a sentence for RESULTS.md on what else the machine was doing")
    p.add_argument("--render-only", action="store_true",
                   help="re-render RESULTS.md from the last results JSON (with --note)")
    p.add_argument("--quick", action="store_true",
                   help="small graph and batches; results go under the cache dir, not "
                        "benchmarks/results or RESULTS.md")
    add_guard_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.groups, args.edges_target = 20_000, 20_000, 200_000
        args.walkers, args.paper_seeds, args.light_seeds = 100_000, 2_000, 10_000
    if args.repeats < 1 or args.walkers < 1 or args.walk_length < 1:
        p.error("--repeats, --walkers and --walk-length must be >= 1")
    if 2 not in args.shards:
        args.shards = sorted(set(args.shards) | {2})  # the headline ratio
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    if args.render_only:
        return render_only(args)
    machine = guard_machine(machine_info(), args, committed=not args.quick)
    tree = TreeMemory(interval=1.0)
    cache = Path(args.cache_dir)
    t_start = time.perf_counter()

    syn_graph, syn_info = synthetic_graph(
        cache / f"synthetic_i{args.items}_g{args.groups}_e{args.edges_target}_s{args.seed}",
        items=args.items, groups=args.groups, feature_dim=0, seed=args.seed,
        mean_group_size=mean_group_size_for(args.edges_target, args.groups, args.items))
    gow = None if args.no_gowalla else gowalla_graph(cache, args.data_dir)
    gow_graph = None
    if gow is not None:
        gow_graph, gow_info = gow
    else:
        log.info("Gowalla not found under %s (or --no-gowalla): its metrics are omitted",
                 args.data_dir)

    from pinsage_ray import init_ray

    import ray

    metrics: list[dict] = []
    extra: dict[str, Any] = {"args": vars(args), "notes": [], "note": args.note,
                             "command": " ".join(["python benchmarks/bench_walks.py",
                                                  *sys.argv[1:]] if argv is None else
                                                 ["python benchmarks/bench_walks.py", *argv])}
    init_ray(num_cpus=2, object_store_memory=int(args.object_store_gb * 2**30))
    try:
        bench_graph("synthetic", "", syn_graph, args, metrics, extra)
        if gow_graph is not None:
            bench_graph("gowalla", "_gowalla", gow_graph, args, metrics, extra)
        tree.sample()
    finally:
        ray.shutdown()
    tree_peak = tree.stop()
    extra["memory"] = {"driver_peak_rss_bytes": peak_rss_bytes()["self"],
                       "tree_peak_rss_bytes": tree_peak,
                       "synthetic_build": syn_info,
                       "gowalla_build": gow_info if gow_graph is not None else None}
    extra["total_seconds"] = time.perf_counter() - t_start

    # Headline metrics first, in the order.
    head = ["walk_hops_per_s_inprocess", "walk_hops_per_s_sharded_2",
            "sharded_2_vs_inprocess_ratio", "importance_neighbors_seeds_per_s_paper_gowalla"]
    metrics.sort(key=lambda m: head.index(m["name"]) if m["name"] in head else len(head))

    if args.edges_target < 20_000_000:
        extra["notes"].append(f"Note: synthetic graph smaller than the issue's 20M edges "
                              f"(--edges-target {args.edges_target:,}); the in-process target "
                              "is stated for 20M edges.")
    finish_machine(machine)
    extra["graph_lines"] = graph_lines(extra)
    md = markdown(metrics, machine, extra, extra["command"])
    publish(NAME, metrics, machine, extra, md, cache / "quick" if args.quick else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
