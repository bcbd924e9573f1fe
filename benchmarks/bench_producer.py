#!/usr/bin/env python
"""What a training producer holds per item, and what building a batch costs, either way.

A batch producer (:class:`~pinsage_ray.training.BatchProducer`) used to hold per-item arrays
of the whole graph: the degrees and their log, the negative sampler's CDF, and a per-epoch
table of every item's neighbourhood. Now degrees come from the memory-mapped item CSR per
batch; past ``NEGATIVE_CDF_MAX_ITEMS`` the negatives need no CDF, and past
``TrainConfig.neighbor_table_max_items`` neighbourhoods are walked per batch
(:mod:`pinsage_ray.training.negatives`). On the ``bench_scale`` graphs (``--sizes``), with the
paper's recipe (degree-sampled negatives) as ``train.json``, both settings:

* ``table``: the epoch table and the CDF (what graphs below the thresholds get);
* ``per_batch``: both thresholds at 0 (what graphs past them get);

measured: the producer's heap after building its first batch (``tracemalloc``: every numpy
allocation; file-backed pages of the graph are not heap), per item; the median ms to build
a batch (epoch 2, after the first, which builds the table); and the median microseconds to
draw 500 degree-sampled negatives by CDF and by rejection.

    python benchmarks/bench_producer.py --sizes 1m 10m
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from _common import (add_guard_args, finish_machine, guard_machine, machine_info,  # noqa: E402
                     median_of, metric, publish, setup_logging)
from _graphs import REPO  # noqa: E402

NAME = "producer"
log = logging.getLogger("bench_producer")
SETTINGS = {"table": 10**12, "per_batch": 0}  # both thresholds


def one_setting(graph: Path, cfg, pairs, walker, threshold: int, batches: int) -> dict:
    import pinsage_ray.training.negatives as negatives
    from pinsage_ray.training import BatchProducer

    negatives.NEGATIVE_CDF_MAX_ITEMS = threshold
    cfg = dataclasses.replace(cfg, neighbor_table_max_items=threshold)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    producer = BatchProducer(graph, cfg, pairs, walker=walker)
    producer.batch(2, 0)
    heap = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    med, _ = median_of(lambda: producer.batch(2, 1), batches, warmup=1)
    return {"heap_bytes": heap, "batch_ms": 1000 * med,
            "sampler": producer.builder.negatives.method,
            "neighbors": producer.builder.neighbors.mode}


def draw_us(store, m: int = 500, repeats: int = 200) -> dict:
    from pinsage_ray.training.negatives import ItemDegrees, NegativeSampler

    deg = ItemDegrees.of(store)
    out = {}
    for name, limit in (("cdf", 10**12), ("rejection", 0)):
        sampler = NegativeSampler.for_graph("degree", store, deg, limit)
        rng = np.random.default_rng(0)
        med, _ = median_of(lambda: sampler.sample(rng, m), repeats, warmup=3)
        out[name] = 1e6 * med
    return out


def one_size(graph: Path, batches: int) -> dict:
    from pinsage_ray import GraphStore, LocalWalker
    from pinsage_ray.training import pairs_for
    from train_steps import train_config

    store = GraphStore(graph)
    walker = LocalWalker(graph)
    cfg = train_config(argparse.Namespace(epochs=3, batch_size=256, batches=batches + 2), 1, 0)
    pairs = pairs_for(store, walker, cfg)
    row = {"items": store.num_items, "edges": store.num_edges}
    for name, threshold in SETTINGS.items():
        t0 = time.perf_counter()
        row[name] = one_setting(graph, cfg, pairs, walker, threshold, batches)
        log.info("%s, %s: %s (%.0f s)", graph.parent.name, name, row[name],
                 time.perf_counter() - t0)
    row["draw_500_degree_negatives_us"] = draw_us(store)
    return row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["1m", "10m", "100m"])
    p.add_argument("--batches", type=int, default=5, help="timed batches per setting")
    p.add_argument("--cache-dir", default=str(REPO / ".bench_cache"),
                   help="where bench_scale left scale_SIZE_s0/graph")
    add_guard_args(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    machine = guard_machine(machine_info(), args, committed=True)
    t_start = time.perf_counter()
    rows, metrics = {}, []
    for size in args.sizes:
        graph = Path(args.cache_dir) / f"scale_{size}_s0" / "graph"
        if not graph.exists():
            raise SystemExit(f"{graph}: missing; run `python benchmarks/bench_scale.py "
                             f"--sizes {size}` first")
        r = rows[size] = one_size(graph, args.batches)
        for name in SETTINGS:
            metrics += [metric(f"producer_heap_bytes_per_item_{name}_{size}",
                               r[name]["heap_bytes"] / r["items"], "bytes", False),
                        metric(f"producer_batch_build_ms_{name}_{size}", r[name]["batch_ms"],
                               "ms", False)]
        for name, us in r["draw_500_degree_negatives_us"].items():
            metrics.append(metric(f"negatives_degree_500_draw_us_{name}_{size}", us, "us",
                                  False))
    lines = ["## producer", "", "| graph | setting | heap per item | batch build | negatives "
             "| neighbourhoods |", "|---|---|---|---|---|---|"]
    for size, r in rows.items():
        for name in SETTINGS:
            s = r[name]
            lines.append(f"| {size} ({r['items']:,} items) | {name} | "
                         f"{s['heap_bytes'] / r['items']:.1f} B | {s['batch_ms']:.1f} ms | "
                         f"{s['sampler']} | {s['neighbors']} |")
    lines += ["", "500 degree-sampled negatives: " + "; ".join(
        f"{size}: CDF {r['draw_500_degree_negatives_us']['cdf']:.0f} us, rejection "
        f"{r['draw_500_degree_negatives_us']['rejection']:.0f} us" for size, r in rows.items())
        + "."]
    publish(NAME, metrics, finish_machine(machine),
            {"rows": rows, "total_seconds": time.perf_counter() - t_start}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
