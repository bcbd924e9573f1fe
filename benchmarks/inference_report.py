"""The ``inference`` section of ``benchmarks/RESULTS.md``: headline metrics against their
targets, where the layer-wise speed-up comes from, and the HNSW index against exact search.

Kept apart from ``bench_inference.py`` so the measuring script stays about measuring; the
section is rendered from what the results JSON holds (``extra``), model settings included.
"""

from __future__ import annotations

from _common import fmt_value, load_note, markdown_table, metrics_table

TARGETS = {  # metric -> (threshold, text); from the benchmark's issue
    "layerwise_vs_recursive_ratio": (10.0, ">= 10 (K = 2, T = 50)"),
    "index_recall_at_10": (0.95, ">= 0.95 (1M items)"),
    "index_qps_vs_exact_ratio": (10.0, ">= 10 (1M items)"),
    "layerwise_vs_recursive_ratio_gowalla": (10.0, ">= 10 (K = 2, T = 50)"),
}


def _graph_line(label: str, ex: dict, top_t: int) -> str:
    feat = (f"{ex['feature_dim']} feature columns" if ex["feature_dim"]
            else "no features (id embeddings)")
    nbx = ex["neighbors"]
    return (f"- **{label}**: {ex['num_items']:,} items, {ex['num_edges']:,} edges, {feat}. "
            f"Neighbourhoods of all items ({nbx['setting']['num_walks']} walks, length 2, "
            f"restart 0.5, T = {top_t}; {nbx['mean_filled_slots']:.1f} slots filled on "
            f"average): {nbx['seconds']:.1f} s, {fmt_value(nbx['seeds_per_s'])} seeds/s, "
            "timed once, shared by both methods and not in their items/s.")


def _detail_rows(extra: dict) -> list[list[str]]:
    num_layers = extra["model"]["num_layers"]
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
                         fmt_value(r["items_per_s"]), f"{num_layers + 1}", "-",
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
    """The RESULTS.md section, from what the JSON holds (``extra["model"]`` gives K, the
    widths and T)."""
    a, model = extra["args"], extra["model"]
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
        *[_graph_line(lbl, extra[lbl], model["top_t"]) for lbl in ("synthetic", "gowalla")
          if lbl in extra],
        "",
        f"Model: an untrained `PinSageEncoder` (K = {model['num_layers']}, hidden = "
        f"embedding = {model['hidden_dim']}, importance pooling); weights do not change the "
        "cost of inference. "
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
