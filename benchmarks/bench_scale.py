#!/usr/bin/env python
"""Cost growth from 1M to 100M edges: what each stage costs as the graph grows.

For every size in ``--sizes`` (edges; items = edges x ``--items-per-edge``, groups = edges /
``--group-size``, 32-d item features) a planted-community graph is generated once into
``--cache-dir`` and then, in a fresh child process per size (so one size's memory never
counts against the next):

* **prepare** (the library's ``prepare`` from the Parquet files, as the CLI runs it) in its
  own process: seconds, peak RSS, bytes per edge on disk and resident (the arrays a shard or
  walker maps);
* **walks**: in-process ``LocalWalker.random_walks`` hops/s (one core) and the 2-shard Ray
  service's hops/s (``ShardedGraph``, answers checked identical to in-process);
  ``importance_neighbors`` seeds/s at the training default (50 walks, length 2, T = 10);
* **training**: one in-process step (build / forward / loss / backward / Adam; the
  ``bench_train`` step) in ms, and the first step, which builds the epoch's neighbourhood table;
* **inference**: importance neighbourhoods of every item, then layer-wise ``embed_all`` of every
  item (items/s, one torch thread), and the Ray Data path (``embed(mode="ray")``) up to
  ``--ray-embed-max-edges``;
* **index**: ``HNSWIndex.build`` with every core (``num_threads=-1``, HNSW search forced) on all
  items but 1,000 held-out ones, up to ``--index-max-items`` vectors: build seconds, recall@10
  of the held-out queries at the tuned ``ef`` against exact search, and QPS against
  ``exact_topk`` (both on every core).

Each stage's growth exponent ``b`` (cost ~ edges^b) is fitted between the smallest and the
largest size measured. Writes ``benchmarks/results/scale.json`` and the ``scale`` section of
``benchmarks/RESULTS.md`` (``--quick``: 100k and 300k edges, under the cache dir instead).

    python benchmarks/bench_scale.py --quick
    nohup python benchmarks/bench_scale.py > scale.log 2>&1 &
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # numpy per core; the index stage sets its own thread counts
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from _common import (setup_logging, REPO, add_guard_args, guard_machine,  # noqa: E402
                     machine_info, metric, publish)
from scale_report import markdown  # noqa: E402
from scale_distributed import measure_prepare_distributed  # noqa: E402
from scale_stages import (build_graph, dir_bytes, measure_embed, measure_index,  # noqa: E402
                          measure_prepare, measure_train_step, measure_walks)

NAME = "scale"
log = logging.getLogger("bench_scale")

#: metric stem -> (unit, higher_is_better); every one is emitted per size as STEM_<size>.
STAGE_METRICS = {
    "prepare_seconds": ("s", False),
    "prepare_peak_rss_gb": ("GiB", False),
    "graph_bytes_per_edge_disk": ("B/edge", False),
    "graph_bytes_per_edge_memory": ("B/edge", False),
    "walk_hops_per_s": ("hops/s", True),
    "walk_hops_per_s_sharded_2": ("hops/s", True),
    "importance_neighbors_seeds_per_s": ("seeds/s", True),
    "train_step_ms": ("ms", False),
    "train_batch_build_ms_batch_mode": ("ms", False),
    "neighbor_table_seconds": ("s", False),
    "embed_items_per_s": ("items/s", True),
    "embed_items_per_s_ray": ("items/s", True),
    "index_build_seconds": ("s", False),
    "index_recall_at_10_heldout": ("recall", True),
    "index_qps_vs_exact_ratio_heldout": ("ratio", True),
}


def size_label(edges: int) -> str:
    """1_000_000 -> '1m', 100_000 -> '100k'."""
    if edges % 1_000_000 == 0:
        return f"{edges // 1_000_000}m"
    if edges % 1_000 == 0:
        return f"{edges // 1_000}k"
    return str(edges)


def parse_size(text: str) -> int:
    t = text.strip().lower()
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    try:
        value = int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r}: use e.g. 1m, 10m, 100m or 250000")
    if value < 10_000:
        raise argparse.ArgumentTypeError(f"size {text!r}: at least 10k edges")
    return value


# --------------------------------------------------------------------------- one size
def run_size(edges: int, args_dict: dict, out_json: str) -> None:
    """Every stage on one size, in this (child) process; results to ``out_json``."""
    setup_logging()
    args = argparse.Namespace(**args_dict)
    label = size_label(edges)
    folder = Path(args.cache_dir) / f"scale_{label}_s{args.seed}"
    res: dict[str, Any] = {"edges_target": edges, "label": label}
    res["generate"] = build_graph(edges, args, folder)
    graph = folder / "graph"
    res["prepare"] = measure_prepare(folder, graph)
    if edges >= args.distributed_min_edges:
        res["prepare_distributed"] = measure_prepare_distributed(
            folder, graph, args, compare=edges <= args.compare_max_edges)
    res["graph"] = dir_bytes(graph)
    res["walks"] = measure_walks(graph, args)
    res["train"] = measure_train_step(graph, args)
    emb, res["embed"] = measure_embed(graph, args, edges, folder)
    res["index"] = measure_index(emb, args)
    Path(out_json).write_text(json.dumps(res, indent=2, default=str))


def in_child(edges: int, args: argparse.Namespace, out_json: Path) -> dict:
    ctx = multiprocessing.get_context("spawn")
    proc = ctx.Process(target=run_size, args=(edges, vars(args), str(out_json)))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"size {size_label(edges)} failed (exit code {proc.exitcode}); "
                           "see the log above")
    return json.loads(out_json.read_text())


# --------------------------------------------------------------------------- metrics
def stage_values(r: dict) -> dict[str, float | None]:
    """The per-size numbers behind STAGE_METRICS (None: not measured at this size)."""
    w, e, ix, tr = r["walks"], r["embed"], r["index"], r["train"]
    edges = r["graph"]["num_edges"]
    return {
        "prepare_seconds": r["prepare"]["seconds"],
        "prepare_peak_rss_gb": r["prepare"]["peak_rss_bytes"] / 2**30,
        "graph_bytes_per_edge_disk": r["graph"]["disk_bytes"] / edges,
        "graph_bytes_per_edge_memory": r["graph"]["array_bytes"] / edges,
        "walk_hops_per_s": w["inprocess"]["hops_per_s"],
        "walk_hops_per_s_sharded_2": (w.get("sharded_2") or {}).get("hops_per_s"),
        "importance_neighbors_seeds_per_s": w["importance"]["seeds_per_s"],
        "train_step_ms": 1000 * tr["step_s"],
        "train_batch_build_ms_batch_mode": tr["build_ms_batch_mode"],
        "neighbor_table_seconds": e["neighbors_seconds"],
        "embed_items_per_s": e["items_per_s"],
        "embed_items_per_s_ray": (e.get("ray") or {}).get("items_per_s"),
        "index_build_seconds": ix.get("build_seconds"),
        "index_recall_at_10_heldout": ix.get("recall_at_10_heldout"),
        "index_qps_vs_exact_ratio_heldout": ix.get("qps_vs_exact"),
    }


def growth_exponent(e0: float, v0: float | None, e1: float, v1: float | None,
                    higher_is_better: bool) -> float | None:
    """``b`` in cost ~ edges^b between two sizes (throughputs are inverted into costs)."""
    if not v0 or not v1 or e0 == e1:
        return None
    ratio = (v0 / v1) if higher_is_better else (v1 / v0)
    return math.log(ratio) / math.log(e1 / e0)


def build_metrics(results: list[dict]) -> tuple[list[dict], dict]:
    metrics, growth = [], {}
    per_size = {r["label"]: stage_values(r) for r in results}
    edges = {r["label"]: r["graph"]["num_edges"] for r in results}
    for stem, (unit, hib) in STAGE_METRICS.items():
        for label, values in per_size.items():
            if values[stem] is not None:
                metrics.append(metric(f"{stem}_{label}", values[stem], unit, hib))
        measured = [lb for lb in per_size if per_size[lb][stem] is not None]
        if len(measured) >= 2 and not stem.startswith("index_recall"):
            a, b = measured[0], measured[-1]
            growth[stem] = {"from": a, "to": b, "exponent": growth_exponent(
                edges[a], per_size[a][stem], edges[b], per_size[b][stem], hib)}
    metrics += distributed_metrics(results)
    largest, smallest = results[-1]["label"], results[0]["label"]
    metrics.append(metric("scale_max_edges", max(edges.values()), "edges"))
    walk = per_size[largest]["walk_hops_per_s"] / per_size[smallest]["walk_hops_per_s"]
    metrics.append(metric(f"walk_hops_per_s_{largest}_vs_{smallest}", walk, "ratio"))
    indexed = [lb for lb in per_size if per_size[lb]["index_recall_at_10_heldout"] is not None]
    if indexed:  # the headline index numbers: the largest catalogue indexed
        top = per_size[indexed[-1]]
        metrics.append(metric("index_recall_at_10_heldout", top["index_recall_at_10_heldout"],
                              "recall"))
        metrics.append(metric("index_qps_vs_exact_ratio_heldout",
                              top["index_qps_vs_exact_ratio_heldout"], "ratio"))
    for stem, g in growth.items():
        if g["exponent"] is not None:
            metrics.append(metric(f"{stem}_growth_exponent", g["exponent"], "exponent", False))
    return metrics, growth


def distributed_metrics(results: list[dict]) -> list[dict]:
    """Issue 22's metrics: distributed prepare at the largest size that ran it (and the
    comparison at the largest size compared), the partitioned index at the largest indexed."""
    out = []
    dist = [r for r in results if r.get("prepare_distributed")]
    for r in dist:
        d, tag = r["prepare_distributed"], r["label"]
        tag = "94m" if tag == "100m" else tag  # the 100m setting gives 94M edges
        out += [metric(f"prepare_peak_rss_per_process_gib_distributed_{tag}",
                       d["peak_rss_per_process_bytes"] / 2**30, "GiB", False),
                metric(f"prepare_peak_private_rss_per_process_gib_distributed_{tag}",
                       d["peak_private_rss_per_process_bytes"] / 2**30, "GiB", False),
                metric(f"prepare_distributed_vs_single_time_{tag}",
                       d["seconds"] / r["prepare"]["seconds"], "ratio", False)]
    compared = [r for r in dist if "comparison" in r["prepare_distributed"]]
    if compared:
        out.append(metric("prepare_distributed_equals_single",
                          float(compared[-1]["prepare_distributed"]["comparison"]["equal"]),
                          "bool"))
    parts = [r["index"]["partitioned"] for r in results if (r["index"] or {}).get("partitioned")]
    if parts:
        out += [metric("partitioned_index_recall_at_10_delta", parts[-1]["recall_at_10_delta"],
                       "recall", False),
                metric("partitioned_index_query_p99_ms", parts[-1]["query_p99_ms"], "ms", False)]
    return out


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=parse_size, nargs="+", default=[10**6, 10**7, 10**8],
                   help="edge counts, e.g. 1m 10m 100m")
    p.add_argument("--items-per-edge", type=float, default=0.05,
                   help="items = edges x this (mean item degree 1 / this)")
    p.add_argument("--group-size", type=float, default=10.0, help="mean items per group")
    p.add_argument("--feature-dim", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--walkers", type=int, default=1_000_000)
    p.add_argument("--walk-length", type=int, default=4)
    p.add_argument("--importance-seeds", type=int, default=20_000)
    p.add_argument("--train-steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ray-embed-max-edges", type=parse_size, default=10**8)
    p.add_argument("--index-max-items", type=int, default=600_000,
                   help="index sizes up to this many items (build time grows ~N log N)")
    p.add_argument("--queries", type=int, default=1_000, help="held-out index queries")
    p.add_argument("--object-store-gb", type=float, default=2.0)
    p.add_argument("--distributed-min-edges", type=parse_size, default=10**7,
                   help="also run prepare(engine='ray') from this size up")
    p.add_argument("--compare-max-edges", type=parse_size, default=10**7,
                   help="compare the distributed graph with the single-process one up to here")
    p.add_argument("--index-partitions", type=int, default=4,
                   help="also build a partitioned index of this many partitions (<2: skip)")
    p.add_argument("--cache-dir", default=str(REPO / ".bench_cache"))
    p.add_argument("--quick", action="store_true",
                   help="100k and 300k edges; results under the cache dir")
    add_guard_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.walkers, args.importance_seeds = [100_000, 300_000], 100_000, 2_000
        args.distributed_min_edges = args.compare_max_edges = 300_000
        args.train_steps, args.repeats = 3, 1
    args.sizes = sorted(set(args.sizes))
    if not 0 < args.items_per_edge <= 1:
        p.error(f"--items-per-edge={args.items_per_edge}: pass a number in (0, 1]")
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    machine = guard_machine(machine_info(), args, committed=not args.quick)
    t0 = time.perf_counter()
    scratch = Path(args.cache_dir) / "scale_quick" if args.quick else None
    out_dir = scratch or Path(args.cache_dir) / "scale_results"
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    for edges in args.sizes:
        log.info("==== %s edges", size_label(edges))
        results.append(in_child(edges, args, out_dir / f"{size_label(edges)}.json"))
    metrics, growth = build_metrics(results)
    extra = {"args": vars(args), "sizes": results, "growth": growth,
             "total_seconds": time.perf_counter() - t0}
    publish(NAME, metrics, machine, extra, markdown(metrics, machine, extra), scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
