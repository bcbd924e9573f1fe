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
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from _common import (publish, REPO, add_guard_args, finish_machine, fmt_value,  # noqa: E402
                     guard_machine, load_note, machine_info, markdown_table, median_of, metric,
                     metrics_table, peak_rss_bytes, setup_logging)
from bench_walks import TreeMemory, _build_gowalla, _write_build_info, ensure_graph  # noqa: E402

NAME = "inference"
log = logging.getLogger("bench_inference")

NUM_LAYERS, HIDDEN, EMB_DIM, TOP_T = 2, 64, 64, 50
NEIGHBORS = dict(walk_length=2, restart_prob=0.5, top_t=TOP_T)  # num_walks from --num-walks

TARGETS = {  # metric -> (threshold, text); from the benchmark's issue
    "layerwise_vs_recursive_ratio": (10.0, ">= 10 (K = 2, T = 50)"),
    "index_recall_at_10": (0.95, ">= 0.95 (1M items)"),
    "index_qps_vs_exact_ratio": (10.0, ">= 10 (1M items)"),
    "layerwise_vs_recursive_ratio_gowalla": (10.0, ">= 10 (K = 2, T = 50)"),
}


# --------------------------------------------------------------------------- graphs
def _build_synthetic_features(items: int, groups: int, edges: int, feature_dim: int, seed: int,
                              out: str) -> None:
    """Generate + prepare a synthetic graph *with* item features (in a child process)."""
    from pinsage_ray import prepare
    from pinsage_ray.data import SyntheticConfig, read_synthetic, write_synthetic

    out_dir = Path(out)
    cfg = SyntheticConfig(num_items=items, num_groups=groups,
                          mean_group_size=min(max(edges / groups, 1.0), float(items)),
                          feature_dim=feature_dim, seed=seed)
    t0 = time.perf_counter()
    raw = out_dir / "raw"
    write_synthetic(cfg, raw, overwrite=True)
    t1 = time.perf_counter()
    store = prepare(read_synthetic(raw), out_dir / "graph", overwrite=True)
    t2 = time.perf_counter()
    shutil.rmtree(raw)
    _write_build_info(out_dir, {"generate_s": t1 - t0, "prepare_s": t2 - t1,
                                "num_edges": store.num_edges, "config": vars(cfg)})


# --------------------------------------------------------------------------- pieces
def make_encoder(num_items: int, feature_dim: int) -> Any:
    import torch

    from pinsage_ray.model.encoder import ModelConfig, PinSageEncoder

    torch.manual_seed(0)
    cfg = ModelConfig(num_items=num_items, feature_dim=feature_dim, hidden_dim=HIDDEN,
                      embedding_dim=EMB_DIM, num_layers=NUM_LAYERS,
                      use_id_embedding=feature_dim == 0)
    return PinSageEncoder(cfg).eval()


def recursive_embed(encoder: Any, items: np.ndarray, nb: Any, features: np.ndarray | None,
                    log_deg: np.ndarray, batch: int) -> tuple[np.ndarray, list[int]]:
    """The baseline: per request of ``batch`` items, build its K-hop graph and run forward.

    Returns the embeddings and, per request, the node computations done (layer-0 nodes +
    layer-1 nodes + ... + output nodes).
    """
    import torch

    from pinsage_ray.model.batch import EncoderInput
    from pinsage_ray.training.batches import expand_blocks

    out, work = [], []
    with torch.no_grad():
        for s in range(0, len(items), batch):
            req = items[s:s + batch]
            nodes0, blocks = expand_blocks(req, NUM_LAYERS, nb.take)
            inp = EncoderInput(
                node_ids=torch.from_numpy(nodes0),
                features=None if features is None else torch.from_numpy(
                    np.ascontiguousarray(features[nodes0], dtype=np.float32)),
                log_degree=torch.from_numpy(log_deg[nodes0]), blocks=blocks)
            out.append(encoder(inp).numpy())
            work.append(len(nodes0) + sum(b.num_dst for b in blocks))
    return np.concatenate(out), work


def cosine_spread(emb: np.ndarray, rng: np.random.Generator, pairs: int = 20000) -> dict:
    a, b = rng.integers(0, len(emb), pairs), rng.integers(0, len(emb), pairs)
    x, y = emb[a], emb[b]
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-30)
    q = np.quantile(cos, [0.05, 0.5, 0.95])
    return {"mean": float(cos.mean()), "std": float(cos.std()), "p05": float(q[0]),
            "p50": float(q[1]), "p95": float(q[2])}


