"""The stages ``bench_scale.py`` measures on one generated graph (plain functions, no report).

Each ``measure_*`` function takes the graph directory and the benchmark's arguments and returns
a JSON-able dict; they reuse the walk, training-step and inference helpers of the other
benchmarks in this folder so that every benchmark times the same code the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import multiprocessing
import os
import resource
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import median_of

log = __import__("logging").getLogger("bench_scale")


# --------------------------------------------------------------------------- graph
def build_graph(edges: int, args: argparse.Namespace, folder: Path) -> dict:
    """Generate the raw Parquet files once (cached); return how long generating took."""
    from pinsage_ray.data import SyntheticConfig, write_synthetic

    raw = folder / "raw"
    done = raw / "summary.json"
    if done.is_file():
        info = json.loads(done.read_text())
        return {"cached": True, "num_interactions": info["num_interactions"],
                "config": info["config"]}
    items = max(int(edges * args.items_per_edge), 100)
    groups = max(int(edges / args.group_size), 10)
    cfg = SyntheticConfig(num_items=items, num_groups=groups, num_communities=100,
                          mean_group_size=min(edges / groups, float(items)),
                          feature_dim=args.feature_dim, seed=args.seed)
    folder.mkdir(parents=True, exist_ok=True)
    log.info("generating %d items, %d groups, ~%d edges into %s", items, groups, edges, raw)
    summary = write_synthetic(cfg, raw, overwrite=True)
    return {"cached": False, "seconds": summary["seconds"],
            "num_interactions": summary["num_interactions"], "config": dataclasses.asdict(cfg)}


def _prepare_child(raw: str, graph: str, out: str) -> None:
    from pinsage_ray import prepare

    t0 = time.perf_counter()
    store = prepare(os.path.join(raw, "interactions.parquet"), graph,
                    item_features=os.path.join(raw, "item_features.parquet"), overwrite=True,
                    engine="local")  # today's single process (auto picks Ray for big files)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    Path(out).write_text(json.dumps({"seconds": seconds, "peak_rss_bytes": peak,
                                     "num_edges": store.num_edges,
                                     "num_items": store.num_items,
                                     "num_groups": store.num_groups}))


def measure_prepare(folder: Path, graph: Path) -> dict:
    """``prepare`` from the Parquet files as the CLI runs it, in a fresh process (its own
    peak RSS, nothing else's)."""
    out = folder / "prepare.json"
    proc = multiprocessing.get_context("spawn").Process(
        target=_prepare_child, args=(str(folder / "raw"), str(graph), str(out)))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"prepare of {folder} failed with exit code {proc.exitcode}")
    res = json.loads(out.read_text())
    log.info("prepare: %d edges in %.1f s, peak RSS %.2f GiB", res["num_edges"], res["seconds"],
             res["peak_rss_bytes"] / 2**30)
    return res


def dir_bytes(graph: Path) -> dict:
    """Bytes of the graph directory on disk and of the arrays a walker keeps resident."""
    from pinsage_ray import GraphStore

    store = GraphStore(graph)
    disk = sum(p.stat().st_size for p in graph.rglob("*") if p.is_file())
    arrays = {name: int(store.array(name).nbytes) for name in
              ("item_indptr", "item_indices", "item_weights", "group_indptr", "group_indices",
               "group_weights") if store.has(f"{name}.npy")}
    feats = store.features()
    return {"num_edges": store.num_edges, "num_items": store.num_items,
            "num_groups": store.num_groups, "disk_bytes": disk,
            "array_bytes": sum(arrays.values()), "arrays": arrays,
            "feature_bytes": 0 if feats is None else int(feats.nbytes)}


