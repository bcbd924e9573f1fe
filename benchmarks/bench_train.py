#!/usr/bin/env python
"""Training throughput: examples/s per worker, producer-consumer overlap, epoch time, memory.

A *training example* is one (query, positive, negatives) triple: one query of a minibatch
(``batch_size`` per batch per worker). Every run calls :func:`pinsage_ray.training.train` with
a fresh run directory at hidden 64, T = 10 and a fixed number of batches per epoch, on a local
Ray started once with ``num_cpus=2``, in three configurations per graph:

* 1 worker, ``prefetch=4`` (producer actor builds batches ahead of the trainer);
* 1 worker, ``prefetch=0`` (strictly sequential: request, wait, train);
* 2 workers, ``prefetch=4`` (data parallel; on 2 cores the workers share the CPUs).

Each configuration's number is the median over the epochs >= 2 of ``--repeats`` runs
(epoch 1 includes warm-up, and hard negatives only start in epoch 2 by the curriculum), as
reported by the training loop (``TrainResult.history``: ``examples_per_s`` of rank 0,
``epoch_seconds``, ``wait_fraction``). The producer-consumer speedup is the ratio of the
1-worker ``prefetch=4`` and ``prefetch=0`` rates of the same benchmark run (runs interleaved).
Peak memory is the summed RSS of this process and all its descendants (Ray's GCS, raylet,
Train workers and producer actors), sampled every 0.2 s during each run.

Afterwards, in this process (no Ray, torch and numpy on one thread), one training step is
broken down (batch building vs forward vs loss vs backward + optimiser) on every graph, and
cProfile'd on MovieLens-100K (``--profile-dataset``).

Graphs: MovieLens-100K (``--data-dir``/ml-100k) and Gowalla's training split
(``--data-dir``/gowalla), each skipped when absent, and a synthetic planted-community graph;
all prepared once into ``--cache-dir``.

Writes ``benchmarks/results/train.json`` and the ``train`` section of ``benchmarks/RESULTS.md``
(``--quick``: a tiny synthetic graph only, written under the cache dir, to check the script).

    python benchmarks/bench_train.py --quick
    nohup python benchmarks/bench_train.py > train.log 2>&1 &
"""

from __future__ import annotations

import os

# numpy/BLAS on one thread (producers and the profile are "per core"); Ray workers inherit it.
# The training loop sets torch's own thread count itself (see the report).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")  # a busy shared box: no OOM kills
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")  # report() polls faster
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import gc  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import pstats  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from _common import (publish, REPO, add_guard_args, finish_machine, guard_machine,  # noqa: E402
                     load_note, machine_info, markdown_table, median_of, metric, metrics_table,
                     peak_rss_bytes, setup_logging)
from bench_walks import _write_build_info  # noqa: E402
from bench_walks import ensure_graph as _ensure_graph  # noqa: E402


NAME = "train"
log = logging.getLogger("bench_train")

#: (label, metric suffix) in report order; synthetic carries the unsuffixed headline metrics.
DATASETS = (("synthetic", ""), ("movielens", "_movielens"), ("gowalla", "_gowalla"))
#: (workers, prefetch) per run; the first two give the producer-consumer speedup.
CONFIGS = ((1, 4), (1, 0), (2, 4))

TARGET_RATE, TARGET_SPEEDUP = 5000.0, 1.3


def _targets() -> dict[str, tuple[float, str]]:
    out = {}
    for _, sfx in DATASETS:
        out[f"train_examples_per_s_per_worker{sfx}"] = (TARGET_RATE, ">= 5,000 (1 CPU worker)")
        out[f"producer_consumer_speedup{sfx}"] = (TARGET_SPEEDUP, ">= 1.3")
    return out


# --------------------------------------------------------------------------- graphs


