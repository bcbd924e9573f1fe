#!/usr/bin/env python
"""Training throughput: examples/s per worker, producer-consumer overlap, epoch time, memory.

A *training example* is one (query, positive, negatives) triple: one query of a minibatch
(``batch_size`` per batch per worker). Every run calls :func:`pinsage_ray.training.train` with
a fresh run directory at hidden 64, T = 10 and a fixed number of batches per epoch, on a local
Ray started once with ``num_cpus=2``, in three configurations per graph:

* 1 worker, ``prefetch=4`` (producer actor builds batches ahead of the trainer);
* 1 worker, ``prefetch=0`` (strictly sequential: request, wait, train);
* 2 workers, ``prefetch=4`` (data parallel; on 2 cores the workers share the CPUs).

Each configuration's number is the median over the epochs >= 2 of ``--repeats`` runs
(epoch 1 includes warm-up, and hard negatives only start in epoch 2 by the curriculum), as
reported by the training loop (``TrainResult.history``: ``examples_per_s`` of rank 0,
``epoch_seconds``, ``wait_fraction``). The producer-consumer speedup is the ratio of the
1-worker ``prefetch=4`` and ``prefetch=0`` rates of the same benchmark run (runs interleaved).
Peak memory is the summed RSS of this process and all its descendants (Ray's GCS, raylet,
Train workers and producer actors), sampled every 0.2 s during each run.

Afterwards, in this process (no Ray, torch and numpy on one thread), one training step is
broken down (batch building vs forward vs loss vs backward + optimiser) on every graph, and
cProfile'd on MovieLens-100K (``--profile-dataset``).

Graphs: MovieLens-100K (``--data-dir``/ml-100k) and Gowalla's training split
(``--data-dir``/gowalla), each skipped when absent, and a synthetic planted-community graph;
all prepared once into ``--cache-dir``.

Writes ``benchmarks/results/train.json`` and the ``train`` section of ``benchmarks/RESULTS.md``
(``--quick``: a tiny synthetic graph only, written under the cache dir, to check the script).

    python benchmarks/bench_train.py --quick
    nohup python benchmarks/bench_train.py > train.log 2>&1 &
"""

from __future__ import annotations

import os

# numpy/BLAS on one thread (producers and the profile are "per core"); Ray workers inherit it.
# The training loop sets torch's own thread count itself (see the report).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # a busy shared box: no OOM kills
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")  # report() polls faster
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import argparse  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import (publish, add_guard_args, finish_machine, guard_machine,  # noqa: E402
                     machine_info, metric, peak_rss_bytes, setup_logging)
from _graphs import (add_graph_args, gowalla_graph, movielens_graph,  # noqa: E402
                     synthetic_graph)
from _memory import TreeMemory  # noqa: E402
from train_report import graph_line, markdown  # noqa: E402
from train_steps import (build_breakdown, neighbor_table_seconds, step_breakdown,  # noqa: E402
                         train_config)


NAME = "train"
log = logging.getLogger("bench_train")

#: (label, metric suffix) in report order; synthetic carries the unsuffixed headline metrics.
DATASETS = (("synthetic", ""), ("movielens", "_movielens"), ("gowalla", "_gowalla"))
#: (workers, prefetch) per run; the first two give the producer-consumer speedup.
CONFIGS = ((1, 4), (1, 0), (2, 4))


# --------------------------------------------------------------------------- graphs
def graphs(args: argparse.Namespace) -> dict[str, Path]:
    """The graphs to measure, prepared once into ``--cache-dir`` (``_graphs``)."""
    cache = Path(args.cache_dir)
    out = {"synthetic": synthetic_graph(
        cache / (f"train_synthetic_i{args.items}_g{args.groups}"
                 f"_s{args.group_size:g}_f{args.feature_dim}_seed0"),
        items=args.items, groups=args.groups, mean_group_size=args.group_size,
        feature_dim=args.feature_dim, seed=0)[0]}
    if args.quick:
        return out
    ml = movielens_graph(cache, args.data_dir)
    if ml is not None:
        out["movielens"] = ml[0]
    else:
        log.info("MovieLens-100K not found under %s: skipped", args.data_dir)
    gow = gowalla_graph(cache, args.data_dir)
    if gow is not None:
        out["gowalla"] = gow[0]
    else:
        log.info("Gowalla not found under %s: skipped", args.data_dir)
    return out


