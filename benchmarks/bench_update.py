#!/usr/bin/env python
"""Incremental update vs recomputing everything (``pinsage-ray update``, docs/update.md).

On the synthetic graph (``--items``/``--edges``, default 1M / 20M, 32-d features), for each
``--fractions`` f (default 0.1%, 1%, 10%): a day of new rows is split off the generated
interactions (a fraction f of the rows, with every row of f/10 of the items and f/10 of the
groups, so the day holds new items and new groups as well as new edges between existing
ones). The base is prepared, embedded (``mode="local"``) and indexed once per fraction; then:

* **update**: ``update_run(run, day, item_features=..., mode="local")`` (in process, as the
  full side's ``embed``), seconds, walks rerun, rows
  recomputed per layer;
* **full**: ``prepare`` on the merged input + ``embed`` + ``build_index`` in a fresh run with a
  model of the same shape (weights do not change the cost), seconds; base + day is the same
  set of rows for every fraction, so this runs once;
* **oracle**: the update's embeddings against ``embed_all`` over every item of the updated
  graph with the same model and seeds (max abs diff).

The model is an untrained ``PinSageEncoder`` (K = 2, hidden = embedding = 64). At
``--serve-fraction`` (default 1%) the update is then undone (``updates/`` removed: version 0
again) and rerun while Ray Serve answers ``/related`` under constant load
(:mod:`update_serve`): failed requests, wrong answers (each checked against the version its
response names) and seconds from the update's start until the new version answers. Writes ``benchmarks/results/update.json``
and the ``update`` section of ``benchmarks/RESULTS.md`` (``--quick``: a small graph, written
under the cache dir instead).

    python benchmarks/bench_update.py --quick
    nohup python benchmarks/bench_update.py > update.log 2>&1 &
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from _common import (add_guard_args, finish_machine, guard_machine, machine_info,  # noqa: E402
                     metric, publish, setup_logging)
from _graphs import REPO, mean_group_size_for  # noqa: E402

NAME = "update"
log = logging.getLogger("bench_update")
NEIGHBORS = {"num_walks": 20, "walk_length": 2, "restart_prob": 0.5, "top_t": 10}
HIDDEN = EMB = 64


def write_model(run: Path, graph: Path) -> Any:
    """``run/model`` as ``train`` leaves it, with an untrained seeded encoder for ``graph``."""
    import torch

    from pinsage_ray import GraphStore
    from pinsage_ray.model.encoder import ModelConfig, PinSageEncoder

    store = GraphStore(graph)
    torch.manual_seed(0)
    cfg = ModelConfig(num_items=store.num_items, feature_dim=store.feature_dim,
                      hidden_dim=HIDDEN, embedding_dim=EMB, num_layers=2,
                      use_id_embedding=False)
    enc = PinSageEncoder(cfg).eval()
    (run / "model").mkdir(parents=True)
    torch.save(enc.state_dict(), run / "model" / "model.pt")
    (run / "model" / "model.json").write_text(json.dumps({
        "model_config": cfg.to_dict(), "train_config": {"neighbors": NEIGHBORS},
        "graph_dir": str(graph), "epoch": 0, "note": "untrained, written by bench_update"}))
    return enc


def split_day(data: Any, fraction: float, seed: int) -> tuple[Any, Any, Any, Any]:
    """(base rows, day rows, base features, day features) of a RawDataset."""
    import pyarrow as pa
    import pyarrow.compute as pc

    inter, feats = data.interactions, data.item_features
    it, gr = inter.column("item").to_numpy(), inter.column("group").to_numpy()
    rng = np.random.default_rng(seed)
    items, groups = np.unique(it), np.unique(gr)
    new_items = rng.choice(items, max(1, int(len(items) * fraction / 10)), replace=False)
    new_groups = rng.choice(groups, max(1, int(len(groups) * fraction / 10)), replace=False)
    day = np.isin(it, new_items) | np.isin(gr, new_groups) | (rng.random(len(it)) < fraction)
    base, new = inter.filter(pa.array(~day)), inter.filter(pa.array(day))
    in_base = pc.is_in(feats.column("item"), value_set=pc.unique(base.column("item")))
    return base, new, feats.filter(in_base), feats.filter(pc.invert(in_base))


def full_pipeline(data: Any, work: Path) -> tuple[float, int]:
    """Seconds of prepare + embed + index from scratch on all the rows, and the edge count.

    Every fraction's base + day is the same set of rows (``split_day`` only partitions them),
    so this one timing is every fraction's "full" side.
    """
    from pinsage_ray import prepare
    from pinsage_ray.inference.pipeline import embed
    from pinsage_ray.recommender import build_index

    shutil.rmtree(work, ignore_errors=True)
    t0 = time.perf_counter()
    merged = prepare(data.interactions, work / "graph", item_features=data.item_features)
    write_model(work / "run", work / "graph")
    embed(work / "run", mode="local")
    build_index(work / "run")
    seconds = time.perf_counter() - t0
    shutil.rmtree(work, ignore_errors=True)
    return seconds, merged.num_edges


def one_fraction(data: Any, fraction: float, work: Path, full: tuple[float, int],
                 args: argparse.Namespace) -> dict:
    from pinsage_ray import GraphStore, LocalWalker, prepare
    from pinsage_ray.inference.layerwise import embed_all
    from pinsage_ray.inference.pipeline import DEFAULT_SEED, embed
    from pinsage_ray.recommender import build_index
    from pinsage_ray.update import update_run
    from pinsage_ray.update.layers import node_ids

    shutil.rmtree(work, ignore_errors=True)
    base, day, base_feats, day_feats = split_day(data, fraction, args.seed)
    prepare(base, work / "graph", item_features=base_feats)
    enc = write_model(work / "run", work / "graph")
    embed(work / "run", mode="local")
    build_index(work / "run")
    t0 = time.perf_counter()
    result = update_run(work / "run", day, item_features=day_feats, mode="local")
    update_s = time.perf_counter() - t0
    full_s, num_edges = full

    version = Path(result.path)  # oracle: every item from scratch on the updated graph
    store = GraphStore(version / "graph")
    n = store.num_items
    nb = LocalWalker(str(version / "graph")).importance_neighbors(
        np.arange(n), seed=DEFAULT_SEED, **NEIGHBORS)
    degree = store.degrees("item")
    full = embed_all(enc, np.asarray(store.features()), degree, nb.ids, nb.weights,
                     node_ids=node_ids(n, degree, GraphStore(work / "graph").degrees("item")))
    diff = float(np.abs(np.load(version / "inference" / "output.npy") - full).max())
    serve_report = None
    if fraction == args.serve_fraction and not args.no_serve:
        from update_serve import serve_during_update

        shutil.rmtree(work / "run" / "updates")  # version 0 again; the rerun is the same update
        serve_report = serve_during_update(
            work / "run",
            lambda: update_run(work / "run", day, item_features=day_feats, mode="local"))
        log.info("serve during the update: %s", serve_report)
    out = {"fraction": fraction, "day_rows": day.num_rows, "items": n,
           "edges": num_edges, "update_seconds": update_s, "full_seconds": full_s,
           "speedup": full_s / update_s, "oracle_max_abs_diff": diff,
           "affected_items": result.affected_items,
           "neighborhoods_changed": result.neighborhoods_changed,
           "recomputed": result.recomputed, "recomputed_fraction": result.recomputed[-1] / n,
           "steps": result.seconds, "index": result.index, "serve": serve_report}
    log.info("fraction %.4f: %s", fraction, out)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


def markdown(rows: list[dict]) -> str:
    lines = ["## update", "", "| day | update s | full s | speed-up | walks rerun | output rows "
             "recomputed | index | oracle max diff |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['fraction']:.1%} ({r['day_rows']} rows) | {r['update_seconds']:.2f} "
                     f"| {r['full_seconds']:.2f} | {r['speedup']:.1f}x | "
                     f"{r['affected_items'] / r['items']:.1%} | {r['recomputed_fraction']:.1%} "
                     f"| {r['index'].get('mode')}, ef {r['index'].get('ef')} | "
                     f"{r['oracle_max_abs_diff']:.1e} |")
    for r in rows:
        sv = r.get("serve")
        if sv:
            to_serve = ("never" if sv["seconds_to_serve"] is None
                        else f"{sv['seconds_to_serve']:.1f} s after the update started "
                             f"({sv['seconds_commit_to_serve']:.1f} s after it committed)")
            lines += ["", f"Serving during the {r['fraction']:.1%} update ({sv['clients']} "
                      f"clients, /related of {sv['items_asked']} items, replicas checking every "
                      f"{sv['watch_s']} s): {sv['requests']} requests, "
                      f"{sv['failed_requests']} failed, {sv['wrong_answers']} wrong "
                      f"({sv['answers_old']} answered by the old version, {sv['answers_new']} "
                      f"by the new); the new version served {to_serve}; the update took "
                      f"{sv['update_seconds_under_load']:.1f} s under this load."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=None, help="default 1M (20k with --quick)")
    p.add_argument("--edges", type=int, default=None, help="default 20M (200k with --quick)")
    p.add_argument("--groups", type=int, default=None, help="default items // 2")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.001, 0.01, 0.1])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--serve-fraction", type=float, default=0.01,
                   help="the fraction whose update is rerun under Serve load")
    p.add_argument("--no-serve", action="store_true", help="skip the serve phase")
    p.add_argument("--quick", action="store_true",
                   help="20k items / 200k edges unless given, results under the cache dir")
    p.add_argument("--keep", action="store_true", help="keep the work directories")
    p.add_argument("--cache-dir", default=str(REPO / ".bench_cache"))
    add_guard_args(p)
    args = p.parse_args(argv)
    small = args.quick
    args.items = args.items or (20_000 if small else 1_000_000)
    args.edges = args.edges or (200_000 if small else 20_000_000)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    groups = args.groups or args.items // 2
    setup_logging()
    scratch = Path(args.cache_dir) / "update-quick" if args.quick else None
    machine = guard_machine(machine_info(), args, committed=scratch is None)
    from pinsage_ray.data.synthetic import SyntheticConfig, generate_synthetic

    t_start = time.perf_counter()
    data = generate_synthetic(SyntheticConfig(
        num_items=args.items, num_groups=groups, feature_dim=32, seed=args.seed,
        mean_group_size=mean_group_size_for(args.edges, groups, args.items)))
    full = full_pipeline(data, Path(args.cache_dir) / "update-work-full")
    log.info("full pipeline on every row: %.1f s", full[0])
    rows = [one_fraction(data, f, Path(args.cache_dir) / f"update-work-{f}", full, args)
            for f in args.fractions]
    by = {r["fraction"]: r for r in rows}
    metrics = []
    for f, tag in ((0.001, "0_1pct"), (0.01, "1pct"), (0.1, "10pct")):
        if f in by:
            metrics.append(metric(f"update_vs_full_speedup_{tag}", by[f]["speedup"], "x"))
    if 0.01 in by:
        metrics.append(metric("update_items_recomputed_fraction_1pct",
                              by[0.01]["recomputed_fraction"], "fraction", False))
    metrics.append(metric("update_oracle_max_abs_diff",
                          max(r["oracle_max_abs_diff"] for r in rows), "abs", False))
    served = [r["serve"] for r in rows if r.get("serve")]
    if served:
        sv = served[0]
        tag = "1pct" if args.serve_fraction == 0.01 else f"{args.serve_fraction:g}".replace(".", "_")
        metrics += [metric("update_serve_failed_requests", sv["failed_requests"], "requests", False),
                    metric("update_serve_wrong_answers", sv["wrong_answers"], "answers", False)]
        if sv["seconds_to_serve"] is not None:
            metrics.append(metric(f"update_seconds_to_serve_{tag}", sv["seconds_to_serve"], "s",
                                  False))
    extra = {"rows": rows, "items": args.items, "edges": args.edges, "groups": groups,
             "neighbors": NEIGHBORS,
             "total_seconds": time.perf_counter() - t_start}
    publish(NAME, metrics, finish_machine(machine), extra, markdown(rows), scratch_dir=scratch)


if __name__ == "__main__":
    main()