def _build_synthetic(items: int, groups: int, group_size: float, feature_dim: int, seed: int,
                     out: str) -> None:
    """Generate + prepare the synthetic graph (in a child process: its memory is freed)."""
    from pinsage_ray import prepare
    from pinsage_ray.data import SyntheticConfig, read_synthetic, write_synthetic

    out_dir = Path(out)
    cfg = SyntheticConfig(num_items=items, num_groups=groups, mean_group_size=group_size,
                          feature_dim=feature_dim, seed=seed)
    t0 = time.perf_counter()
    raw = out_dir / "raw"
    write_synthetic(cfg, raw, overwrite=True)
    store = prepare(read_synthetic(raw), out_dir / "graph", overwrite=True)
    shutil.rmtree(raw)
    _write_build_info(out_dir, {"build_s": time.perf_counter() - t0,
                                "num_edges": store.num_edges, "config": vars(cfg)})


def _build_movielens(source: str, out: str) -> None:
    from pinsage_ray import prepare
    from pinsage_ray.data import read_movielens_100k

    t0 = time.perf_counter()
    store = prepare(read_movielens_100k(source), Path(out) / "graph", overwrite=True)
    _write_build_info(Path(out), {"build_s": time.perf_counter() - t0,
                                  "num_edges": store.num_edges, "source": source})


def _build_gowalla(source: str, out: str) -> None:
    """Same folder layout as bench_walks.py's, so the two share ``<cache>/gowalla``."""
    from pinsage_ray import prepare
    from pinsage_ray.data import read_lightgcn

    t0 = time.perf_counter()
    train, _ = read_lightgcn(source)
    store = prepare(train, Path(out) / "graph", overwrite=True)
    _write_build_info(Path(out), {"prepare_s": time.perf_counter() - t0,
                                  "num_edges": store.num_edges, "source": source})


def ensure_graph(kind: str, folder: Path, builder: Any, *args: Any) -> Path:
    """The cached graph directory (shared with bench_walks), built in a child if missing."""
    return _ensure_graph(kind, folder, builder, *args)[0]


def graphs(args: argparse.Namespace) -> dict[str, Path]:
    cache = Path(args.cache_dir)
    out = {"synthetic": ensure_graph(
        "synthetic", cache / (f"train_synthetic_i{args.items}_g{args.groups}"
                              f"_s{args.group_size:g}_f{args.feature_dim}_seed0"),
        _build_synthetic, args.items, args.groups, args.group_size, args.feature_dim, 0)}
    if args.quick:
        return out
    ml = Path(args.data_dir) / "ml-100k"
    if (ml / "u.data").is_file():
        out["movielens"] = ensure_graph("movielens", cache / "movielens", _build_movielens,
                                        str(ml))
    else:
        log.info("MovieLens-100K not found under %s: skipped", args.data_dir)
    gow = Path(args.data_dir) / "gowalla"
    if (gow / "train.txt").is_file():
        out["gowalla"] = ensure_graph("gowalla", cache / "gowalla", _build_gowalla, str(gow))
    else:
        log.info("Gowalla not found under %s: skipped", args.data_dir)
    return out