# --------------------------------------------------------------------------- Ray runs
def one_run(graph: Path, args: argparse.Namespace, workers: int, prefetch: int,
            tree: TreeMemory, runs_root: Path) -> dict:
    from pinsage_ray.training import train

    cfg = train_config(args, workers, prefetch)
    run_dir = Path(tempfile.mkdtemp(prefix=f"w{workers}_p{prefetch}_", dir=runs_root))
    gc.collect()
    tree.reset()
    base = tree.sample()
    t0 = time.perf_counter()
    try:
        res = train(graph, run_dir, cfg)
        wall = time.perf_counter() - t0
        tree.sample()
        peak, procs = tree.peak, tree.peak_processes
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    keys = ("epoch", "examples_per_s", "epoch_seconds", "wait_fraction", "loss",
            "hard_negatives")
    hist = [{k: m.get(k) for k in keys} for m in res.history]
    return {"workers": workers, "prefetch": prefetch, "history": hist, "wall_s": wall,
            "tree_rss_before_bytes": base, "tree_peak_rss_bytes": peak,
            "tree_peak_processes": procs}


def _steady(runs: list[dict], key: str) -> list[float]:
    """Values of ``key`` over the epochs >= 2 of all runs (epoch 1 when there is no other)."""
    vals = [m[key] for r in runs for m in r["history"] if m["epoch"] >= 2]
    return vals or [m[key] for r in runs for m in r["history"]]


def summarise(runs: list[dict], table_s: float | None, batch_examples: int) -> dict:
    rate = _steady(runs, "examples_per_s")
    epoch_s = _steady(runs, "epoch_seconds")
    wait = _steady(runs, "wait_fraction")
    med_epoch = statistics.median(epoch_s)
    out = {"examples_per_s_per_worker": statistics.median(rate),
           "examples_per_s_samples": rate, "epoch_seconds": med_epoch,
           "epoch_seconds_samples": epoch_s, "wait_fraction": statistics.median(wait),
           "epoch1_examples_per_s": statistics.median(
               [m["examples_per_s"] for r in runs for m in r["history"] if m["epoch"] == 1]),
           "peak_rss_bytes": max(r["tree_peak_rss_bytes"] for r in runs),
           "wall_s": [r["wall_s"] for r in runs]}
    if table_s is not None and med_epoch > table_s:
        # The per-epoch neighbourhood table (one walk request over all items) is built by the
        # producer when the epoch's first batch is requested, so it is on the critical path.
        out["examples_per_s_excl_table_estimate"] = batch_examples / (med_epoch - table_s)
    return out


