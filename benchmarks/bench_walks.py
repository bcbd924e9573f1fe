#!/usr/bin/env python
"""Random-walk throughput: the in-process walker, the sharded Ray service, importance neighbours.

A *hop* is one edge traversal; a walk step (item -> group -> item) is two hops, so a request of
``W`` walkers of length ``L`` is ``2 * W * L`` hops. Measured, each as the median of
``--repeats`` timed runs after one untimed warm-up:

* in-process (``LocalWalker``, numpy pinned to one thread): hops/s of ``random_walks`` over
  ``--walkers`` random seed items (one walk each);
* the sharded service (``ShardedGraph`` on a local Ray with ``num_cpus=2``) with each of
  ``--shards``: the same request, hops/s and the ratio to in-process (same run);
* ``importance_neighbors`` seeds/s, in-process and with 2 shards, at the paper-like setting
  (100 walks per seed, length 2, restart 0.5, T = 50) and a light one (10 walks, T = 10);

on the synthetic graph (``--items`` / ``--groups`` / ``--edges-target``; generated once into
``--cache-dir``) and on Gowalla's training split when ``--data-dir``/gowalla exists.

Writes ``benchmarks/results/walks.json`` and the ``walks`` section of ``benchmarks/RESULTS.md``
(``--quick``: a small graph, written under the cache dir instead, to check the script).

    python benchmarks/bench_walks.py --quick
    nohup /usr/bin/time -v python benchmarks/bench_walks.py > walks.log 2>&1 &
"""

from __future__ import annotations

import os

# "Per core": pin every BLAS/OpenMP pool to one thread before numpy is imported. Ray workers
# inherit the environment, so the shard actors are single-threaded too.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # a busy shared box: no OOM kills
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from _common import (publish, REPO, RESULTS_DIR, add_guard_args, finish_machine,  # noqa: E402
                     fmt_value, guard_machine, load_note, machine_info, median_of, metric,
                     metrics_table, peak_rss_bytes, update_results_md, write_results,
                     setup_logging)

NAME = "walks"
log = logging.getLogger("bench_walks")

PAPER = dict(num_walks=100, walk_length=2, restart_prob=0.5, top_t=50)
LIGHT = dict(num_walks=10, walk_length=2, restart_prob=0.5, top_t=10)

TARGETS = {  # metric -> (threshold, text); from the benchmark's issue
    "walk_hops_per_s_inprocess": (10e6, ">= 10M (one core, 20M-edge graph)"),
    "sharded_2_vs_inprocess_ratio": (0.5, ">= 0.5 (batches >= 200k walkers)"),
    "importance_neighbors_seeds_per_s_paper_gowalla": (30e3, ">= 30k"),
}


# --------------------------------------------------------------------------- graphs
def _build_synthetic(items: int, groups: int, edges: int, seed: int, out: str) -> None:
    """Generate + prepare the synthetic graph (runs in a child process: its memory is freed)."""
    from pinsage_ray import prepare
    from pinsage_ray.data import SyntheticConfig, read_synthetic, write_synthetic

    out_dir = Path(out)
    cfg = SyntheticConfig(num_items=items, num_groups=groups,
                          mean_group_size=min(max(edges / groups, 1.0), float(items)),
                          feature_dim=0, seed=seed)
    t0 = time.perf_counter()
    raw = out_dir / "raw"
    write_synthetic(cfg, raw, overwrite=True)
    t1 = time.perf_counter()
    store = prepare(read_synthetic(raw), out_dir / "graph", overwrite=True)
    t2 = time.perf_counter()
    shutil.rmtree(raw)  # only needed to build the graph; regenerated if the graph goes
    _write_build_info(out_dir, {"generate_s": t1 - t0, "prepare_s": t2 - t1,
                                "num_edges": store.num_edges, "config": vars(cfg)})