# --------------------------------------------------------------------------- memory
class TreeMemory:
    """Peak summed RSS of this process and all its descendants (Ray's GCS, raylet, workers,
    actors), sampled every ``interval`` s in a daemon thread; :meth:`reset` starts a new peak.
    Pages shared between processes (Ray's object store, zero-copy arrays) count once per
    process mapping them, so the sum overstates the physical peak somewhat."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.peak = 0
        self.peak_processes = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> int:
        me = self._psutil.Process()
        total, n = 0, 0
        for p in [me, *me.children(recursive=True)]:
            try:
                total += p.memory_info().rss
                n += 1
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                pass
        with self._lock:
            if total > self.peak:
                self.peak, self.peak_processes = total, n
        return total

    def reset(self) -> None:
        with self._lock:
            self.peak, self.peak_processes = 0, 0
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


# --------------------------------------------------------------------------- configs
def train_config(args: argparse.Namespace, workers: int, prefetch: int) -> Any:
    from pinsage_ray.training import TrainConfig

    # the paper's recipe, as every committed train.json row measured (comparable over time)
    return TrainConfig.preset(
        "paper", hidden_dim=64, embedding_dim=64, neighbors={"top_t": 10},
        num_epochs=args.epochs, batch_size=args.batch_size, batches_per_epoch=args.batches,
        num_workers=workers, prefetch=prefetch, num_producers=1, max_failures=0,
        eval_max_items=0)  # no per-epoch evaluation (not timed; saves wall time)


# --------------------------------------------------------------------------- Ray runs
def one_run(graph: Path, args: argparse.Namespace, workers: int, prefetch: int,
            tree: TreeMemory, runs_root: Path) -> dict:
    from pinsage_ray.training import train

    cfg = train_config(args, workers, prefetch)
    run_dir = Path(tempfile.mkdtemp(prefix=f"w{workers}_p{prefetch}_", dir=runs_root))
    gc.collect()
    tree.reset()
    base = tree.sample()
    t0 = time.perf_counter()
    try:
        res = train(graph, run_dir, cfg)
        wall = time.perf_counter() - t0
        tree.sample()
        peak, procs = tree.peak, tree.peak_processes
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    keys = ("epoch", "examples_per_s", "epoch_seconds", "wait_fraction", "loss",
            "hard_negatives")
    hist = [{k: m.get(k) for k in keys} for m in res.history]
    return {"workers": workers, "prefetch": prefetch, "history": hist, "wall_s": wall,
            "tree_rss_before_bytes": base, "tree_peak_rss_bytes": peak,
            "tree_peak_processes": procs}


def _steady(runs: list[dict], key: str) -> list[float]:
    """Values of ``key`` over the epochs >= 2 of all runs (epoch 1 when there is no other)."""
    vals = [m[key] for r in runs for m in r["history"] if m["epoch"] >= 2]
    return vals or [m[key] for r in runs for m in r["history"]]


def summarise(runs: list[dict], table_s: float | None, batch_examples: int) -> dict:
    rate = _steady(runs, "examples_per_s")
    epoch_s = _steady(runs, "epoch_seconds")
    wait = _steady(runs, "wait_fraction")
    med_epoch = statistics.median(epoch_s)
    out = {"examples_per_s_per_worker": statistics.median(rate),
           "examples_per_s_samples": rate, "epoch_seconds": med_epoch,
           "epoch_seconds_samples": epoch_s, "wait_fraction": statistics.median(wait),
           "epoch1_examples_per_s": statistics.median(
               [m["examples_per_s"] for r in runs for m in r["history"] if m["epoch"] == 1]),
           "peak_rss_bytes": max(r["tree_peak_rss_bytes"] for r in runs),
           "wall_s": [r["wall_s"] for r in runs]}
    if table_s is not None and med_epoch > table_s:
        # The per-epoch neighbourhood table (one walk request over all items) is built by the
        # producer when the epoch's first batch is requested, so it is on the critical path.
        out["examples_per_s_excl_table_estimate"] = batch_examples / (med_epoch - table_s)
    return out


def ray_phase(paths: dict[str, Path], args: argparse.Namespace, tree: TreeMemory,
              table_s: dict[str, float]) -> dict[str, Any]:
    from pinsage_ray import init_ray

    import ray

    runs_root = Path(args.cache_dir) / "runs"
    runs_root.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    tree.reset()
    t0 = time.perf_counter()
    init_ray(num_cpus=2, object_store_memory=int(args.object_store_gb * 2**30))
    init_s = time.perf_counter() - t0
    time.sleep(2.0)
    idle = tree.sample()
    try:
        for label, _ in DATASETS:
            if label not in paths:
                continue
            per_cfg: dict[tuple[int, int], list[dict]] = {c: [] for c in CONFIGS}
            for rep in range(args.repeats):  # interleaved: drift hits every config alike
                for workers, prefetch in CONFIGS:
                    log.info("[%s] repeat %d/%d: %d worker(s), prefetch %d", label, rep + 1,
                             args.repeats, workers, prefetch)
                    r = one_run(paths[label], args, workers, prefetch, tree, runs_root)
                    log.info("[%s]   %s; wall %.1f s, tree peak %.0f MB", label,
                             ", ".join(f"e{m['epoch']}: {m['examples_per_s']:.0f}/s "
                                       f"{m['epoch_seconds']:.2f}s wait "
                                       f"{m['wait_fraction']:.0%}" for m in r["history"]),
                             r["wall_s"], r["tree_peak_rss_bytes"] / 2**20)
                    per_cfg[(workers, prefetch)].append(r)
            batch_examples = args.batches * args.batch_size
            summ = {f"w{w}_p{p}": summarise(rs, table_s.get(label), batch_examples)
                    for (w, p), rs in per_cfg.items()}
            seq = summ["w1_p0"]["examples_per_s_per_worker"]
            results[label] = {
                "configs": summ,
                "runs": {f"w{w}_p{p}": rs for (w, p), rs in per_cfg.items()},
                "producer_consumer_speedup":
                    summ["w1_p4"]["examples_per_s_per_worker"] / seq if seq else float("nan"),
            }
    finally:
        ray.shutdown()
    results["_ray"] = {"init_s": init_s, "idle_tree_rss_bytes": idle}
    return results


# --------------------------------------------------------------------------- in-process
def neighbor_table_seconds(graph: Path, args: argparse.Namespace) -> tuple[float, list[float]]:
    """Seconds of one epoch's neighbourhood table (walks from every item), as producers do it."""
    from pinsage_ray import LocalWalker
    from pinsage_ray.training import NeighborConfig

    nc = NeighborConfig(top_t=10)
    walker = LocalWalker(graph)
    seeds = np.arange(walker.num_items)

    def run() -> None:
        walker.importance_neighbors(seeds, num_walks=nc.num_walks, walk_length=nc.walk_length,
                                    restart_prob=nc.restart_prob, top_t=nc.top_t, seed=7)

    return median_of(run, 2, warmup=0)


