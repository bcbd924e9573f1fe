#!/usr/bin/env python
"""Inference throughput: layer-wise embedding vs the recursive baseline, and the HNSW index.

Measured on the synthetic graph with item features (``--items``, default 1M; generated once
into ``--cache-dir``) and on Gowalla's training split (no features: id embeddings) when
``--data-dir``/gowalla exists:

* importance neighbourhoods of every item (``LocalWalker.importance_neighbors``, T = 50), timed
  once: both inference methods need them, so they are reported apart;
* **layer-wise** inference (``embed_all``: each layer computed once for every item), torch on
  one thread: items/s, median of ``--repeats``; on Gowalla also the Ray Data path
  (``embed(run_dir, mode="ray")``) from a run directory written here;
* the **recursive baseline**: each request builds its own K-hop computation graph
  (``expand_blocks``) and runs ``encoder(EncoderInput(...))``, recomputing every shared
  neighbour; batches of 1 item (per-request serving) and of 64; items/s, the ratio
  layer-wise / recursive, and the node computations each method does per item;
* the **HNSW index** (``HNSWIndex.build(..., HNSWConfig())``) on the embeddings of all items
  but ``--queries`` held-out ones: build seconds, the tuned ``ef``, the search the build chose
  (``search='auto'``: HNSW, or exact search where that is faster or HNSW misses the target),
  recall@10 (from the build manifest, itself measured on queries held out of the graph, and
  re-measured here on the held-out queries) and single-thread QPS of ``index.query`` against
  exact search (``exact_topk``, chunked torch matmul, one thread) on the same queries.

The model is an *untrained* ``PinSageEncoder`` (K = 2, hidden = embedding = 64): weights do not
change the cost of inference. Writes ``benchmarks/results/inference.json`` and the
``inference`` section of ``benchmarks/RESULTS.md`` (``--quick``: a small graph, written under
the cache dir instead).

    python benchmarks/bench_inference.py --quick
    nohup /usr/bin/time -v python benchmarks/bench_inference.py > inference.log 2>&1 &
"""

from __future__ import annotations

import os

# One thread everywhere ("per core"), before numpy/torch are imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import argparse  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from _common import (publish, add_guard_args, finish_machine,  # noqa: E402
                     guard_machine, machine_info, median_of, metric, peak_rss_bytes,
                     setup_logging)
from _graphs import (add_graph_args, gowalla_graph, mean_group_size_for,  # noqa: E402
                     synthetic_graph)
from _memory import TreeMemory  # noqa: E402
from inference_parts import (EMB_DIM, HIDDEN, NEIGHBORS, NUM_LAYERS, TOP_T,  # noqa: E402
                             cosine_spread, degenerate, make_encoder, recall_at_k,
                             recursive_embed, substitute_embeddings, write_run_dir)
from inference_report import markdown  # noqa: E402

NAME = "inference"
log = logging.getLogger("bench_inference")