def degenerate(spread: dict) -> bool:
    """All vectors in a narrow cone: random pairs nearly as close as neighbours would be."""
    return spread["mean"] > 0.8 or spread["std"] < 0.05


def substitute_embeddings(features: np.ndarray | None, nb_ids: np.ndarray,
                          nb_weights: np.ndarray, seed: int = 7) -> tuple[np.ndarray, str]:
    """Trained-like stand-in: features through a random matrix (or graph-smoothed random
    vectors without features), L2-normalised."""
    rng = np.random.default_rng(seed)
    if features is not None:
        f = np.asarray(features, np.float32)
        x = f @ rng.standard_normal((f.shape[1], EMB_DIM)).astype(np.float32)
        how = "item features x a random (F, 64) matrix, L2-normalised"
    else:
        g = rng.standard_normal((len(nb_ids), EMB_DIM)).astype(np.float32)
        x = g.copy()
        for s in range(0, len(g), 65536):
            ids, w = nb_ids[s:s + 65536], nb_weights[s:s + 65536]
            x[s:s + 65536] += np.einsum("bt,btd->bd", np.where(ids >= 0, w, 0).astype(np.float32),
                                        g[np.maximum(ids, 0)])
        how = ("random Gaussian vectors plus the importance-weighted mean of their "
               "neighbours', L2-normalised")
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return x.astype(np.float32), how


def recall_at_k(found: np.ndarray, found_s: np.ndarray, truth: np.ndarray,
                truth_s: np.ndarray) -> float:
    """Fraction of returned items in the exact top-k (ties of the k-th score count as hits,
    as in ``HNSWIndex`` tuning)."""
    kth = truth_s[:, -1:]
    hit = (found[:, :, None] == truth[:, None, :]).any(-1)
    hit |= found_s >= kth - 1e-5 * np.maximum(1.0, np.abs(kth))
    return float(hit.mean())


