"""The ``walks`` section of ``benchmarks/RESULTS.md``: the graphs, the metrics against their
targets, machine load and peak memory.

Kept apart from ``bench_walks.py`` so the measuring script stays about measuring; the section
is rendered only from what the results JSON holds, so ``bench_walks.py --render-only`` can
redo it.
"""

from __future__ import annotations

from pathlib import Path

from _common import fmt_value, load_note, metrics_table

TARGETS = {  # metric -> (threshold, text); from the benchmark's issue
    "walk_hops_per_s_inprocess": (10e6, ">= 10M (one core, 20M-edge graph)"),
    "sharded_2_vs_inprocess_ratio": (0.5, ">= 0.5 (batches >= 200k walkers)"),
    "importance_neighbors_seeds_per_s_paper_gowalla": (30e3, ">= 30k"),
}


def _graph_line(label: str, info: dict, graph: Path) -> str:
    from pinsage_ray.graph import GraphStore

    st = GraphStore(graph)
    m = st.manifest
    deg_i, deg_g = m["stats"]["item_degree"], m["stats"]["group_degree"]
    built = ""
    if info.get("generate_s") is not None:
        built = f" Generated in {info['generate_s']:.0f} s, prepared in {info['prepare_s']:.0f} s"
        built += f" (peak {info['peak_rss_bytes'] / 2**30:.1f} GiB)."
    return (f"- **{label}**: {st.num_items:,} items, {st.num_groups:,} groups, "
            f"{st.num_edges:,} edges ({'weighted' if st.weighted else 'unweighted'}; item degree "
            f"mean {deg_i['mean']:.1f} / max {deg_i['max']:,}, group degree mean "
            f"{deg_g['mean']:.1f} / max {deg_g['max']:,}).{built}")


def markdown(metrics: list, machine: dict, extra: dict, command: str) -> str:
    """The RESULTS.md section, from what the JSON holds (so it can be re-rendered);
    ``command`` is the command line it states."""
    a = extra["args"]
    cpu_ratio = extra["synthetic"]["inprocess_walks"]["cpu_over_wall"]
    mem = extra["memory"]
    lines = [
        "## Random walks (`bench_walks.py`)",
        "",
        f"Run {machine['started_utc'][:10]} on {machine['cpu_model']}, "
        f"{machine['cpus_usable']} cores, {machine['memory_total_gib']} GiB; Python "
        f"{machine['python']}, numpy {machine['numpy']}, Ray {machine['ray']}; commit "
        f"`{machine['git_commit']}`. Command: `{command}` "
        f"({extra['total_seconds']:.0f} s in all).",
        "",
        *extra["graph_lines"],
        "",
        f"A hop is one edge traversal (a walk step item -> group -> item is 2 hops). Walks: "
        f"{a['walkers']:,} walkers from random seed items, length {a['walk_length']}, one walk "
        f"each. Importance neighbours: paper-like = 100 walks/seed, length 2, restart 0.5, "
        f"T = 50 on {a['paper_seeds']:,} seeds; light = 10 walks, length 2, restart 0.5, "
        f"T = 10 on {a['light_seeds']:,} seeds. Each number is the median of {a['repeats']} "
        f"timed runs after a warm-up. In-process = `LocalWalker`, numpy on one thread; sharded "
        f"= `ShardedGraph` actors on a local Ray with `num_cpus=2` (all shards share the "
        f"machine's cores); ratios are to the in-process number of the same run; sharded "
        f"results were checked identical to in-process. Metrics without a suffix are on the "
        f"synthetic graph.",
        "",
        metrics_table(metrics, TARGETS),
        "",
        f"Machine load: {load_note(machine)} The in-process walker used "
        f"{cpu_ratio:.2f} CPU-seconds per wall-second (1.00 = it had a core to itself).",
        "",
        f"Peak memory: benchmark process {mem['driver_peak_rss_bytes'] / 2**30:.2f} GiB; "
        f"summed RSS of it and its Ray processes {mem['tree_peak_rss_bytes'] / 2**30:.2f} GiB "
        f"(shared pages counted per process).",
    ]
    notes = list(extra.get("notes") or []) + ([extra["note"]] if extra.get("note") else [])
    for note in notes:
        lines += ["", note]
    return "\n".join(lines)


def graph_lines(extra: dict) -> list[str]:
    """One bullet per graph measured (and one when the synthetic graph fell short of
    ``--edges-target``), from the JSON's ``extra``."""
    lines = [_graph_line("synthetic", extra["memory"].get("synthetic_build") or {},
                         Path(extra["synthetic"]["graph_dir"]))]
    if "gowalla" in extra:
        lines.append(_graph_line("Gowalla (train split)", extra["memory"].get("gowalla_build")
                                 or {}, Path(extra["gowalla"]["graph_dir"])))
    target = extra["args"]["edges_target"]
    edges = extra["synthetic"].get("num_edges")
    if edges is None:
        from pinsage_ray.graph import GraphStore

        edges = GraphStore(extra["synthetic"]["graph_dir"]).num_edges
    if edges and edges < 0.95 * target:
        lines.append(f"- The synthetic graph has {fmt_value(edges)} edges for an "
                     f"`--edges-target` of {fmt_value(target)} (`mean_group_size` = edges / "
                     "groups; repeated draws of popular items within a group merge into one "
                     "edge).")
    return lines