# --------------------------------------------------------------------------- one graph
def bench_graph(label: str, suffix: str, graph: Path, args: argparse.Namespace, metrics: list,
                extra: dict, ray_path: bool) -> None:
    import torch

    from pinsage_ray import GraphStore, LocalWalker
    from pinsage_ray.index import HNSWConfig, HNSWIndex, exact_topk
    from pinsage_ray.inference.layerwise import embed_all
    from pinsage_ray.inference.pipeline import DEFAULT_SEED

    torch.set_num_threads(1)
    rng = np.random.default_rng(12345)
    store = GraphStore(graph)
    n = store.num_items
    feats = store.features()
    features = None if feats is None else np.ascontiguousarray(feats, dtype=np.float32)
    degree = store.degrees("item")
    log_deg = np.log1p(degree.astype(np.float32))
    ex: dict[str, Any] = {"graph_dir": str(graph), "num_items": n, "num_edges": store.num_edges,
                          "feature_dim": 0 if features is None else features.shape[1]}
    extra[label] = ex
    heavy = n > 200_000  # one timed run for the slow, large-N steps

    # ---- neighbourhoods (shared by both methods)
    setting = dict(num_walks=args.num_walks, **NEIGHBORS)
    log.info("[%s] importance_neighbors of all %d items (%s)", label, n, setting)
    walker = LocalWalker(graph)
    t0 = time.perf_counter()
    nb = walker.importance_neighbors(np.arange(n), seed=DEFAULT_SEED, **setting)
    nb_s = time.perf_counter() - t0
    del walker
    gc.collect()
    filled = float((nb.ids >= 0).sum(1).mean())
    ex["neighbors"] = {"setting": setting, "seconds": nb_s, "seeds_per_s": n / nb_s,
                       "mean_filled_slots": filled, "timed": "once"}
    log.info("[%s]   %.1f s (%.0f seeds/s); %.1f of %d slots filled on average", label, nb_s,
             n / nb_s, filled, TOP_T)
    metrics.append(metric(f"importance_neighbors_all_items_seconds{suffix}", nb_s, "s",
                          higher_is_better=False))

    encoder = make_encoder(n, ex["feature_dim"])

    # ---- layer-wise, in process
    out: dict[str, np.ndarray] = {}
    cpu: list[float] = []

    def layerwise() -> None:
        c0 = time.process_time()
        out["emb"] = embed_all(encoder, features, degree, nb.ids, nb.weights)
        cpu.append(time.process_time() - c0)

    log.info("[%s] layer-wise embed_all (1 torch thread), %d repeats", label, args.repeats)
    lw_s, lw_times = median_of(layerwise, args.repeats, warmup=0 if heavy else 1)
    emb = out.pop("emb")
    lw_rate = n / lw_s
    cpu_over_wall = float(np.median(cpu)) / lw_s
    ex["layerwise"] = {"seconds_median": lw_s, "seconds": lw_times, "items_per_s": lw_rate,
                       "cpu_over_wall": cpu_over_wall, "warmup": 0 if heavy else 1,
                       "node_computations_per_item": NUM_LAYERS + 1}
    log.info("[%s]   %.0f items/s (median %.2f s of %s; cpu/wall %.2f)", label, lw_rate, lw_s,
             [round(t, 2) for t in lw_times], cpu_over_wall)
    metrics.append(metric(f"layerwise_items_per_s{suffix}", lw_rate, "items/s"))

    # ---- recursive baseline
    rec_metrics = []
    for batch, count in ((64, args.recursive_items), (1, args.recursive_items_b1)):
        items = rng.choice(n, min(count, n), replace=False).astype(np.int64)
        res: dict[str, Any] = {}

        def recursive() -> None:
            res["emb"], res["work"] = recursive_embed(encoder, items, nb, features, log_deg,
                                                      batch)

        log.info("[%s] recursive baseline: %d items in batches of %d", label, len(items), batch)
        r_s, r_times = median_of(recursive, args.repeats, warmup=1)
        rate = len(items) / r_s
        diff = float(np.abs(res["emb"] - emb[items]).max())
        work = float(np.sum(res["work"])) / len(items)
        ex[f"recursive_b{batch}"] = {"items": len(items), "batch": batch, "seconds_median": r_s,
                                     "seconds": r_times, "items_per_s": rate,
                                     "node_computations_per_item": work,
                                     "max_abs_diff_vs_layerwise": diff}
        log.info("[%s]   batch %d: %.0f items/s, %.0f node computations/item (layer-wise %d), "
                 "ratio %.1f; max |diff| vs layer-wise %.2e", label, batch, rate, work,
                 NUM_LAYERS + 1, lw_rate / rate, diff)
        tag = "" if batch == 64 else "_b1"
        rec_metrics.append(metric(f"recursive_items_per_s{tag}{suffix}", rate, "items/s"))
        rec_metrics.append(metric(f"layerwise_vs_recursive{tag}_ratio{suffix}", lw_rate / rate,
                                  "ratio"))
    metrics.extend(rec_metrics)

    # ---- Ray Data path
    if ray_path:
        bench_ray(label, suffix, graph, encoder, nb, emb, args, metrics, ex, lw_rate)

    # ---- index
    spread = cosine_spread(emb, rng)
    ex["embedding_cosine_spread"] = spread
    index_emb, source = emb, "layer-wise embeddings of the untrained model"
    if degenerate(spread):
        index_emb, how = substitute_embeddings(features, nb.ids, nb.weights)
        source = f"substitute ({how})"
        ex["substitute_cosine_spread"] = cosine_spread(index_emb, rng)
        log.info("[%s] untrained embeddings degenerate (cosine of random pairs mean %.3f, std "
                 "%.3f): indexing a %s instead", label, spread["mean"], spread["std"], how)
    ex["index_vectors"] = source
    del nb
    gc.collect()

    q = min(args.queries, n // 10)
    perm = rng.permutation(n)
    held, keep = np.sort(perm[:q]), np.sort(perm[q:])
    base = np.ascontiguousarray(index_emb[keep])
    queries = np.ascontiguousarray(index_emb[held])
    log.info("[%s] HNSW build on %d vectors (HNSWConfig() defaults, 1 thread)", label, len(keep))
    t0 = time.perf_counter()
    index = HNSWIndex.build(base, keep, HNSWConfig())
    build_wall = time.perf_counter() - t0
    man = index.manifest
    log.info("[%s]   built in %.1f s (insert %.1f s, tune %.1f s): search=%s (%s), ef=%d, "
             "manifest recall@10 %.4f (HNSW %.4f)", label, build_wall, man["build_seconds"],
             man.get("tune_seconds", 0.0), man["search"], man.get("search_reason"), man["ef"],
             man["recall_at_k"], man["hnsw_recall_at_k"])

    hres: dict[str, Any] = {}

    def hnsw_query() -> None:
        hres["ids"], hres["scores"] = index.query(queries, 10)

    h_s, h_times = median_of(hnsw_query, args.repeats, warmup=1)
    eres: dict[str, Any] = {}
    e_rep = 1 if heavy else args.repeats
    qe = min(q, max(args.exact_queries, 1000))
    exact_q = queries[:qe]

    def exact_query() -> None:
        eres["idx"], eres["scores"] = exact_topk(exact_q, base, 10, "cosine")

    log.info("[%s] exact_topk of %d queries over %d vectors (%d run(s))", label, qe, len(keep),
             e_rep)
    e_s, e_times = median_of(exact_query, e_rep, warmup=0 if heavy else 1)
    truth = keep[eres["idx"]]
    n_recall = min(1000, q)
    rec = recall_at_k(hres["ids"][:n_recall], hres["scores"][:n_recall], truth[:n_recall],
                      eres["scores"][:n_recall])
    rec_all = recall_at_k(hres["ids"][:qe], hres["scores"][:qe], truth, eres["scores"])
    hq, eq = q / h_s, qe / e_s

    # held-out recall / QPS along the ef ladder (1000 queries, median of 3 runs each)
    from pinsage_ray.index import EF_LADDER

    chosen_ef, sweep, ef_target = int(man["ef"]), {}, None
    index.search = "hnsw"  # the sweep is of HNSW, whichever search the build chose
    for ef in sorted({max(e, 10) for e in EF_LADDER}):
        index.ef = ef
        got: dict[str, Any] = {}

        def sweep_query() -> None:
            got["r"] = index.query(queries[:n_recall], 10)

        sw_s, _ = median_of(sweep_query, 3, warmup=1)
        ids_, sc_ = got["r"]
        qps = n_recall / sw_s
        r = recall_at_k(ids_, sc_, truth[:n_recall], eres["scores"][:n_recall])
        sweep[str(ef)] = {"recall_at_10": r, "qps": qps, "qps_vs_exact": qps / eq}
        if r >= 0.95 and ef_target is None:
            ef_target = ef
        if r >= 0.99:
            break
    index.ef, index.search = chosen_ef, man["search"]
    log.info("[%s]   held-out ef sweep: %s", label, {e: (round(v["recall_at_10"], 3),
                                                         round(v["qps_vs_exact"])) for e, v in
                                                     sweep.items()})
    ex["index"] = {"vectors": source, "indexed": len(keep), "held_out_queries": q,
                   "config": {k: man[k] for k in ("space", "M", "ef_construction",
                                                  "target_recall", "seed")},
                   "build_wall_seconds": build_wall, "insert_seconds": man["build_seconds"],
                   "tune_seconds": man.get("tune_seconds"), "ef": man["ef"],
                   "search": man["search"], "search_reason": man.get("search_reason"),
                   "build_hnsw_qps": man.get("hnsw_qps"), "build_exact_qps": man.get("exact_qps"),
                   "recall_queries": man.get("recall_queries"),
                   "recall_at_10_manifest": man["recall_at_k"],
                   "recall_at_10_manifest_hnsw": man["hnsw_recall_at_k"],
                   "recall_curve": man["recall_curve"],
                   "recall_at_10_heldout_1000": rec, "recall_at_10_heldout_all": rec_all,
                   "hnsw_query_seconds": h_times, "exact_query_seconds": e_times,
                   "exact_runs": e_rep, "exact_queries": qe, "hnsw_qps": hq, "exact_qps": eq,
                   "build_runs": 1, "heldout_ef_sweep": sweep,
                   "heldout_ef_for_recall_095": ef_target}
    ex["index_search"] = man["search"]  # which search `auto` chose
    log.info("[%s]   recall@10 %.4f on %d held-out queries (%.4f on all %d); QPS index (%s) "
             "%.0f, exact %.1f, ratio %.1f", label, rec, n_recall, rec_all, q, man["search"], hq, eq,
             hq / eq)
    metrics += [
        metric(f"index_build_seconds{suffix}", build_wall, "s", higher_is_better=False),
        metric(f"index_ef{suffix}", man["ef"], "ef", higher_is_better=False),
        metric(f"index_recall_at_10{suffix}", rec, "recall"),
        metric(f"index_recall_at_10_manifest{suffix}", man["recall_at_k"], "recall"),
        metric(f"index_qps{suffix}", hq, "queries/s"),
        metric(f"exact_qps{suffix}", eq, "queries/s"),
        metric(f"index_qps_vs_exact_ratio{suffix}", hq / eq, "ratio"),
    ]
    if ef_target is not None:
        at = sweep[str(ef_target)]
        metrics += [
            metric(f"index_ef_heldout_recall_095{suffix}", ef_target, "ef",
                   higher_is_better=False),
            metric(f"index_recall_at_10_heldout_ef{suffix}", at["recall_at_10"], "recall"),
            metric(f"index_qps_vs_exact_ratio_heldout_ef{suffix}", at["qps_vs_exact"], "ratio"),
        ]
    del index, base, queries, emb, index_emb
    gc.collect()


def bench_ray(label: str, suffix: str, graph: Path, encoder: Any, nb: Any, emb: np.ndarray,
              args: argparse.Namespace, metrics: list, ex: dict, lw_rate: float) -> None:
    import ray

    from pinsage_ray import init_ray
    from pinsage_ray.inference.pipeline import DEFAULT_SEED, embed, load_embeddings

    run_dir = Path(args.cache_dir) / f"inference_run_{label}"
    write_run_dir(run_dir, encoder, graph, nb, args.num_walks, DEFAULT_SEED)
    t0 = time.perf_counter()
    init_ray(num_cpus=2, object_store_memory=int(args.object_store_gb * 2**30),
             include_dashboard=False)
    start_s = time.perf_counter() - t0
    try:
        res: dict[str, Any] = {}

        def run() -> None:
            res["r"] = embed(run_dir, mode="ray", batch_size=args.ray_batch_size,
                             num_actors=args.ray_actors)

        log.info("[%s] Ray Data embed (mode='ray', %d actor(s), batch %d), %d repeats", label,
                 args.ray_actors, args.ray_batch_size, args.ray_repeats)
        r_s, r_times = median_of(run, args.ray_repeats, warmup=0 if args.quick else 1)
        _, ray_emb = load_embeddings(run_dir)
        diff = float(np.abs(ray_emb - emb).max())
    finally:
        ray.shutdown()
    n = len(emb)
    rate = n / r_s
    ex["ray"] = {"seconds_median": r_s, "seconds": r_times, "items_per_s": rate,
                 "ray_start_seconds": start_s, "actors": args.ray_actors,
                 "batch_size": args.ray_batch_size, "max_abs_diff_vs_layerwise": diff,
                 "run_dir": str(run_dir)}
    log.info("[%s]   %.0f items/s (median %.1f s of %s), %.2fx in-process; max |diff| %.2e",
             label, rate, r_s, [round(t, 1) for t in r_times], rate / lw_rate, diff)
    metrics.append(metric(f"layerwise_items_per_s_ray{suffix}", rate, "items/s"))
    metrics.append(metric(f"ray_vs_inprocess_ratio{suffix}", rate / lw_rate, "ratio"))
    shutil.rmtree(run_dir, ignore_errors=True)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--groups", type=int, default=None, help="default: --items")
    p.add_argument("--edges-target", type=int, default=None, help="default: 20 x --items")
    p.add_argument("--feature-dim", type=int, default=32)
    p.add_argument("--seed", type=int, default=0, help="synthetic graph seed")
    p.add_argument("--num-walks", type=int, default=50,
                   help="walks per item for the T = 50 neighbourhoods (NeighborConfig default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--recursive-items", type=int, default=1024,
                   help="items the recursive baseline embeds in batches of 64")
    p.add_argument("--recursive-items-b1", type=int, default=500,
                   help="items the recursive baseline embeds one per request")
    p.add_argument("--queries", type=int, default=10_000, help="held-out index queries")
    p.add_argument("--exact-queries", type=int, default=2000,
                   help="held-out queries timed with exact search (>= 1000; its QPS is per "
                        "query, so a subset is enough)")
    p.add_argument("--ray-actors", type=int, default=1)
    p.add_argument("--ray-batch-size", type=int, default=8192)
    p.add_argument("--ray-repeats", type=int, default=2)
    p.add_argument("--object-store-gb", type=float, default=1.0)
    add_graph_args(p, data_help="folder holding gowalla/")
    p.add_argument("--no-gowalla", action="store_true")
    p.add_argument("--note", default=None, help="a sentence for RESULTS.md")
    p.add_argument("--quick", action="store_true",
                   help="small synthetic graph only (Ray path on it); results under the cache "
                        "dir, not benchmarks/results or RESULTS.md")
    add_guard_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.items = 10_000
        args.recursive_items, args.recursive_items_b1, args.queries = 256, 100, 1000
        args.ray_repeats = 1
    args.groups = args.groups or args.items
    args.edges_target = args.edges_target or 20 * args.items
    if args.repeats < 1 or args.ray_repeats < 1:
        p.error("--repeats and --ray-repeats must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    machine = guard_machine(machine_info(), args, committed=not args.quick)
    tree = TreeMemory(interval=1.0)
    cache = Path(args.cache_dir)
    t_start = time.perf_counter()

    syn_graph, syn_info = synthetic_graph(
        cache / (f"synthetic_i{args.items}_g{args.groups}_e{args.edges_target}_s{args.seed}"
                 f"_f{args.feature_dim}"),
        items=args.items, groups=args.groups, feature_dim=args.feature_dim, seed=args.seed,
        mean_group_size=mean_group_size_for(args.edges_target, args.groups, args.items))
    gow = None if args.quick or args.no_gowalla else gowalla_graph(cache, args.data_dir)
    gow_graph = None if gow is None else gow[0]
    if gow is None:
        log.info("Gowalla skipped (--quick, --no-gowalla or not under %s)", args.data_dir)

    metrics: list[dict] = []
    extra: dict[str, Any] = {
        "args": vars(args), "notes": [] if args.note is None else [args.note],
        "command": " ".join(["python benchmarks/bench_inference.py",
                             *(sys.argv[1:] if argv is None else argv)]),
        "model": {"num_layers": NUM_LAYERS, "hidden_dim": HIDDEN, "embedding_dim": EMB_DIM,
                  "top_t": TOP_T, "trained": False}}
    bench_graph("synthetic", "", syn_graph, args, metrics, extra, ray_path=args.quick)
    gc.collect()
    if gow_graph is not None:
        bench_graph("gowalla", "_gowalla", gow_graph, args, metrics, extra, ray_path=True)
    tree.sample()
    extra["memory"] = {"driver_peak_rss_bytes": peak_rss_bytes()["self"],
                       "tree_peak_rss_bytes": tree.stop(), "synthetic_build": syn_info}
    extra["total_seconds"] = time.perf_counter() - t_start

    head = ["layerwise_items_per_s", "layerwise_vs_recursive_ratio", "index_recall_at_10",
            "index_qps_vs_exact_ratio", "index_build_seconds"]
    metrics.sort(key=lambda m: (m["name"].endswith("_gowalla"),
                                head.index(m["name"].removesuffix("_gowalla"))
                                if m["name"].removesuffix("_gowalla") in head else len(head)))
    if args.items < 1_000_000:
        extra["notes"].append(f"Note: synthetic graph of {args.items:,} items; the index "
                              "targets are stated for 1M items.")
    finish_machine(machine)
    md = markdown(metrics, machine, extra)
    publish(NAME, metrics, machine, extra, md, cache / "quick" if args.quick else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