def ray_phase(paths: dict[str, Path], args: argparse.Namespace, tree: TreeMemory,
              table_s: dict[str, float]) -> dict[str, Any]:
    from pinsage_ray import init_ray

    import ray

    runs_root = Path(args.cache_dir) / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    tree.reset()
    t0 = time.perf_counter()
    init_ray(num_cpus=2, object_store_memory=int(args.object_store_gb * 2**30))
    init_s = time.perf_counter() - t0
    time.sleep(2.0)
    idle = tree.sample()
    try:
        for label, _ in DATASETS:
            if label not in paths:
                continue
            per_cfg: dict[tuple[int, int], list[dict]] = {c: [] for c in CONFIGS}
            for rep in range(args.repeats):  # interleaved: drift hits every config alike
                for workers, prefetch in CONFIGS:
                    log.info("[%s] repeat %d/%d: %d worker(s), prefetch %d", label, rep + 1,
                             args.repeats, workers, prefetch)
                    r = one_run(paths[label], args, workers, prefetch, tree, runs_root)
                    log.info("[%s]   %s; wall %.1f s, tree peak %.0f MB", label,
                             ", ".join(f"e{m['epoch']}: {m['examples_per_s']:.0f}/s "
                                       f"{m['epoch_seconds']:.2f}s wait "
                                       f"{m['wait_fraction']:.0%}" for m in r["history"]),
                             r["wall_s"], r["tree_peak_rss_bytes"] / 2**20)
                    per_cfg[(workers, prefetch)].append(r)
            batch_examples = args.batches * args.batch_size
            summ = {f"w{w}_p{p}": summarise(rs, table_s.get(label), batch_examples)
                    for (w, p), rs in per_cfg.items()}
            seq = summ["w1_p0"]["examples_per_s_per_worker"]
            results[label] = {
                "configs": summ,
                "runs": {f"w{w}_p{p}": rs for (w, p), rs in per_cfg.items()},
                "producer_consumer_speedup":
                    summ["w1_p4"]["examples_per_s_per_worker"] / seq if seq else float("nan"),
            }
    finally:
        ray.shutdown()
    results["_ray"] = {"init_s": init_s, "idle_tree_rss_bytes": idle}
    return results


