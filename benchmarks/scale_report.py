"""The ``scale`` section of ``benchmarks/RESULTS.md``: one row per stage, one column per size.

Kept apart from ``bench_scale.py`` so the measuring script stays about measuring; the growth
exponents it prints are computed there (``build_metrics``).
"""

from __future__ import annotations

from typing import Any

from _common import fmt_value, load_note, markdown_table

ROWS = [  # (metric stem, row text)
    ("prepare_seconds", "`prepare` seconds"),
    ("prepare_peak_rss_gb", "`prepare` peak RSS, GiB"),
    ("graph_bytes_per_edge_disk", "graph bytes / edge on disk"),
    ("graph_bytes_per_edge_memory", "graph bytes / edge resident (CSR both ways)"),
    ("walk_hops_per_s", "walk hops/s, in process (1 core)"),
    ("walk_hops_per_s_sharded_2", "walk hops/s, 2 Ray shards"),
    ("importance_neighbors_seeds_per_s", "importance neighbours seeds/s (50 walks, T = 10)"),
    ("train_step_ms", "training step ms (batch 256, 1 thread)"),
    ("train_batch_build_ms_batch_mode", "batch build ms, neighbourhoods walked per batch"),
    ("neighbor_table_seconds", "neighbourhoods of every item, s"),
    ("embed_items_per_s", "layer-wise embed items/s (1 thread)"),
    ("embed_items_per_s_ray", "Ray Data embed items/s (2 cores)"),
    ("index_build_seconds", "HNSW build s (2 threads)"),
    ("index_recall_at_10_heldout", "HNSW recall@10, held-out queries"),
    ("index_qps_vs_exact_ratio_heldout", "HNSW QPS / exact QPS, held-out"),
]


def markdown(metrics: list[dict[str, Any]], machine: dict[str, Any],
             extra: dict[str, Any]) -> str:
    by_name = {m["name"]: m for m in metrics}
    sizes = [r["label"] for r in extra["sizes"]]
    header = ["stage", *(f"{s} edges" for s in sizes), "growth exponent b"]
    rows = []
    for stem, text in ROWS:
        cells = []
        for s in sizes:
            m = by_name.get(f"{stem}_{s}")
            cells.append(fmt_value(m["value"], m["unit"]) if m else "-")
        g = extra["growth"].get(stem)
        exp = f"{g['exponent']:.2f}" if g and g.get("exponent") is not None else "-"
        rows.append([text, *cells, exp])
    graphs = []
    for r in extra["sizes"]:
        g = r["graph"]
        graphs.append(f"- **{r['label']}**: {g['num_items']:,} items, {g['num_groups']:,} groups, "
                      f"{g['num_edges']:,} edges, 32-d features; index: "
                      + (f"{r['index']['indexed']:,} vectors, ef {r['index']['ef']}"
                         if "indexed" in r["index"] else r["index"].get("skipped", "-")))
    dist = []
    for r in extra["sizes"]:
        d = r.get("prepare_distributed")
        if d:
            same = d.get("comparison")
            dist.append(
                f"- **{r['label']}**: `prepare(engine=\"ray\")` {d['seconds']:.1f} s vs "
                f"{r['prepare']['seconds']:.1f} s in one process "
                f"({d['seconds'] / r['prepare']['seconds']:.2f}x); largest process peak RSS "
                f"{d['peak_rss_per_process_bytes'] / 2**30:.2f} GiB (driver "
                f"{d['driver_peak_rss_bytes'] / 2**30:.2f} GiB, {d['processes_seen']} processes) "
                f"vs {r['prepare']['peak_rss_bytes'] / 2**30:.2f} GiB"
                + ("" if same is None else
                   f"; graph identical to the single-process one: {same['equal']} "
                   f"({same['files']} array files compared)"))
        p = (r.get("index") or {}).get("partitioned")
        if p:
            dist.append(
                f"- **{r['label']}** index in {p['partitions']} partitions at ef {p['ef']}: "
                f"held-out recall@10 {p['recall_at_10_heldout']:.4f} vs one index "
                f"{p['recall_at_10_heldout_one_index']:.4f} (delta "
                f"{p['recall_at_10_delta']:+.4f}); build s per partition "
                + ", ".join(f"{x:.1f}" for x in p["build_seconds_per_partition"])
                + f"; single-vector query p50/p99 {p['query_p50_ms']:.2f}/"
                f"{p['query_p99_ms']:.2f} ms (fan-out + exact merge) vs one index "
                f"{p['one_index_query_p50_ms']:.2f}/{p['one_index_query_p99_ms']:.2f} ms")
    if dist:
        dist = ["", "Distributed paths (issue 22):", "", *dist]
    return "\n".join([
        "## scale: cost growth with graph size (`bench_scale.py`)",
        "",
        load_note(machine),
        "",
        *graphs,
        "",
        markdown_table(header, rows),
        "",
        "Growth exponent b: cost ~ edges^b between the smallest and the largest size measured "
        "(throughputs inverted into cost per unit); b = 1 is linear in edges. The index stage "
        "indexes every item but 1,000 held-out queries up to `--index-max-items`; recall is "
        "measured on those held-out queries against exact search. See docs/scaling.md for "
        "what these numbers mean for a 3B-node graph.",
        *dist,
    ])
