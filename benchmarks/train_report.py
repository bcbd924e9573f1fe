"""The ``train`` section of ``benchmarks/RESULTS.md``: examples/s per worker and the
producer-consumer speedup per dataset and configuration, memory, and where a training step's
time goes (with the cProfile and torch-profiler tables).

Kept apart from ``bench_train.py`` so the measuring script stays about measuring.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from _common import load_note, markdown_table, metrics_table

#: (label, metric suffix) pairs, as ``bench_train.DATASETS``.
Datasets = tuple[tuple[str, str], ...]

TARGET_RATE, TARGET_SPEEDUP = 5000.0, 1.3


def _targets(datasets: Datasets) -> dict[str, tuple[float, str]]:
    out = {}
    for _, sfx in datasets:
        out[f"train_examples_per_s_per_worker{sfx}"] = (TARGET_RATE, ">= 5,000 (1 CPU worker)")
        out[f"producer_consumer_speedup{sfx}"] = (TARGET_SPEEDUP, ">= 1.3")
    return out


def graph_line(label: str, graph: Path, table: float | None) -> str:
    """One bullet on a graph: sizes, degree, features, timestamps, its neighbourhood table."""
    from pinsage_ray.graph import GraphStore

    st = GraphStore(graph)
    deg = st.manifest["stats"]["item_degree"]
    t = f"; one epoch's neighbourhood table (50 walks from every item, T = 10) takes " \
        f"{table:.2f} s in process" if table is not None else ""
    return (f"- **{label}**: {st.num_items:,} items, {st.num_groups:,} groups, "
            f"{st.num_edges:,} edges, item degree mean {deg['mean']:.1f}; features "
            f"{st.feature_dim or 'none (id embeddings)'}; timestamps "
            f"{'yes (sequence positives)' if st.has_timestamps else 'no (walk positives)'}{t}.")


def markdown(metrics: list, machine: dict, res: dict, prof: dict, args: argparse.Namespace,
             graph_lines: list[str], mem: dict, datasets: Datasets) -> str:
    """The RESULTS.md section: Ray runs per (dataset, workers, prefetch), then the in-process
    step breakdown and its profiles; ``datasets`` = (label, metric suffix) in report order."""
    rows = []
    for label, _ in datasets:
        if label not in res:
            continue
        for key, s in res[label]["configs"].items():
            w, p = key[1:].split("_p")
            excl = s.get("examples_per_s_excl_table_estimate")
            lo, hi = min(s["examples_per_s_samples"]), max(s["examples_per_s_samples"])
            rows.append([label, w, p, f"{s['examples_per_s_per_worker']:,.0f}",
                         f"{lo:,.0f}-{hi:,.0f}",
                         f"{excl:,.0f}" if excl else "-",
                         f"{s['epoch1_examples_per_s']:,.0f}",
                         f"{s['epoch_seconds']:.2f}", f"{s['wait_fraction']:.0%}",
                         f"{s['peak_rss_bytes'] / 2**20:,.0f}",
                         f"{statistics.median(s['wall_s']):.0f}"])
    table = "(Ray runs skipped: `--skip-ray`.)" if not rows else markdown_table(
        ["dataset", "workers", "prefetch", "examples/s/worker", "range", "excl. table (est.)",
         "epoch 1 examples/s", "epoch s", "wait fraction", "peak RSS MB", "train() wall s"],
        rows)
    speed = ", ".join(f"{label} **{res[label]['producer_consumer_speedup']:.2f}x**"
                      for label, _ in datasets if label in res)
    prow = []
    for label, _ in datasets:
        if label not in prof:
            continue
        r = prof[label]
        c, sh = r["median_cpu_s"], r["share_cpu"]
        t2 = r["torch_2_threads"]["median_s"]
        prow.append([label, f"{1e3 * r['step_cpu_s']:.1f} ({1e3 * r['step_s']:.1f})",
                     f"{1e3 * c['build']:.1f} ({sh['build']:.0%})",
                     f"{1e3 * r['hard_negative_ppr_cpu_s']:.1f}",
                     f"{1e3 * c['forward']:.1f} ({sh['forward']:.0%})",
                     f"{1e3 * c['loss']:.1f}",
                     f"{1e3 * c['backward']:.1f} ({sh['backward']:.0%})",
                     f"{1e3 * c['optimizer']:.1f}",
                     f"{1e3 * r['median_s']['forward']:.0f} + "
                     f"{1e3 * r['median_s']['backward']:.0f} / "
                     f"{1e3 * t2['forward']:.0f} + {1e3 * t2['backward']:.0f}",
                     f"{r['examples_per_cpu_s']:,.0f}",
                     f"{r['examples_per_cpu_s_no_build']:,.0f}",
                     f"{r['overlap_bound_cpu']:.2f}x",
                     f"{r['output_nodes_median']:,.0f} / {r['layer1_nodes_median']:,.0f} / "
                     f"{r['layer0_nodes_median']:,.0f}"])
    ptable = markdown_table(["dataset", "step CPU ms (wall)", "build", "of which hard-neg PPR",
                             "forward", "loss", "backward", "Adam",
                             "fwd + bwd wall ms, 1 / 2 torch threads",
                             "examples per CPU-s", "examples per CPU-s without build",
                             "overlap bound", "nodes: output / layer 1 / layer 0"], prow)
    lines = [
        "## Training (`bench_train.py`)",
        "",
        f"Run {machine['started_utc'][:10]} on {machine['cpu_model']}, "
        f"{machine['cpus_usable']} cores, {machine['memory_total_gib']} GiB; Python "
        f"{machine['python']}, torch {machine['torch']}, Ray {machine['ray']}; commit "
        f"`{machine['git_commit']}`. Command: `python benchmarks/bench_train.py "
        f"{' '.join(sys.argv[1:])}`.",
        "",
        *graph_lines,
        "",
        f"Setting: `pinsage_ray.training.train` with hidden 64, embedding 64, K = 2 layers, "
        f"T = 10, 50 walks per node, batch {args.batch_size} queries per worker, 500 shared "
        f"negatives, {args.batches} batches per epoch per worker, {args.epochs} epochs, "
        f"per-epoch evaluation off (`eval_max_items=0`; it is not part of the epoch time "
        f"anyway). An example is one (query, positive, negatives) triple. Each number is the "
        f"median over epochs >= 2 (epoch 1 includes warm-up and has no hard negatives; "
        f"epoch n has n - 1) of {args.repeats} run(s) per configuration, configurations "
        f"interleaved; rates are rank 0's. Ray local, `num_cpus=2`, started once; every run "
        f"has its own Train worker group (1 CPU each) and one producer actor per worker "
        f"(`num_cpus=0`). Torch threads per Train worker: 2 with 1 worker "
        f"(`cpu_count // workers`), 1 with 2 workers; numpy/BLAS on 1 thread. With 2 workers "
        f"the 2 Train workers and 2 producers share the 2 cores, so per-worker rates are "
        f"expected to drop.",
        "",
        table,
        "",
        f"\"excl. table (est.)\" = examples / (epoch s - the in-process time of the epoch's "
        f"neighbourhood table): the producer builds that table (walks from every item) when "
        f"the epoch's first batch is requested, so with a short fixed epoch of "
        f"{args.batches} batches it weighs far more than in a real epoch (one pass over the "
        f"pairs). \"train() wall s\" = the whole `train` call (pairs, producer actors, Ray "
        f"Train worker group start, all epochs, a checkpoint per epoch).",
        "",
        f"Producer-consumer speedup (1 worker, prefetch 4 vs prefetch 0, same run): {speed}.",
        "",
        metrics_table(metrics, _targets(datasets)),
        "",
        f"Peak memory = peak of the summed RSS of this process and all its descendants (Ray "
        f"GCS, raylet, dashboard, Train workers, producer actors), sampled every 0.2 s with "
        f"psutil during each run; shared pages (object store, zero-copy arrays) count once "
        f"per process, so it overstates. Idle Ray alone: "
        f"{mem['idle_tree_rss_bytes'] / 2**20:,.0f} MB. Benchmark process peak (ru_maxrss): "
        f"{mem['driver_peak_rss_bytes'] / 2**20:,.0f} MB.",
        "",
        f"Machine load: {load_note(machine)}",
        "",
        "### Where a training step's time goes (in process, 1 thread)",
        "",
        f"`BatchProducer.batch` (epoch 2: 1 hard negative per query) then encoder forward, "
        f"`batch_loss`, backward and Adam, timed separately in this process (numpy and torch "
        f"on one thread); medians of {args.profile_steps} steps after a warm-up step whose "
        f"batch builds the neighbourhood table. Times are CPU ms of the thread "
        f"(`time.thread_time`, so what other processes took from the core does not count; "
        f"wall in brackets) and the share of the step. \"hard-neg PPR\" = "
        f"`ppr_rank_sample` alone (part of build). \"overlap bound\" = step / (step - "
        f"build): the most a producer running on another core can gain over sequential. "
        f"The 2-thread column repeats forward and backward with `torch.set_num_threads(2)`, "
        f"what the training loop gives a lone worker on this machine.",
        "",
        ptable,
    ]
    for label in dict.fromkeys([args.profile_dataset, "synthetic"]):
        r = prof.get(label, {})
        if r.get("cprofile_text"):
            lines += ["", f"cProfile, top functions by own time ({label}, "
                      f"{args.profile_steps} steps; full profiles in `results/train.json`):",
                      "", "```", _profile_top(r["cprofile_text"], 15), "```"]
        if r.get("torch_text"):
            lines += ["", f"torch profiler, top ops by self CPU time ({label}):", "", "```",
                      "\n".join(r["torch_text"].splitlines()[:20]), "```"]
    if res.get("_notes"):
        lines += ["", *res["_notes"]]
    return "\n".join(lines)


def _profile_top(text: str, n: int) -> str:
    out, started = [], False
    for line in text.splitlines():
        if line.strip().startswith("ncalls"):
            started = True
            out.append(line.rstrip())
            continue
        if started:
            if not line.strip() or line.startswith("----"):
                break
            out.append(line.rstrip())
            if len(out) > n:
                break
    return "\n".join(out)