# --------------------------------------------------------------------------- in-process
def inprocess_phase(paths: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    """Per graph: the step breakdown (1 and 2 torch threads), the hard-negative share of
    the batch build and, on ``--profile-dataset`` and synthetic, the profiler tables."""
    out: dict[str, Any] = {}
    for label, _ in DATASETS:
        if label not in paths:
            continue
        log.info("[%s] in-process step breakdown (%d steps)", label, args.profile_steps)
        r = step_breakdown(paths[label], args, args.profile_steps)
        r.update(build_breakdown(paths[label], args, max(5, args.profile_steps // 2)))
        log.info("[%s]   step %.1f ms wall / %.1f ms CPU: %s; %.0f examples/CPU-s", label,
                 1e3 * r["step_s"], 1e3 * r["step_cpu_s"],
                 ", ".join(f"{k} {1e3 * v:.1f}" for k, v in r["median_cpu_s"].items()),
                 r["examples_per_cpu_s"])
        t2 = step_breakdown(paths[label], args, max(3, args.profile_steps // 2), threads=2)
        r["torch_2_threads"] = {k: t2[k] for k in ("median_s", "step_s")}
        log.info("[%s]   torch 2 threads: step %.1f ms wall (forward %.1f, backward %.1f)",
                 label, 1e3 * t2["step_s"], 1e3 * t2["median_s"]["forward"],
                 1e3 * t2["median_s"]["backward"])
        if label == args.profile_dataset or label == "synthetic":
            for kind in ("cprofile", "torch"):
                log.info("[%s] %s of %d steps", label, kind, args.profile_steps)
                pr = step_breakdown(paths[label], args, args.profile_steps, profile=kind)
                r[f"{kind}_text"] = pr["profile_text"]
        r.pop("profile_text", None)
        out[label] = r
        gc.collect()
    return out


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_graph_args(p, data_help="folder holding ml-100k/, gowalla/",
                   cache_help="prepared graphs are kept here between runs")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per (dataset, workers, prefetch); each gives epochs-1 samples")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batches", type=int, default=30, help="batches per epoch per worker")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--items", type=int, default=50_000, help="synthetic items")
    p.add_argument("--groups", type=int, default=40_000, help="synthetic groups")
    p.add_argument("--group-size", type=float, default=10.0, help="synthetic mean group size")
    p.add_argument("--feature-dim", type=int, default=32, help="synthetic feature dim")
    p.add_argument("--profile-steps", type=int, default=20)
    p.add_argument("--profile-dataset", default="movielens",
                   choices=[d for d, _ in DATASETS])
    p.add_argument("--object-store-gb", type=float, default=1.0)
    p.add_argument("--skip-ray", action="store_true",
                   help="only the in-process breakdown; results go under the cache dir")
    p.add_argument("--quick", action="store_true",
                   help="tiny synthetic graph only; results go under the cache dir")
    add_guard_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.groups, args.group_size = 2_000, 1_500, 8.0
        args.epochs, args.batches, args.batch_size = 2, 5, 64
        args.repeats, args.profile_steps = 1, 5
        args.profile_dataset = "synthetic"
    if min(args.repeats, args.epochs, args.batches, args.batch_size, args.profile_steps) < 1:
        p.error("--repeats, --epochs, --batches, --batch-size, --profile-steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    scratch = (Path(args.cache_dir) / ("quick" if args.quick else "inprocess")
               if args.quick or args.skip_ray else None)  # never over the committed results
    machine = guard_machine(machine_info(), args, committed=scratch is None)
    t_start = time.perf_counter()
    paths = graphs(args)

    table_s: dict[str, float] = {}
    table_raw: dict[str, list[float]] = {}
    for label, path in paths.items():
        table_s[label], table_raw[label] = neighbor_table_seconds(path, args)
        log.info("[%s] neighbourhood table: %.2f s", label, table_s[label])

    tree = TreeMemory(interval=0.2)
    res: dict[str, Any] = {"_ray": {"idle_tree_rss_bytes": 0}}
    if not args.skip_ray:
        res = ray_phase(paths, args, tree, table_s)
    tree.stop()
    ray_info = res.pop("_ray")
    driver_peak = peak_rss_bytes()["self"]  # before the in-process phase adds its own
    prof = inprocess_phase(paths, args)

    metrics: list[dict] = []
    for label, sfx in DATASETS:
        if label not in res:
            continue
        c = res[label]["configs"]
        metrics += [
            metric(f"train_examples_per_s_per_worker{sfx}",
                   c["w1_p4"]["examples_per_s_per_worker"], "examples/s"),
            metric(f"producer_consumer_speedup{sfx}", res[label]["producer_consumer_speedup"],
                   "ratio"),
            metric(f"train_peak_rss_mb{sfx}",
                   max(s["peak_rss_bytes"] for s in c.values()) / 2**20, "MB",
                   higher_is_better=False),
            metric(f"train_examples_per_s_per_worker_2_workers{sfx}",
                   c["w2_p4"]["examples_per_s_per_worker"], "examples/s"),
            metric(f"train_examples_per_s_sequential{sfx}",
                   c["w1_p0"]["examples_per_s_per_worker"], "examples/s"),
            metric(f"train_epoch_seconds{sfx}", c["w1_p4"]["epoch_seconds"], "s",
                   higher_is_better=False),
            metric(f"train_wait_fraction{sfx}", c["w1_p4"]["wait_fraction"], "ratio",
                   higher_is_better=False),
        ]
    for label, sfx in DATASETS:
        if label in prof:
            metrics.append(metric(f"train_step_examples_per_cpu_s{sfx}",
                                  prof[label]["examples_per_cpu_s"], "examples/CPU-s"))
    head = ["train_examples_per_s_per_worker", "producer_consumer_speedup", "train_peak_rss_mb"]
    metrics.sort(key=lambda m: head.index(m["name"]) if m["name"] in head else len(head))

    notes = []
    if args.quick:
        notes.append("Note: `--quick` run on a tiny graph; the numbers only check the script.")
    mem = {"driver_peak_rss_bytes": driver_peak, **ray_info}
    extra: dict[str, Any] = {
        "args": vars(args), "train_config": train_config(args, 1, 4).to_dict(),
        "graphs": {k: str(v) for k, v in paths.items()},
        "neighbor_table_seconds": table_s, "neighbor_table_seconds_raw": table_raw,
        "results": res, "step_breakdown": prof, "memory": mem, "notes": notes,
        "total_seconds": time.perf_counter() - t_start,
    }
    res["_notes"] = notes
    finish_machine(machine)
    graph_lines = [graph_line(label, paths[label], table_s.get(label))
                   for label, _ in DATASETS if label in paths]
    md = markdown(metrics, machine, res, prof, args, graph_lines, mem, DATASETS)
    res.pop("_notes")
    publish(NAME, metrics, machine, extra, md, scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