def _build_gowalla(source: str, out: str) -> None:
    from pinsage_ray import prepare
    from pinsage_ray.data import read_lightgcn

    t0 = time.perf_counter()
    train, _ = read_lightgcn(source)
    store = prepare(train, Path(out) / "graph", overwrite=True)
    _write_build_info(Path(out), {"prepare_s": time.perf_counter() - t0,
                                  "num_edges": store.num_edges, "source": source})


def _write_build_info(out_dir: Path, info: dict) -> None:
    info["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    (out_dir / "build.json").write_text(json.dumps(info, indent=2, default=str))


def _graph_ok(graph: Path) -> bool:
    from pinsage_ray.graph import GraphFormatError, GraphStore

    if not (graph / "manifest.json").is_file():
        return False
    try:
        GraphStore(graph)
        return True
    except GraphFormatError as err:
        log.warning("cached graph %s unusable (%s); rebuilding", graph, err)
        return False


def _in_child(target: Any, *args: Any) -> None:
    """Run ``target(*args)`` in a fresh process (peak memory of building stays out of ours)."""
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{target.__name__}{args} failed with exit code {proc.exitcode}")


def ensure_graph(kind: str, folder: Path, builder: Any, *args: Any) -> tuple[Path, dict]:
    graph = folder / "graph"
    if _graph_ok(graph):
        log.info("%s graph: cached at %s", kind, graph)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        log.info("%s graph: building into %s", kind, graph)
        t0 = time.perf_counter()
        _in_child(builder, *args, str(folder))
        log.info("%s graph: built in %.1f s", kind, time.perf_counter() - t0)
    info_path = folder / "build.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return graph, info


# --------------------------------------------------------------------------- memory
class TreeMemory:
    """Samples the summed RSS of this process and its descendants (Ray's included) every
    ``interval`` s in a daemon thread; keeps the peak. Shared pages (the object store, numpy
    arrays Ray maps zero-copy) count once per process that touches them, so this overstates."""

    def __init__(self, interval: float = 1.0) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> int:
        me = self._psutil.Process()
        total = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                pass
        self.peak = max(self.peak, total)
        return total

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def _vm_hwm(pid: int) -> int | None:
    """Peak resident memory (VmHWM) of a live process, bytes."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------- measurements
def time_walks(service: Any, seeds: np.ndarray, walk_length: int, repeats: int) -> dict:
    """Median seconds of ``random_walks(seeds, num_walks=1)``; hops/s; process CPU per run."""
    cpu: list[float] = []
    out: dict[str, np.ndarray] = {}

    def run() -> None:
        c0 = time.process_time()
        out["paths"] = service.random_walks(seeds, num_walks=1, walk_length=walk_length, seed=1)
        cpu.append(time.process_time() - c0)

    med, times = median_of(run, repeats, warmup=1)
    hops = 2 * len(seeds) * walk_length
    return {"seconds_median": med, "seconds": times, "hops": hops, "hops_per_s": hops / med,
            "driver_cpu_s": cpu[1:], "paths": out["paths"]}


def time_importance(service: Any, seeds: np.ndarray, setting: dict, repeats: int) -> dict:
    out: dict[str, Any] = {}

    def run() -> None:
        out["nb"] = service.importance_neighbors(seeds, seed=1, **setting)

    med, times = median_of(run, repeats, warmup=1)
    return {"seconds_median": med, "seconds": times, "seeds": len(seeds),
            "seeds_per_s": len(seeds) / med,
            "hops_per_s": 2 * len(seeds) * setting["num_walks"] * setting["walk_length"] / med,
            "nb": out["nb"]}


def _strip(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("paths", "nb")}


def bench_graph(label: str, suffix: str, graph: Path, args: argparse.Namespace,
                metrics: list, extra: dict) -> None:
    """All measurements on one graph; metric names get ``suffix`` (e.g. '_gowalla')."""
    from pinsage_ray import GraphStore, LocalWalker
    from pinsage_ray.sampling.service import ShardedGraph

    rng = np.random.default_rng(12345)
    local = LocalWalker(graph)
    n = local.num_items
    walk_seeds = rng.integers(0, n, args.walkers, dtype=np.int64)
    imp_seeds = {name: rng.choice(n, k, replace=k > n).astype(np.int64)
                 for name, k in (("paper", args.paper_seeds), ("light", args.light_seeds))}
    settings = {"paper": PAPER, "light": LIGHT}
    ex: dict[str, Any] = {"graph_dir": str(graph), "num_items": n,
                          "num_edges": GraphStore(graph).num_edges,
                          "walkers": args.walkers, "walk_length": args.walk_length,
                          "importance_seeds": {k: len(v) for k, v in imp_seeds.items()},
                          "importance_settings": settings}
    extra[label] = ex

    # ---- in-process
    log.info("[%s] in-process random_walks: %d walkers x %d steps", label, args.walkers,
             args.walk_length)
    r = time_walks(local, walk_seeds, args.walk_length, args.repeats)
    ref_paths = r["paths"]
    base = r["hops_per_s"]
    ex["inprocess_walks"] = _strip(r)
    cpu_ratio = float(np.median(r["driver_cpu_s"])) / r["seconds_median"]
    ex["inprocess_walks"]["cpu_over_wall"] = cpu_ratio
    log.info("[%s]   %.2fM hops/s (median %.3f s of %s; cpu/wall %.2f)", label, base / 1e6,
             r["seconds_median"], [round(t, 3) for t in r["seconds"]], cpu_ratio)
    metrics.append(metric(f"walk_hops_per_s_inprocess{suffix}", base, "hops/s"))
    metrics.append(metric(f"walk_hops_per_cpu_s_inprocess{suffix}",
                          r["hops"] / float(np.median(r["driver_cpu_s"])), "hops/cpu-s"))
    ref_nb = {}
    for name, setting in settings.items():
        log.info("[%s] in-process importance_neighbors %s: %d seeds", label, name,
                 len(imp_seeds[name]))
        r = time_importance(local, imp_seeds[name], setting, args.repeats)
        ref_nb[name] = r["nb"]
        ex[f"inprocess_importance_{name}"] = _strip(r)
        log.info("[%s]   %.0f seeds/s (median %.3f s)", label, r["seeds_per_s"],
                 r["seconds_median"])
        metrics.append(metric(f"importance_neighbors_seeds_per_s_{name}{suffix}",
                              r["seeds_per_s"], "seeds/s"))
    del local
    gc.collect()

    # ---- sharded
    sharded_metrics, ratio_metrics, imp_metrics = [], [], []
    for s in args.shards:
        log.info("[%s] starting %d shard(s)", label, s)
        t0 = time.perf_counter()
        svc = ShardedGraph(graph, s)
        start_s = time.perf_counter() - t0
        try:
            r = time_walks(svc, walk_seeds, args.walk_length, args.repeats)
            same = bool(np.array_equal(r["paths"], ref_paths))
            ratio = r["hops_per_s"] / base
            ex[f"sharded_{s}_walks"] = {**_strip(r), "start_s": start_s,
                                        "identical_to_inprocess": same, "ratio": ratio}
            log.info("[%s]   %d shards: %.2fM hops/s, ratio %.2f, identical %s (start %.1f s)",
                     label, s, r["hops_per_s"] / 1e6, ratio, same, start_s)
            sharded_metrics.append(metric(f"walk_hops_per_s_sharded_{s}{suffix}",
                                          r["hops_per_s"], "hops/s"))
            ratio_metrics.append(metric(f"sharded_{s}_vs_inprocess_ratio{suffix}", ratio,
                                        "ratio"))
            if s == 2:
                for name, setting in settings.items():
                    r = time_importance(svc, imp_seeds[name], setting, args.repeats)
                    same = bool(np.array_equal(r["nb"].ids, ref_nb[name].ids)
                                and np.array_equal(r["nb"].counts, ref_nb[name].counts))
                    ex[f"sharded_2_importance_{name}"] = {**_strip(r),
                                                          "identical_to_inprocess": same}
                    log.info("[%s]   2 shards importance %s: %.0f seeds/s, identical %s", label,
                             name, r["seeds_per_s"], same)
                    imp_metrics.append(metric(
                        f"importance_neighbors_seeds_per_s_{name}_sharded_2{suffix}",
                        r["seeds_per_s"], "seeds/s"))
            ex[f"sharded_{s}_actor_peak_rss_bytes"] = [_vm_hwm(i["pid"]) for i in svc.shard_info]
        finally:
            svc.shutdown()
            del svc
            gc.collect()
            time.sleep(1.0)  # let the killed actors' memory go before the next start
    metrics.extend(sharded_metrics + ratio_metrics + imp_metrics)
    del ref_paths


# --------------------------------------------------------------------------- report
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


def markdown(metrics: list, machine: dict, extra: dict) -> str:
    """The RESULTS.md section, from what the JSON holds (so it can be re-rendered)."""
    a = extra["args"]
    cpu_ratio = extra["synthetic"]["inprocess_walks"]["cpu_over_wall"]
    mem = extra["memory"]
    lines = [
        "## Random walks (`bench_walks.py`)",
        "",
        f"Run {machine['started_utc'][:10]} on {machine['cpu_model']}, "
        f"{machine['cpus_usable']} cores, {machine['memory_total_gib']} GiB; Python "
        f"{machine['python']}, numpy {machine['numpy']}, Ray {machine['ray']}; commit "
        f"`{machine['git_commit']}`. Command: `{extra.get('command') or _command(a)}` "
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


def _command(a: dict) -> str:
    """The command line, from the stored arguments (non-default ones only)."""
    defaults = vars(parse_args([]))
    parts = ["python benchmarks/bench_walks.py"]
    if a.get("quick"):
        parts.append("--quick")
    for key in ("items", "groups", "edges_target", "seed", "walkers", "walk_length", "repeats",
                "shards", "paper_seeds", "light_seeds", "object_store_gb"):
        if not a.get("quick") and a.get(key) != defaults[key]:
            val = a[key]
            parts.append(f"--{key.replace('_', '-')} "
                         + (" ".join(map(str, val)) if isinstance(val, list) else str(val)))
    return " ".join(parts)


def _graph_lines(extra: dict) -> list[str]:
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


def render_only(args: argparse.Namespace) -> int:
    """Re-render the RESULTS.md section from the last results JSON (no measuring)."""
    results_dir = Path(args.cache_dir) / "quick" if args.quick else None
    path = (results_dir or RESULTS_DIR) / f"{NAME}.json"
    doc = json.loads(path.read_text())
    if results_dir is None and "guard" not in doc["machine"]:
        sys.exit(f"{path} was measured without guard_machine (its machine has no 'guard' "
                 "record): rerun the benchmark instead of re-rendering it")
    extra = doc.get("extra", {})
    if args.note is not None:
        extra["note"] = args.note
    extra.setdefault("graph_lines", _graph_lines(extra))
    md = markdown(doc["metrics"], doc["machine"], extra)
    write_results(NAME, doc["metrics"], doc["machine"], extra, results_dir=results_dir)
    md_path = update_results_md(NAME, md, path=(results_dir / "RESULTS.md") if results_dir
                                else None)
    print(md)
    print(f"\nre-rendered {md_path} from {path}")
    return 0


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_data = os.environ.get("PINSAGE_DATA_DIR") or str(REPO.parent / "shared" / "data")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--groups", type=int, default=1_000_000)
    p.add_argument("--edges-target", type=int, default=20_000_000,
                   help="edges wanted; SyntheticConfig.mean_group_size = edges / groups")
    p.add_argument("--seed", type=int, default=0, help="synthetic graph seed")
    p.add_argument("--walkers", type=int, default=1_000_000)
    p.add_argument("--walk-length", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shards", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--paper-seeds", type=int, default=20_000)
    p.add_argument("--light-seeds", type=int, default=100_000)
    p.add_argument("--data-dir", default=default_data, help="folder holding gowalla/")
    p.add_argument("--cache-dir", default=str(REPO / ".bench_cache"),
                   help="generated graphs are kept here between runs")
    p.add_argument("--object-store-gb", type=float, default=2.0)
    p.add_argument("--no-gowalla", action="store_true")
    p.add_argument("--note", default=None,
                   help="a sentence for RESULTS.md on what else the machine was doing")
    p.add_argument("--render-only", action="store_true",
                   help="re-render RESULTS.md from the last results JSON (with --note)")
    p.add_argument("--quick", action="store_true",
                   help="small graph and batches; results go under the cache dir, not "
                        "benchmarks/results or RESULTS.md")
    add_guard_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.groups, args.edges_target = 20_000, 20_000, 200_000
        args.walkers, args.paper_seeds, args.light_seeds = 100_000, 2_000, 10_000
    if args.repeats < 1 or args.walkers < 1 or args.walk_length < 1:
        p.error("--repeats, --walkers and --walk-length must be >= 1")
    if 2 not in args.shards:
        args.shards = sorted(set(args.shards) | {2})  # the headline ratio
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    if args.render_only:
        return render_only(args)
    machine = guard_machine(machine_info(), args, committed=not args.quick)
    tree = TreeMemory()
    cache = Path(args.cache_dir)
    t_start = time.perf_counter()

    syn_folder = cache / (f"synthetic_i{args.items}_g{args.groups}_e{args.edges_target}"
                          f"_s{args.seed}")
    syn_graph, syn_info = ensure_graph("synthetic", syn_folder, _build_synthetic, args.items,
                                       args.groups, args.edges_target, args.seed)
    gowalla_src = Path(args.data_dir) / "gowalla"
    gow_graph = None
    if not args.no_gowalla and (gowalla_src / "train.txt").is_file():
        gow_graph, gow_info = ensure_graph("gowalla", cache / "gowalla", _build_gowalla,
                                           str(gowalla_src))
    else:
        log.info("Gowalla not found under %s (or --no-gowalla): its metrics are omitted",
                 args.data_dir)

    from pinsage_ray import init_ray

    import ray

    metrics: list[dict] = []
    extra: dict[str, Any] = {"args": vars(args), "notes": [], "note": args.note,
                             "command": " ".join(["python benchmarks/bench_walks.py",
                                                  *sys.argv[1:]] if argv is None else
                                                 ["python benchmarks/bench_walks.py", *argv])}
    init_ray(num_cpus=2, object_store_memory=int(args.object_store_gb * 2**30))
    try:
        bench_graph("synthetic", "", syn_graph, args, metrics, extra)
        if gow_graph is not None:
            bench_graph("gowalla", "_gowalla", gow_graph, args, metrics, extra)
        tree.sample()
    finally:
        ray.shutdown()
    tree_peak = tree.stop()
    extra["memory"] = {"driver_peak_rss_bytes": peak_rss_bytes()["self"],
                       "tree_peak_rss_bytes": tree_peak,
                       "synthetic_build": syn_info,
                       "gowalla_build": gow_info if gow_graph is not None else None}
    extra["total_seconds"] = time.perf_counter() - t_start

    # Headline metrics first, in the order.
    head = ["walk_hops_per_s_inprocess", "walk_hops_per_s_sharded_2",
            "sharded_2_vs_inprocess_ratio", "importance_neighbors_seeds_per_s_paper_gowalla"]
    metrics.sort(key=lambda m: head.index(m["name"]) if m["name"] in head else len(head))

    if args.edges_target < 20_000_000:
        extra["notes"].append(f"Note: synthetic graph smaller than the issue's 20M edges "
                              f"(--edges-target {args.edges_target:,}); the in-process target "
                              "is stated for 20M edges.")
    finish_machine(machine)
    extra["graph_lines"] = _graph_lines(extra)
    md = markdown(metrics, machine, extra)
    publish(NAME, metrics, machine, extra, md, cache / "quick" if args.quick else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