# --------------------------------------------------------------------------- walks
def measure_walks(graph: Path, args: argparse.Namespace) -> dict:
    import ray

    from bench_walks import _strip, time_importance, time_walks
    from pinsage_ray import LocalWalker, init_ray
    from pinsage_ray.sampling.service import ShardedGraph
    from pinsage_ray.training.config import NeighborConfig

    rng = np.random.default_rng(12345)
    local = LocalWalker(graph)
    n = local.num_items
    seeds = rng.integers(0, n, args.walkers, dtype=np.int64)
    imp_seeds = rng.choice(n, min(args.importance_seeds, n), replace=False).astype(np.int64)
    setting = dataclasses.asdict(NeighborConfig())
    r = time_walks(local, seeds, args.walk_length, args.repeats)
    ref = r["paths"]
    res: dict[str, Any] = {"walkers": len(seeds), "walk_length": args.walk_length,
                           "inprocess": _strip(r)}
    log.info("walks in process: %.2fM hops/s", r["hops_per_s"] / 1e6)
    imp = time_importance(local, imp_seeds, setting, args.repeats)
    res["importance"] = {**_strip(imp), "setting": setting}
    log.info("importance_neighbors: %.0f seeds/s", imp["seeds_per_s"])
    del local
    gc.collect()
    init_ray(num_cpus=2, object_store_memory=int(args.object_store_gb * 2**30),
             include_dashboard=False)
    try:
        t0 = time.perf_counter()
        svc = ShardedGraph(graph, 2)
        start_s = time.perf_counter() - t0
        try:
            s = time_walks(svc, seeds, args.walk_length, args.repeats)
            res["sharded_2"] = {**_strip(s), "start_s": start_s,
                                "identical_to_inprocess": bool(np.array_equal(s["paths"], ref))}
            log.info("walks on 2 shards: %.2fM hops/s (start %.1f s), identical %s",
                     s["hops_per_s"] / 1e6, start_s, res["sharded_2"]["identical_to_inprocess"])
        finally:
            svc.shutdown()
    finally:
        ray.shutdown()
    return res


# --------------------------------------------------------------------------- training
def measure_train_step(graph: Path, args: argparse.Namespace) -> dict:
    from train_steps import step_breakdown

    ns = argparse.Namespace(epochs=3, batch_size=256, batches=args.train_steps + 1)
    r = step_breakdown(graph, ns, args.train_steps)
    keep = ("steps", "median_s", "step_s", "first_step_with_table_s", "examples_per_s_inprocess",
            "output_nodes_median", "layer0_nodes_median")
    log.info("train step %.1f ms (first step with the neighbourhood table %.1f s)",
             1000 * r["step_s"], r["first_step_with_table_s"])
    return {**{k: r[k] for k in keep}, "build_ms_batch_mode": _batch_mode_build_ms(graph, args)}


def _batch_mode_build_ms(graph: Path, args: argparse.Namespace) -> float:
    """Median ms to build one batch when neighbourhoods are walked per batch
    (``NeighborSource(mode='batch')``) instead of from a per-epoch table of every item: the
    mode for graphs whose table would not fit a worker."""
    from pinsage_ray import GraphStore, LocalWalker
    from pinsage_ray.training import BatchProducer, pairs_for
    from pinsage_ray.training.batches import NeighborSource
    from train_steps import train_config

    cfg = train_config(argparse.Namespace(epochs=3, batch_size=256,
                                          batches=args.train_steps + 1), 1, 0)
    walker = LocalWalker(graph)
    producer = BatchProducer(graph, cfg, pairs_for(GraphStore(graph), walker, cfg), walker=walker)
    producer.builder.neighbors = NeighborSource(walker, producer.config, mode="batch")
    med, _ = median_of(lambda: producer.batch(2, 1), args.train_steps, warmup=1)
    log.info("batch build with per-batch neighbourhood walks: %.1f ms", 1000 * med)
    return 1000 * med


# --------------------------------------------------------------------------- inference
def measure_embed(graph: Path, args: argparse.Namespace, edges: int,
                  folder: Path) -> tuple[np.ndarray, dict]:
    """Neighbourhoods + layer-wise embeddings of every item; Ray Data path when small enough.

    Returns the embeddings (or a trained-like stand-in when the untrained model's are all in
    a narrow cone, as ``bench_inference`` does) for the index stage.
    """
    import torch

    from inference_parts import cosine_spread, degenerate, make_encoder, substitute_embeddings
    from pinsage_ray import GraphStore, LocalWalker
    from pinsage_ray.inference.layerwise import embed_all
    from pinsage_ray.inference.pipeline import DEFAULT_SEED
    from pinsage_ray.training.config import NeighborConfig

    torch.set_num_threads(1)
    store = GraphStore(graph)
    n = store.num_items
    feats = store.features()
    features = None if feats is None else np.ascontiguousarray(feats, dtype=np.float32)
    degree = store.degrees("item")
    setting = dataclasses.asdict(NeighborConfig())
    t0 = time.perf_counter()
    nb = LocalWalker(graph).importance_neighbors(np.arange(n), seed=DEFAULT_SEED, **setting)
    nb_s = time.perf_counter() - t0
    encoder = make_encoder(n, 0 if features is None else features.shape[1])
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    emb = embed_all(encoder, features, degree, nb.ids, nb.weights)
    lw_s = time.perf_counter() - t0
    res: dict[str, Any] = {"num_items": n, "neighbors_setting": setting,
                           "neighbors_seconds": nb_s, "neighbors_seeds_per_s": n / nb_s,
                           "layerwise_seconds": lw_s, "items_per_s": n / lw_s,
                           "cpu_over_wall": (time.process_time() - cpu0) / lw_s,
                           "items_per_s_with_neighbors": n / (lw_s + nb_s)}
    log.info("neighbourhoods of %d items %.1f s; embed_all %.1f s (%.0f items/s)", n, nb_s,
             lw_s, n / lw_s)
    if edges <= args.ray_embed_max_edges:
        res["ray"] = _ray_embed(graph, encoder, nb, emb, args, folder, setting)
    spread = cosine_spread(emb, np.random.default_rng(7))
    res["cosine_spread"] = spread
    if degenerate(spread):
        emb, how = substitute_embeddings(features, nb.ids, nb.weights)
        res["index_vectors"] = f"substitute: {how}"
    else:
        res["index_vectors"] = "layer-wise embeddings of the untrained model"
    del nb
    gc.collect()
    return emb, res


