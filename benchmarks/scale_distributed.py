"""The distributed paths ``bench_scale.py`` measures beside the single-process ones (issue 22).

* :func:`measure_prepare_distributed`: ``prepare(engine="ray")`` on the same Parquet files in
  a fresh process with its own local Ray instance on every core: seconds, the peak RSS of
  each process (driver and every Ray worker, sampled every 0.25 s by ``_memory.TreeMemory``;
  VmHWM for the driver) with and without the object-store pages it maps, and whether the graph directory equals the single-process one array for array.
* :func:`measure_partitioned_index`: a :class:`~pinsage_ray.index.PartitionedIndex` of
  ``partitions`` HNSW indexes over the same vectors as the one-index stage, each partition at
  the one index's ``ef``: build seconds per partition (built one after another here; on a
  cluster each is one Ray task), held-out recall@10 minus the one index's, and the latency of
  single-vector queries (fan-out to every partition and exact merge) vs the one index's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

log = __import__("logging").getLogger("bench_scale")


def _prepare_ray_child(raw: str, graph: str, out: str, object_store_gb: float) -> None:
    import resource

    from _memory import TreeMemory, vm_hwm
    from pinsage_ray import init_ray, prepare

    init_ray(num_cpus=os.cpu_count() or 1, object_store_memory=int(object_store_gb * 2**30),
             include_dashboard=False)
    tree = TreeMemory(interval=0.25)
    t0 = time.perf_counter()
    store = prepare(os.path.join(raw, "interactions.parquet"), graph,
                    item_features=os.path.join(raw, "item_features.parquet"), overwrite=True,
                    engine="ray")
    seconds = time.perf_counter() - t0
    tree.stop()
    per_pid = tree.per_process
    driver = max(vm_hwm(os.getpid()) or 0,
                 resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    top = sorted(per_pid.values(), reverse=True)[:5]
    Path(out).write_text(json.dumps({
        "seconds": seconds, "num_edges": store.num_edges, "driver_peak_rss_bytes": driver,
        "peak_rss_per_process_bytes": max([driver, *(r for r, _ in per_pid.values())]),
        # less the object-store pages each process maps (sampled; the store is per node)
        "peak_private_rss_per_process_bytes": max(tree.private_per_process.values()),
        "driver_peak_private_rss_bytes": tree.private_per_process.get(os.getpid(), 0),
        "largest_processes": [{"rss_bytes": r, "process": n} for r, n in top],
        "processes_seen": len(per_pid), "num_cpus": os.cpu_count()}))


def _digest(path: Path) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            sha.update(block)
    return sha.hexdigest()


def same_graph(a: Path, b: Path) -> dict[str, Any]:
    """Every array file (``.npy``, ``.parquet``) of graph ``a`` byte-identical in ``b``."""
    names = sorted(p.name for p in a.iterdir() if p.suffix in (".npy", ".parquet"))
    other = sorted(p.name for p in b.iterdir() if p.suffix in (".npy", ".parquet"))
    differ = [n for n in names if n not in other or _digest(a / n) != _digest(b / n)]
    return {"equal": names == other and not differ, "files": len(names), "differ": differ,
            "only_in_one": sorted(set(names) ^ set(other))}


def measure_prepare_distributed(folder: Path, graph: Path, args: argparse.Namespace,
                                compare: bool) -> dict:
    """``prepare(engine="ray")`` in a fresh process; optionally compared with ``graph``."""
    out, target = folder / "prepare_ray.json", folder / "graph_ray"
    proc = multiprocessing.get_context("spawn").Process(
        target=_prepare_ray_child,
        args=(str(folder / "raw"), str(target), str(out), args.object_store_gb))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"distributed prepare of {folder} failed (exit {proc.exitcode})")
    res = json.loads(out.read_text())
    if compare:
        res["comparison"] = same_graph(graph, target)
    shutil.rmtree(target, ignore_errors=True)
    log.info("distributed prepare: %.1f s, peak RSS per process %.2f GiB%s", res["seconds"],
             res["peak_rss_per_process_bytes"] / 2**30,
             f", equal to single-process: {res['comparison']['equal']}" if compare else "")
    return res


def measure_partitioned_index(base: np.ndarray, keep: np.ndarray, queries: np.ndarray,
                              one: Any, truth: np.ndarray, partitions: int,
                              latency_queries: int = 1000) -> dict:
    """The partitioned index beside the one-index stage's ``one`` (same vectors, same ef)."""
    from inference_parts import recall_at_k
    from pinsage_ray.index import HNSWConfig, HNSWIndex, PartitionedIndex, partition_bounds

    ef = one.ef
    cfg = HNSWConfig(num_threads=-1, search="hnsw", ef=ef, recall_sample=0)
    bounds = partition_bounds(len(base), partitions)
    parts, seconds = [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        t0 = time.perf_counter()
        parts.append(HNSWIndex.build(base[lo:hi], keep[lo:hi], cfg))
        seconds.append(time.perf_counter() - t0)
    index = PartitionedIndex(parts)
    ids, scores = index.query(queries, 10)
    truth_ids, truth_scores = truth
    recall = recall_at_k(ids, scores, truth_ids, truth_scores)
    one_ids, one_scores = one.query(queries, 10)
    recall_one = recall_at_k(one_ids, one_scores, truth_ids, truth_scores)

    def latencies(ix: Any) -> np.ndarray:
        out = []
        for q in queries[:latency_queries]:
            t0 = time.perf_counter()
            ix.query(q, 10)
            out.append(time.perf_counter() - t0)
        return np.asarray(out) * 1000

    lat_part, lat_one = latencies(index), latencies(one)
    res = {"partitions": partitions, "ef": ef, "build_seconds_per_partition": seconds,
           "recall_at_10_heldout": recall, "recall_at_10_heldout_one_index": recall_one,
           "recall_at_10_delta": recall_one - recall,
           "query_p50_ms": float(np.percentile(lat_part, 50)),
           "query_p99_ms": float(np.percentile(lat_part, 99)),
           "one_index_query_p50_ms": float(np.percentile(lat_one, 50)),
           "one_index_query_p99_ms": float(np.percentile(lat_one, 99))}
    log.info("partitioned index (%d parts, ef %d): recall@10 %.4f vs one index %.4f; query p99 "
             "%.2f ms vs %.2f ms", partitions, ef, recall, recall_one, res["query_p99_ms"],
             res["one_index_query_p99_ms"])
    return res