def write_run_dir(run_dir: Path, encoder: Any, graph: Path, nb: Any, num_walks: int,
                  seed: int, top_t: int = TOP_T) -> None:
    """A run directory as ``train`` leaves it (model/), plus the neighbourhood table that
    ``embed`` would compute, so that the Ray path is timed without the walks."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pinsage_ray import GraphStore
    from pinsage_ray.inference.model_io import run_path, save_neighbors
    from pinsage_ray.training.config import NeighborConfig, TrainConfig

    if run_dir.exists():
        shutil.rmtree(run_dir)
    model_dir = run_dir / "model"
    model_dir.mkdir(parents=True)
    torch.save(encoder.state_dict(), model_dir / "model.pt")
    nc = NeighborConfig(num_walks=num_walks, **{**NEIGHBORS, "top_t": top_t})
    tc = TrainConfig.preset("paper", hidden_dim=HIDDEN, embedding_dim=EMB_DIM,
                            num_layers=NUM_LAYERS, neighbors=nc)
    (model_dir / "model.json").write_text(json.dumps(
        {"model_config": encoder.config.to_dict(), "train_config": tc.to_dict(),
         "graph_dir": str(graph), "epoch": 0, "note": "untrained, written by bench_inference"},
        indent=2, default=list))
    pq.write_table(pa.table({"id": GraphStore(graph).item_ids}), model_dir / "item_ids.parquet")
    info = {"seed": seed, "graph_dir": str(graph), **tc.to_dict()["neighbors"]}
    save_neighbors(run_path(run_dir, "inference", "neighbors"), nb.ids, nb.weights, info)


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


# --------------------------------------------------------------------------- report
def _graph_line(label: str, ex: dict) -> str:
    feat = (f"{ex['feature_dim']} feature columns" if ex["feature_dim"]
            else "no features (id embeddings)")
    nbx = ex["neighbors"]
    return (f"- **{label}**: {ex['num_items']:,} items, {ex['num_edges']:,} edges, {feat}. "
            f"Neighbourhoods of all items ({nbx['setting']['num_walks']} walks, length 2, "
            f"restart 0.5, T = {TOP_T}; {nbx['mean_filled_slots']:.1f} slots filled on "
            f"average): {nbx['seconds']:.1f} s, {fmt_value(nbx['seeds_per_s'])} seeds/s, "
            "timed once, shared by both methods and not in their items/s.")


def _detail_rows(extra: dict) -> list[list[str]]:
    rows = []
    for label in ("synthetic", "gowalla"):
        ex = extra.get(label)
        if not ex:
            continue
        lw = ex["layerwise"]
        rows.append([label, "layer-wise (`embed_all`)", fmt_value(lw["items_per_s"]),
                     f"{lw['node_computations_per_item']}", "-", "-"])
        for b in (64, 1):
            r = ex[f"recursive_b{b}"]
            rows.append([label, f"recursive, batch {b} ({r['items']} items)",
                         fmt_value(r["items_per_s"]), f"{r['node_computations_per_item']:.0f}",
                         f"{lw['items_per_s'] / r['items_per_s']:.0f}x",
                         f"{r['max_abs_diff_vs_layerwise']:.1e}"])
        if "ray" in ex:
            r = ex["ray"]
            rows.append([label, f"layer-wise on Ray Data ({r['actors']} actor)",
                         fmt_value(r["items_per_s"]), f"{NUM_LAYERS + 1}", "-",
                         f"{r['max_abs_diff_vs_layerwise']:.1e}"])
    return rows


def _index_rows(extra: dict) -> list[list[str]]:
    rows = []
    for label in ("synthetic", "gowalla"):
        ex = extra.get(label)
        if not ex:
            continue
        ix = ex["index"]
        rows.append([label, f"{ix['indexed']:,}", f"{ix['build_wall_seconds']:.1f}",
                     ix.get("search", "hnsw"), str(ix["ef"]),
                     f"{ix.get('recall_at_10_manifest_hnsw', ix['recall_at_10_manifest']):.4f}",
                     f"{ix['recall_at_10_heldout_1000']:.4f}", fmt_value(ix["hnsw_qps"]),
                     fmt_value(ix["exact_qps"]), f"{ix['hnsw_qps'] / ix['exact_qps']:.1f}x",
                     _sweep_text(ix)])
    return rows


def _sweep_text(ix: dict) -> str:
    return "; ".join(f"{ef} -> {v['recall_at_10']:.3f} / {v['qps_vs_exact']:.0f}x"
                     for ef, v in ix["heldout_ef_sweep"].items())


def markdown(metrics: list, machine: dict, extra: dict) -> str:
    a = extra["args"]
    mem = extra["memory"]
    lines = [
        "## Inference (`bench_inference.py`)",
        "",
        f"Run {machine['started_utc'][:10]} on {machine['cpu_model']}, "
        f"{machine['cpus_usable']} cores, {machine['memory_total_gib']} GiB; Python "
        f"{machine['python']}, torch {machine['torch']}, Ray {machine['ray']}; commit "
        f"`{machine['git_commit']}`. Command: `{extra['command']}` "
        f"({extra['total_seconds']:.0f} s in all).",
        "",
        *[_graph_line(lbl, extra[lbl]) for lbl in ("synthetic", "gowalla") if lbl in extra],
        "",
        f"Model: an untrained `PinSageEncoder` (K = {NUM_LAYERS}, hidden = embedding = "
        f"{HIDDEN}, importance pooling); weights do not change the cost of inference. "
        "Layer-wise = `embed_all`, every layer computed once for all items (torch on one "
        "thread). Recursive baseline = what per-request serving does: for each request, "
        "`expand_blocks` builds its K-hop graph from the same neighbourhood table and "
        "`encoder(EncoderInput(...))` runs, recomputing every neighbour shared with other "
        "requests; its outputs match layer-wise (max |diff| column). The headline "
        "`layerwise_vs_recursive_ratio` uses batches of 64 (the stronger baseline); `_b1` is "
        "one item per request. Times are medians of "
        f"{a['repeats']} runs after a warm-up (on graphs above 200k items layer-wise has no "
        "warm-up, and the exact search runs once).",
        "",
        metrics_table(metrics, TARGETS),
        "",
        "Where the ratio comes from (node computations = layer-0 + layer-1 + layer-2 vectors "
        "computed per output item):",
        "",
        markdown_table(["graph", "method", "items/s", "node computations / item",
                        "layer-wise speed-up", "max abs diff vs layer-wise"],
                       _detail_rows(extra)),
        "",
        f"Index: `HNSWIndex.build` with `HNSWConfig()` defaults (cosine, M = 16, "
        f"ef_construction = 200, ef tuned for held-out recall@10 >= 0.95, `search='auto'`, "
        f"one thread) on all items but {a['queries']:,} held out at random (fewer on small "
        "graphs: 10% of items); built once. The build tunes ef on a sample it holds out of "
        "the graph until tuned (its manifest recall, HNSW's at the chosen ef) and then "
        "chooses HNSW or exact search, whichever is faster (exact also when HNSW misses the "
        "target). Recall@10 is re-measured on 1,000 of the bench's held-out items against "
        "`exact_topk`; QPS: the index's `query(k=10)` (in the chosen search; recall 1 and "
        "ratio ~1 for exact) on all held-out queries vs `exact_topk` (chunked torch matmul) on "
        f"the first {a['exact_queries']:,} of them (QPS is per query, the cost of each is the "
        "same), both on one thread. The last column sweeps HNSW's ef on the held-out queries "
        "(`*_heldout_ef` metrics: the smallest ladder ef reaching 0.95).",
        "",
        markdown_table(["graph", "indexed", "build s", "search", "ef", "HNSW recall@10 (manifest)",
                        "recall@10 (held-out)", "HNSW QPS", "exact QPS", "ratio",
                        "held-out sweep: ef -> recall@10 / QPS ratio"],
                       _index_rows(extra)),
        "",
    ]
    for label in ("synthetic", "gowalla"):
        ex = extra.get(label)
        if ex:
            s = ex["embedding_cosine_spread"]
            lines.append(f"- {label}: cosine of random pairs of the untrained embeddings: "
                         f"mean {s['mean']:.3f}, std {s['std']:.3f} (p05 {s['p05']:.3f}, "
                         f"p95 {s['p95']:.3f}); indexed vectors: {ex['index_vectors']}.")
    if "ray" in extra.get("gowalla", {}) or "ray" in extra.get("synthetic", {}):
        r = (extra.get("gowalla") or extra["synthetic"])["ray"]
        lines.append(
            f"- Ray Data path: `embed(run_dir, mode='ray')` from a run directory written by "
            f"the script (model.pt of the same untrained encoder, and the neighbourhood table "
            f"saved where `embed` looks for it, so no walks are timed); {r['actors']} actor, "
            f"batch {r['batch_size']}; includes loading the model in every pass, writing "
            f"each layer's vectors to disk and gathering them back by id, and the Parquet "
            f"output; Ray itself was started beforehand ({r['ray_start_seconds']:.1f} s, "
            "not counted).")
    lines += [
        "",
        f"Machine load: {load_note(machine)} Layer-wise used "
        f"{extra['synthetic']['layerwise']['cpu_over_wall']:.2f} CPU-seconds per "
        "wall-second on the synthetic graph (1.00 = a core to itself).",
        "",
        f"Peak memory: benchmark process {mem['driver_peak_rss_bytes'] / 2**30:.2f} GiB; "
        f"summed RSS with its child processes {mem['tree_peak_rss_bytes'] / 2**30:.2f} GiB.",
    ]
    for note in extra.get("notes") or []:
        lines += ["", note]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_data = os.environ.get("PINSAGE_DATA_DIR") or str(REPO.parent / "shared" / "data")
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
    p.add_argument("--data-dir", default=default_data, help="folder holding gowalla/")
    p.add_argument("--cache-dir", default=str(REPO / ".bench_cache"))
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
    tree = TreeMemory()
    cache = Path(args.cache_dir)
    t_start = time.perf_counter()

    syn_folder = cache / (f"synthetic_i{args.items}_g{args.groups}_e{args.edges_target}"
                          f"_s{args.seed}_f{args.feature_dim}")
    syn_graph, syn_info = ensure_graph("synthetic", syn_folder, _build_synthetic_features,
                                       args.items, args.groups, args.edges_target,
                                       args.feature_dim, args.seed)
    gowalla_src = Path(args.data_dir) / "gowalla"
    gow_graph = None
    if not args.quick and not args.no_gowalla and (gowalla_src / "train.txt").is_file():
        gow_graph, _ = ensure_graph("gowalla", cache / "gowalla", _build_gowalla,
                                    str(gowalla_src))
    else:
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