STAGES = ("build", "forward", "loss", "backward", "optimizer")


def step_breakdown(graph: Path, args: argparse.Namespace, steps: int, profile: str = "",
                   threads: int = 1) -> dict[str, Any]:
    """One training step in this process, split into batch build / forward / loss / backward /
    Adam, over ``steps`` steps of epoch 2 (1 hard negative) after one warm-up step (whose
    batch builds the epoch's neighbourhood table). numpy on one thread, torch on ``threads``.

    Wall and CPU time (``time.thread_time`` of this thread: what the step cost, whatever
    other processes took from the core; with ``threads > 1`` torch's helper threads are not
    in it) per stage. ``profile``: '' (none), 'cprofile' or 'torch' (op-level table).
    """
    import torch

    from pinsage_ray import LocalWalker
    from pinsage_ray.graph import GraphStore
    from pinsage_ray.model.encoder import PinSageEncoder
    from pinsage_ray.training import BatchProducer, pairs_for
    from pinsage_ray.training.loop import batch_loss
    from pinsage_ray.training.trainer import model_config_for

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = train_config(args, 1, 0)
    cfg.batches_per_epoch = steps + 1
    store = GraphStore(graph)
    pairs = pairs_for(store, LocalWalker(graph), cfg)
    producer = BatchProducer(graph, cfg, pairs)
    model = PinSageEncoder(model_config_for(store, cfg))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    epoch = 2

    wall: dict[str, list[float]] = {k: [] for k in STAGES}
    cpu: dict[str, list[float]] = {k: [] for k in STAGES}
    sizes: dict[str, list[int]] = {"output_nodes": [], "layer1_nodes": [], "layer0_nodes": []}

    def step(i: int, record: bool = True) -> None:
        marks = [(time.perf_counter(), time.thread_time())]
        batch = producer.batch(epoch, i)
        marks.append((time.perf_counter(), time.thread_time()))
        emb = model(batch.inp)
        marks.append((time.perf_counter(), time.thread_time()))
        loss = batch_loss(emb, batch, cfg)
        marks.append((time.perf_counter(), time.thread_time()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        marks.append((time.perf_counter(), time.thread_time()))
        opt.step()
        marks.append((time.perf_counter(), time.thread_time()))
        if not record:
            return
        for k, (a, b) in zip(STAGES, zip(marks, marks[1:])):
            wall[k].append(b[0] - a[0])
            cpu[k].append(b[1] - a[1])
        blocks = batch.inp.blocks
        sizes["output_nodes"].append(int(blocks[-1].num_dst))
        sizes["layer1_nodes"].append(int(blocks[-1].num_src))
        sizes["layer0_nodes"].append(int(blocks[0].num_src))

    t0 = time.perf_counter()
    step(0, record=False)  # warm-up: the epoch's neighbourhood table, allocator, autograd
    first_s = time.perf_counter() - t0

    prof_text = None
    if profile == "cprofile":
        prof = cProfile.Profile()
        prof.enable()
        for i in range(1, steps + 1):
            step(i)
        prof.disable()
        buf = io.StringIO()
        st = pstats.Stats(prof, stream=buf)
        st.sort_stats("tottime").print_stats(25)
        buf.write("\n---- by cumulative time ----\n")
        st.sort_stats("cumulative").print_stats(40)
        prof_text = buf.getvalue()
    elif profile == "torch":
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        with tprofile(activities=[ProfilerActivity.CPU]) as tp:
            for i in range(1, steps + 1):
                step(i)
        prof_text = tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=25,
                                            max_name_column_width=40)
    else:
        for i in range(1, steps + 1):
            step(i)
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    step_wall, step_cpu = sum(med_wall.values()), sum(med_cpu.values())
    return {"steps": steps, "epoch": epoch, "hard_negatives": 1, "torch_threads": threads,
            "profile": profile or None, "first_step_with_table_s": first_s,
            "median_s": med_wall, "median_cpu_s": med_cpu,
            "share_cpu": {k: v / step_cpu for k, v in med_cpu.items()},
            "step_s": step_wall, "step_cpu_s": step_cpu,
            "examples_per_s_inprocess": cfg.batch_size / step_wall,
            "examples_per_cpu_s": cfg.batch_size / step_cpu,
            "examples_per_cpu_s_no_build": cfg.batch_size / (step_cpu - med_cpu["build"]),
            "overlap_bound_cpu": step_cpu / (step_cpu - med_cpu["build"]),
            **{f"{k}_median": statistics.median(v) for k, v in sizes.items()},
            "profile_text": prof_text}


def build_breakdown(graph: Path, args: argparse.Namespace, steps: int) -> dict[str, float]:
    """CPU time of the hard-negative sampling (``ppr_rank_sample``) alone, next to the whole
    ``BatchBuilder.build`` of the same pairs (epoch 2)."""
    from pinsage_ray import LocalWalker
    from pinsage_ray.graph import GraphStore
    from pinsage_ray.model.schedule import hard_negatives_for_epoch
    from pinsage_ray.training import BatchProducer, pairs_for
    from pinsage_ray.training.producer import batch_seed

    cfg = train_config(args, 1, 0)
    store = GraphStore(graph)
    pairs = pairs_for(store, LocalWalker(graph), cfg)
    producer = BatchProducer(graph, cfg, pairs)
    builder, walker = producer.builder, producer.walker
    epoch = 2
    producer.batch(epoch, 0)  # the epoch's neighbourhood table
    hard_k = hard_negatives_for_epoch(epoch, cfg.max_hard_negatives)
    ppr, total = [], []
    b = cfg.batch_size
    order = producer._order(epoch)
    for i in range(1, steps + 1):
        sl = order[np.arange(i * b, (i + 1) * b) % len(order)]
        q, p = producer.q[sl], producer.p[sl]
        seed = batch_seed(cfg.seed, 0, epoch, i)
        t0 = time.thread_time()
        walker.ppr_rank_sample(q, cfg.hard_band[0], cfg.hard_band[1], hard_k,
                               num_walks=cfg.hard_num_walks,
                               walk_length=cfg.neighbors.walk_length,
                               restart_prob=cfg.neighbors.restart_prob, seed=seed,
                               avoid=p[:, None])
        t1 = time.thread_time()
        builder.build(q, p, hard_k, epoch, seed)
        t2 = time.thread_time()
        ppr.append(t1 - t0)
        total.append(t2 - t1)
    return {"hard_negative_ppr_cpu_s": statistics.median(ppr),
            "build_cpu_s": statistics.median(total)}


def inprocess_phase(paths: dict[str, Path], args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, _ in DATASETS:
        if label not in paths:
            continue
        log.info("[%s] in-process step breakdown (%d steps)", label, args.profile_steps)
        r = step_breakdown(paths[label], args, args.profile_steps)
        r.update(build_breakdown(paths[label], args, max(5, args.profile_steps // 2)))
        log.info("[%s]   step %.1f ms wall / %.1f ms CPU: %s; %.0f examples/CPU-s", label,
                 1e3 * r["step_s"], 1e3 * r["step_cpu_s"],
                 ", ".join(f"{k} {1e3 * v:.1f}" for k, v in r["median_cpu_s"].items()),
                 r["examples_per_cpu_s"])
        t2 = step_breakdown(paths[label], args, max(3, args.profile_steps // 2), threads=2)
        r["torch_2_threads"] = {k: t2[k] for k in ("median_s", "step_s")}
        log.info("[%s]   torch 2 threads: step %.1f ms wall (forward %.1f, backward %.1f)",
                 label, 1e3 * t2["step_s"], 1e3 * t2["median_s"]["forward"],
                 1e3 * t2["median_s"]["backward"])
        if label == args.profile_dataset or label == "synthetic":
            for kind in ("cprofile", "torch"):
                log.info("[%s] %s of %d steps", label, kind, args.profile_steps)
                pr = step_breakdown(paths[label], args, args.profile_steps, profile=kind)
                r[f"{kind}_text"] = pr["profile_text"]
        r.pop("profile_text", None)
        out[label] = r
        gc.collect()
    return out


# --------------------------------------------------------------------------- report
def _graph_line(label: str, graph: Path, table: float | None, pairs: str = "") -> str:
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
             graph_lines: list[str], mem: dict) -> str:
    rows = []
    for label, _ in DATASETS:
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
    table = "(Ray runs skipped: `--skip-ray`.)" if not rows else markdown_table(["dataset", "workers", "prefetch", "examples/s/worker", "range",
                            "excl. table (est.)", "epoch 1 examples/s", "epoch s",
                            "wait fraction", "peak RSS MB", "train() wall s"], rows)
    speed = ", ".join(f"{label} **{res[label]['producer_consumer_speedup']:.2f}x**"
                      for label, _ in DATASETS if label in res)
    prow = []
    for label, _ in DATASETS:
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
        metrics_table(metrics, _targets()),
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


# --------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    default_data = os.environ.get("PINSAGE_DATA_DIR") or str(REPO.parent / "shared" / "data")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default=default_data, help="folder holding ml-100k/, gowalla/")
    p.add_argument("--cache-dir", default=str(REPO / ".bench_cache"),
                   help="prepared graphs are kept here between runs")
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per (dataset, workers, prefetch); each gives epochs-1 samples")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batches", type=int, default=30, help="batches per epoch per worker")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--items", type=int, default=50_000, help="synthetic items")
    p.add_argument("--groups", type=int, default=40_000, help="synthetic groups")
    p.add_argument("--group-size", type=float, default=10.0, help="synthetic mean group size")
    p.add_argument("--feature-dim", type=int, default=32, help="synthetic feature dim")
    p.add_argument("--profile-steps", type=int, default=20)
    p.add_argument("--profile-dataset", default="movielens",
                   choices=[d for d, _ in DATASETS])
    p.add_argument("--object-store-gb", type=float, default=1.0)
    p.add_argument("--skip-ray", action="store_true",
                   help="only the in-process breakdown; results go under the cache dir")
    p.add_argument("--quick", action="store_true",
                   help="tiny synthetic graph only; results go under the cache dir")
    add_guard_args(p)
    args = p.parse_args(argv)
    if args.quick:
        args.items, args.groups, args.group_size = 2_000, 1_500, 8.0
        args.epochs, args.batches, args.batch_size = 2, 5, 64
        args.repeats, args.profile_steps = 1, 5
        args.profile_dataset = "synthetic"
    if min(args.repeats, args.epochs, args.batches, args.batch_size, args.profile_steps) < 1:
        p.error("--repeats, --epochs, --batches, --batch-size, --profile-steps must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    scratch = (Path(args.cache_dir) / ("quick" if args.quick else "inprocess")
               if args.quick or args.skip_ray else None)  # never over the committed results
    machine = guard_machine(machine_info(), args, committed=scratch is None)
    t_start = time.perf_counter()
    paths = graphs(args)

    table_s: dict[str, float] = {}
    table_raw: dict[str, list[float]] = {}
    for label, path in paths.items():
        table_s[label], table_raw[label] = neighbor_table_seconds(path, args)
        log.info("[%s] neighbourhood table: %.2f s", label, table_s[label])

    tree = TreeMemory()
    res: dict[str, Any] = {"_ray": {"idle_tree_rss_bytes": 0}}
    if not args.skip_ray:
        res = ray_phase(paths, args, tree, table_s)
    tree.stop()
    ray_info = res.pop("_ray")
    driver_peak = peak_rss_bytes()["self"]  # before the in-process phase adds its own
    prof = inprocess_phase(paths, args)

    metrics: list[dict] = []
    for label, sfx in DATASETS:
        if label not in res:
            continue
        c = res[label]["configs"]
        metrics += [
            metric(f"train_examples_per_s_per_worker{sfx}",
                   c["w1_p4"]["examples_per_s_per_worker"], "examples/s"),
            metric(f"producer_consumer_speedup{sfx}", res[label]["producer_consumer_speedup"],
                   "ratio"),
            metric(f"train_peak_rss_mb{sfx}",
                   max(s["peak_rss_bytes"] for s in c.values()) / 2**20, "MB",
                   higher_is_better=False),
            metric(f"train_examples_per_s_per_worker_2_workers{sfx}",
                   c["w2_p4"]["examples_per_s_per_worker"], "examples/s"),
            metric(f"train_examples_per_s_sequential{sfx}",
                   c["w1_p0"]["examples_per_s_per_worker"], "examples/s"),
            metric(f"train_epoch_seconds{sfx}", c["w1_p4"]["epoch_seconds"], "s",
                   higher_is_better=False),
            metric(f"train_wait_fraction{sfx}", c["w1_p4"]["wait_fraction"], "ratio",
                   higher_is_better=False),
        ]
    for label, sfx in DATASETS:
        if label in prof:
            metrics.append(metric(f"train_step_examples_per_cpu_s{sfx}",
                                  prof[label]["examples_per_cpu_s"], "examples/CPU-s"))
    head = ["train_examples_per_s_per_worker", "producer_consumer_speedup", "train_peak_rss_mb"]
    metrics.sort(key=lambda m: head.index(m["name"]) if m["name"] in head else len(head))

    notes = []
    if args.quick:
        notes.append("Note: `--quick` run on a tiny graph; the numbers only check the script.")
    mem = {"driver_peak_rss_bytes": driver_peak, **ray_info}
    extra: dict[str, Any] = {
        "args": vars(args), "train_config": train_config(args, 1, 4).to_dict(),
        "graphs": {k: str(v) for k, v in paths.items()},
        "neighbor_table_seconds": table_s, "neighbor_table_seconds_raw": table_raw,
        "results": res, "step_breakdown": prof, "memory": mem, "notes": notes,
        "total_seconds": time.perf_counter() - t_start,
    }
    res["_notes"] = notes
    finish_machine(machine)
    graph_lines = [_graph_line(label, paths[label], table_s.get(label))
                   for label, _ in DATASETS if label in paths]
    md = markdown(metrics, machine, res, prof, args, graph_lines, mem)
    res.pop("_notes")
    publish(NAME, metrics, machine, extra, md, scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
