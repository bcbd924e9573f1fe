"""What ``bench_train.py`` runs, and times in process: the measured training config, one
epoch's neighbourhood table, and one training step split into batch build / forward / loss /
backward / Adam (with optional cProfile or torch-profiler tables). ``scale_stages.py`` reuses
the step breakdown at every graph size.

Plain Python, no Ray: numpy on the caller's threads, torch on the ``threads`` asked for.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import median_of


def train_config(args: argparse.Namespace, workers: int, prefetch: int) -> Any:
    """The measured ``TrainConfig`` (``args``: epochs, batches, batch size) for a run of
    ``workers`` Train workers with ``prefetch`` batches built ahead."""
    from pinsage_ray.training import TrainConfig

    # the paper's recipe, as every committed train.json row measured (comparable over time)
    return TrainConfig.preset(
        "paper", hidden_dim=64, embedding_dim=64, neighbors={"top_t": 10},
        num_epochs=args.epochs, batch_size=args.batch_size, batches_per_epoch=args.batches,
        num_workers=workers, prefetch=prefetch, num_producers=1, max_failures=0,
        eval_max_items=0)  # no per-epoch evaluation (not timed; saves wall time)


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
