#!/usr/bin/env python
"""What serving a partitioned index from its own actors costs and saves in the caller.

The same saved :class:`~pinsage_ray.index.PartitionedIndex` (``--vectors`` clustered 64-d
vectors in ``--partitions`` HNSW partitions at one ``ef``) is opened two ways in one process
with a local Ray instance on every core:

* ``in_process``: ``PartitionedIndex.load``, every partition in the caller, asked one after
  another (what the Recommender, the CLI and each Serve replica do by default);
* ``actors``: :class:`~pinsage_ray.index.PartitionActors`, one actor per partition, asked in
  parallel and merged in the caller (``--partition-actors``).

Measured: the caller's private memory after opening (``RssAnon`` rise: the vectors and HNSW
graphs, or only the ids), single-query latency (median and p99 of ``--queries`` one-vector
queries, k = 10) and batch throughput (queries of ``--batch`` vectors), and whether the two
answer identically (they share the per-partition step and the merge). The ratio
``actors / in_process`` is what a Ray round trip per query costs on this machine.

    python benchmarks/bench_partition_actors.py
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from _common import (add_guard_args, finish_machine, guard_machine, machine_info,  # noqa: E402
                     markdown_table, metric, publish, setup_logging)
from _graphs import REPO  # noqa: E402
from _memory import rss_anon  # noqa: E402

NAME = "partition_actors"
log = logging.getLogger("bench_partition_actors")


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(n // 500, 1), dim))
    return (centers[rng.integers(0, len(centers), n)]
            + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


def build(path: Path, vectors: int, partitions: int, ef: int) -> None:
    from pinsage_ray.index import HNSWConfig, PartitionedIndex

    cfg = HNSWConfig(search="hnsw", ef=ef, recall_sample=0, num_threads=-1)
    x = clustered(vectors, 64, seed=0)
    PartitionedIndex.build(x, np.arange(vectors), partitions, cfg).save(path)


def timings(index, queries: np.ndarray, batch: int) -> dict:
    for q in queries[:50]:  # warm-up
        index.query(q, 10)
    lat = []
    for q in queries:
        t0 = time.perf_counter()
        index.query(q, 10)
        lat.append(time.perf_counter() - t0)
    lat_ms = np.asarray(lat) * 1000
    t0 = time.perf_counter()
    rounds = 0
    for lo in range(0, len(queries), batch):
        index.query(queries[lo:lo + batch], 10)
        rounds += 1
    batch_s = time.perf_counter() - t0
    return {"p50_ms": float(np.percentile(lat_ms, 50)), "p99_ms": float(np.percentile(lat_ms, 99)),
            "batch_qps": len(queries) / batch_s, "batches": rounds}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vectors", type=int, default=400_000)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--ef", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--cache-dir", default=str(REPO / ".bench_cache"),
                   help="where the saved index is built (reused when present)")
    p.add_argument("--quick", action="store_true",
                   help="20k vectors, 200 queries, results under the cache dir")
    add_guard_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.vectors, args.queries = 20_000, 200
    return args


def main(argv: list[str] | None = None) -> None:
    import ray

    from pinsage_ray.index import PartitionActors, PartitionedIndex
    from pinsage_ray.ray_utils import init_ray

    args = parse_args(argv)
    setup_logging()
    machine = guard_machine(machine_info(), args, committed=not args.quick)
    t_start = time.perf_counter()
    path = Path(args.cache_dir) / f"partitioned_{args.vectors}_{args.partitions}_ef{args.ef}"
    if not (path / "manifest.json").exists():  # built in another process: this one's
        shutil.rmtree(path, ignore_errors=True)  # memory measurements start clean
        proc = multiprocessing.get_context("spawn").Process(
            target=build, args=(path, args.vectors, args.partitions, args.ef))
        proc.start()
        proc.join()
        if proc.exitcode != 0:
            raise SystemExit(f"building {path} failed (exit {proc.exitcode})")
    queries = clustered(args.queries, 64, seed=1)
    init_ray(num_cpus=os.cpu_count() or 1, include_dashboard=False)
    rows = {}
    before = rss_anon()
    local = PartitionedIndex.load(path)
    rows["in_process"] = {"caller_rss_mib": (rss_anon() - before) / 2**20,
                          **timings(local, queries, args.batch)}
    before = rss_anon()
    served = PartitionActors.load(path)
    rows["actors"] = {"caller_rss_mib": (rss_anon() - before) / 2**20,
                      **timings(served, queries, args.batch)}
    a, b = local.query(queries, 10), served.query(queries, 10)
    equal = bool(np.array_equal(a[0], b[0]) and a[1].tobytes() == b[1].tobytes())
    served.close()
    ray.shutdown()
    inp, act = rows["in_process"], rows["actors"]
    metrics = [
        metric("partition_actors_query_p50_ms", act["p50_ms"], "ms", False),
        metric("partition_actors_query_p99_ms", act["p99_ms"], "ms", False),
        metric("partition_in_process_query_p50_ms", inp["p50_ms"], "ms", False),
        metric("partition_in_process_query_p99_ms", inp["p99_ms"], "ms", False),
        metric("partition_actors_vs_in_process_p50", act["p50_ms"] / inp["p50_ms"], "ratio",
               False),
        metric("partition_actors_batch_qps", act["batch_qps"], "queries/s"),
        metric("partition_in_process_batch_qps", inp["batch_qps"], "queries/s"),
        metric("partition_actors_caller_rss_mib", act["caller_rss_mib"], "MiB", False),
        metric("partition_in_process_caller_rss_mib", inp["caller_rss_mib"], "MiB", False),
        metric("partition_actors_answers_equal", float(equal), "bool"),
    ]
    table = markdown_table(
        ["opened as", "caller memory", "query p50 / p99", f"batch of {args.batch}"],
        [[name, f"{r['caller_rss_mib']:.0f} MiB", f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ms",
          f"{r['batch_qps']:,.0f} queries/s"] for name, r in rows.items()])
    section = (f"## {NAME}\n\n{args.vectors:,} vectors (64-d) in {args.partitions} HNSW "
               f"partitions, ef {args.ef}; {args.queries} single queries, k = 10. Same "
               f"answers: {equal}.\n\n{table}\n")
    publish(NAME, metrics, finish_machine(machine),
            {"rows": rows, "args": {k: v for k, v in vars(args).items()},
             "total_seconds": time.perf_counter() - t_start}, section,
            scratch_dir=Path(args.cache_dir) / "partition_actors_quick" if args.quick else None)


if __name__ == "__main__":
    main()