def _ray_embed(graph: Path, encoder: Any, nb: Any, emb: np.ndarray, args: argparse.Namespace,
               folder: Path, setting: dict) -> dict:
    import ray

    from inference_parts import write_run_dir
    from pinsage_ray import init_ray
    from pinsage_ray.inference.pipeline import DEFAULT_SEED, embed, load_embeddings

    run_dir = folder / "embed_run"
    write_run_dir(run_dir, encoder, graph, nb, setting["num_walks"], DEFAULT_SEED,
                  top_t=setting["top_t"])
    init_ray(num_cpus=2, object_store_memory=int(args.object_store_gb * 2**30),
             include_dashboard=False)
    try:
        t0 = time.perf_counter()
        embed(run_dir, mode="ray")
        seconds = time.perf_counter() - t0
        _, ray_emb = load_embeddings(run_dir)
        diff = float(np.abs(ray_emb - emb).max())
    finally:
        ray.shutdown()
        shutil.rmtree(run_dir, ignore_errors=True)
    log.info("Ray Data embed: %.1f s (%.0f items/s), max |diff| vs in-process %.1e", seconds,
             len(emb) / seconds, diff)
    return {"seconds": seconds, "items_per_s": len(emb) / seconds,
            "max_abs_diff_vs_layerwise": diff}


# --------------------------------------------------------------------------- index
def measure_index(emb: np.ndarray, args: argparse.Namespace) -> dict:
    """HNSW on every core over all items but ``args.queries`` held-out ones."""
    import torch

    from inference_parts import recall_at_k
    from pinsage_ray.index import HNSWConfig, HNSWIndex, exact_topk

    n = len(emb)
    q = min(args.queries, n // 10)
    if n - q > args.index_max_items:
        return {"skipped": f"{n - q:,} vectors > --index-max-items={args.index_max_items:,}"}
    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    perm = np.random.default_rng(11).permutation(n)
    held, keep = np.sort(perm[:q]), np.sort(perm[q:])
    base, queries = np.ascontiguousarray(emb[keep]), np.ascontiguousarray(emb[held])
    fields = {f.name for f in dataclasses.fields(HNSWConfig)}
    cfg = HNSWConfig(num_threads=-1, **({"search": "hnsw"} if "search" in fields else {}))
    t0 = time.perf_counter()
    index = HNSWIndex.build(base, keep, cfg)
    build_s = time.perf_counter() - t0
    got: dict[str, Any] = {}

    def hnsw() -> None:
        got["h"] = index.query(queries, 10)

    def exact() -> None:
        got["e"] = exact_topk(queries, base, 10, "cosine")

    h_s, _ = median_of(hnsw, args.repeats, warmup=1)
    e_s, _ = median_of(exact, args.repeats, warmup=1)
    (ids, scores), (idx, e_scores) = got["h"], got["e"]
    recall = recall_at_k(ids, scores, keep[idx], e_scores)
    man = index.manifest
    log.info("HNSW over %d vectors: built in %.1f s, ef=%d, held-out recall@10 %.4f, QPS %.0f "
             "vs exact %.0f", len(keep), build_s, man["ef"], recall, q / h_s, q / e_s)
    partitioned = None
    if getattr(args, "index_partitions", 0) > 1:
        from scale_distributed import measure_partitioned_index

        partitioned = measure_partitioned_index(base, keep, queries, index, (keep[idx], e_scores),
                                                args.index_partitions)
    return {"partitioned": partitioned, "indexed": len(keep), "held_out_queries": q,
            "threads": threads,
            "build_seconds": build_s, "ef": man["ef"],
            "recall_at_10_manifest": man["recall_at_k"], "recall_curve": man["recall_curve"],
            "recall_at_10_heldout": recall, "hnsw_qps": q / h_s, "exact_qps": q / e_s,
            "qps_vs_exact": e_s / h_s}
