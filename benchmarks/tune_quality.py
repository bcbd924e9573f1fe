"""Validation curves that choose the presets: quality against training minutes, in one process.

docs/quality.md's validation tables come from this script. It trains with the library's own
pieces (``BatchProducer``, ``PinSageEncoder``, ``batch_loss``, the linear warm-up/decay
schedule) in one process, embeds every item layer by layer (``embed_all``) at the requested
minutes and scores the protocol's **validation** split only:

* ``p2``: Gowalla with 10 % of each user's ``train.txt`` carved out (``p2_data(...,
  validation=0.1)``; ``test.txt`` is never read), Recall@20 / NDCG@20;
* ``p1``: MovieLens-100K's validation item (the second-to-last), HR@10 / MRR;
* ``planted``: the fine/coarse planted graph, fine and coarse precision@10 (labels are the
  known answer; no split is involved).

The step budget is fixed up front so the learning rate decays to zero at the end: the first
``--probe-steps`` steps measure the step rate, and ``--minutes`` is turned into a step count.
Intermediate evaluations (``--eval-at``, minutes) show the curve; their time is not counted.
Batches are built on the same core as the training here (Ray Train overlaps the two), so
absolute minutes are slower than ``pinsage-ray train``; comparisons within one run are fair.

Each run appends one JSON line per evaluation to ``--out``
(default ``benchmarks/results/tune_quality.jsonl``); ``--table`` prints them as markdown.

    python benchmarks/tune_quality.py p2 --preset groups --set conv=propagate --minutes 8
    python benchmarks/tune_quality.py p2 --preset groups --set num_layers=0 --label no-graph
    python benchmarks/tune_quality.py --table
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from _common import (REPO, RESULTS_DIR, add_guard_args, guard_machine, machine_info,
                     merge_results, metric)

logger = logging.getLogger("tune_quality")
DATA = Path(os.environ.get("PINSAGE_DATA_DIR", REPO.parent / "shared" / "data"))
CACHE = REPO / ".bench_cache" / "tune"


def protocol_data(name: str, seed: int) -> tuple[Any, Any]:
    """``(graph_dir, evaluate(emb) -> metrics)`` for a protocol's validation split."""
    from pinsage_ray.evaluation import harness
    from pinsage_ray.evaluation.protocols import evaluate_p1, evaluate_p2

    if name == "p2":
        data = harness.p2_data(DATA / "gowalla", CACHE / "p2val", validation=0.1)

        def evaluate(emb: np.ndarray, query_exponent: float = 0.0,
                     popularity: float = 0.0) -> dict[str, float]:
            scorer = CalibratedScorer(emb, data, query_exponent, popularity)
            return evaluate_p2(scorer.user_scores, data.train_users, data.train_items,
                               data.test_users, data.test_items, data.num_items)
        return data.graph_dir, evaluate
    if name == "p1":
        data = harness.p1_data(DATA / "ml-100k", CACHE / "p1")

        def evaluate(emb: np.ndarray) -> dict[str, float]:
            scorer = harness.PinSageScorer.from_embeddings(emb, data)
            return evaluate_p1(scorer.item_scores, data.split, "val")
        return data.graph_dir, evaluate
    from pinsage_ray.data.synthetic import fine_coarse_config, generate_synthetic
    from pinsage_ray.evaluation.oracle import _labels_by_graph_id
    from pinsage_ray.evaluation.planted import planted_precision
    from pinsage_ray.graph import prepare

    ds = generate_synthetic(fine_coarse_config(seed))
    store = prepare(ds, str(CACHE / f"planted-{seed}"), overwrite=True)
    labels = _labels_by_graph_id(ds, np.asarray(store.item_ids.to_numpy(zero_copy_only=False)))

    def evaluate(emb: np.ndarray) -> dict[str, float]:
        return {f"{k}_p10": v for k, v in planted_precision(emb, labels, 10).items()}
    return str(CACHE / f"planted-{seed}"), evaluate


class CalibratedScorer:
    """P2 user scores with degree calibration: a user's query is the normalised mean of their
    items' embeddings weighted by ``degree ** -query_exponent``, and every candidate's cosine
    gets ``popularity * log1p(degree)`` added (0, 0 = the plain pooled cosine)."""

    def __init__(self, emb: np.ndarray, data: Any, query_exponent: float,
                 popularity: float) -> None:
        from pinsage_ray.evaluation.harness import PinSageScorer
        from pinsage_ray.graph import GraphStore

        self.base = PinSageScorer.from_embeddings(emb, data)
        deg = np.zeros(data.num_items)
        present = data.item_to_graph >= 0
        deg[present] = GraphStore(data.graph_dir).degrees("item")[data.item_to_graph[present]]
        self.weight = torch.from_numpy(np.maximum(deg, 1) ** -query_exponent).float()
        self.bonus = torch.from_numpy(popularity * np.log1p(deg)).float()

    def user_scores(self, user_ids: np.ndarray) -> np.ndarray:
        b = self.base
        vecs = torch.zeros(len(user_ids), b.table.shape[1])
        for row, u in enumerate(np.asarray(user_ids)):
            items = torch.as_tensor(b.user_items[b.user_ptr[u]:b.user_ptr[u + 1]])
            if len(items):
                vecs[row] = (b.table[items] * self.weight[items, None]).sum(0)
        vecs = torch.nn.functional.normalize(vecs, dim=1)
        return b._mask(vecs @ b.table.T + self.bonus)


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    from pinsage_ray.graph import GraphStore
    from pinsage_ray.inference.layerwise import embed_all
    from pinsage_ray.model.encoder import PinSageEncoder
    from pinsage_ray.model.schedule import warmup_linear_decay
    from pinsage_ray.training.config import TrainConfig
    from pinsage_ray.training.loop import batch_loss, epoch_graph
    from pinsage_ray.training.pairs import pairs_for
    from pinsage_ray.training.producer import BatchProducer
    from pinsage_ray.training.trainer import model_config_for

    torch.set_num_threads(args.threads)
    graph_dir, evaluate = protocol_data(args.protocol, args.seed)
    store = GraphStore(graph_dir)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    if "top_t" in overrides:
        overrides.setdefault("neighbors", {})["top_t"] = overrides.pop("top_t")
    cfg = TrainConfig.preset(args.preset, seed=args.seed, **overrides)
    cfg = cfg.resolved(store.has_timestamps)
    producer = BatchProducer(graph_dir, cfg, pairs_for(store, producer_walker(graph_dir), cfg))
    torch.manual_seed(cfg.seed)
    model = PinSageEncoder(model_config_for(store, cfg))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    degree_all = store.degrees("item").astype(np.float64)

    def reweight(ids: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Screening only: neighbour weights times degree ** -beta, renormalised."""
        if not args.neighbor_degree_exponent:
            return weights
        w = weights * np.maximum(degree_all[np.maximum(ids, 0)], 1) ** -args.neighbor_degree_exponent
        w = np.where(ids >= 0, w, 0.0)
        total = w.sum(1, keepdims=True)
        return (w / np.where(total > 0, total, 1)).astype(np.float32)

    nb = producer.eval_neighbors(cfg.seed)
    nb.weights = reweight(nb.ids, nb.weights)
    feats = store.features()
    feats = None if feats is None else np.asarray(feats, np.float32)
    degree = store.degrees("item")

    graphs: dict[int, Any] = {}

    def step(sched: Any, epoch: int, index: int) -> None:
        model.train()
        batch = producer.batch(epoch, index % producer.num_batches)
        if batch.inp is None and epoch not in graphs:  # whole-graph training
            graphs.clear()
            inputs = producer.whole_graph(epoch)
            inputs["nb_weights"] = reweight(inputs["nb_ids"], inputs["nb_weights"])
            graphs[epoch] = epoch_graph(inputs, cfg.pooling)
        loss = batch_loss(model(batch.inp if batch.inp is not None else graphs[epoch]), batch,
                          cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()

    # probe the step rate with a constant lr, then restart from the same initial weights
    init = {k: v.clone() for k, v in model.state_dict().items()}
    step(None, 1, 0)  # the first step also walks the epoch's neighbourhood table: not timed
    t0 = time.perf_counter()
    for i in range(1, args.probe_steps + 1):
        step(None, 1, i)
    sec_per_step = (time.perf_counter() - t0) / args.probe_steps
    model.load_state_dict(init)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = args.steps or max(1, int(args.minutes * 60 / sec_per_step))
    sched = warmup_linear_decay(opt, int(cfg.warmup_fraction * total), total)
    eval_steps = sorted({min(total, max(1, int(m * 60 / sec_per_step))) for m in args.eval_at}
                        | {total})
    logger.info("%s %s: %.3f s/step, %d steps planned, eval at %s", args.protocol, args.label,
                sec_per_step, total, eval_steps)
    rows, trained, done = [], 0.0, 0
    for target in eval_steps:
        t1 = time.perf_counter()
        while done < target:
            epoch, index = 1 + done // producer.num_batches, done % producer.num_batches
            step(sched, epoch, index)
            done += 1
        trained += time.perf_counter() - t1
        model.eval()
        emb = embed_all(model, feats, degree, nb.ids, nb.weights)
        row = {"protocol": args.protocol, "label": args.label, "preset": args.preset,
               "overrides": overrides, "seed": args.seed, "step": done, "planned_steps": total,
               "train_minutes": round(trained / 60, 2), "s_per_step": round(sec_per_step, 4),
               **{k: round(float(v), 4) for k, v in evaluate(emb).items()}}
        logger.info("%s", row)
        rows.append(row)
    if args.save_model:
        torch.save(model.state_dict(), args.save_model)
    rows[-1].update(signal_shares(model, feats, degree, nb))
    # the trained model's own use of the graph: embed again with every neighbourhood empty
    empty = np.full_like(nb.ids, -1)
    no_nb = evaluate(embed_all(model, feats, degree, empty, np.zeros_like(nb.weights)))
    rows[-1].update({f"{k}_without_neighbours": round(float(v), 4) for k, v in no_nb.items()})
    logger.info("final: %s", rows[-1])
    for k in args.infer_layers:  # the trained weights, embedded with K' propagation hops
        other = PinSageEncoder(dataclasses.replace(model.config, num_layers=k))
        other.load_state_dict(model.state_dict(), strict=False)
        got = evaluate(embed_all(other, feats, degree, nb.ids, nb.weights))
        rows[-1].update({f"{m}_infer_K{k}": round(float(v), 4) for m, v in got.items()})
        logger.info("inference with K=%d: %s", k, got)
    if args.calibrate and args.protocol == "p2":
        for a in (0.0, 0.25, 0.5):
            for b in (-0.02, 0.0, 0.02, 0.05, 0.1):
                metrics = evaluate(emb, a, b)
                rows.append({**rows[-1], "label": f"{args.label}; query deg^-{a}, +{b} log deg",
                             "calibration": [a, b],
                             **{k: round(float(v), 4) for k, v in metrics.items()}})
                logger.info("calibration a=%s b=%s: %s", a, b, metrics)
    return rows


def signal_shares(model: Any, feats: np.ndarray | None, degree: np.ndarray,
                  nb: Any) -> dict[str, float]:
    """Where a trained embedding's signal comes from, over all items with edges.

    Paper layer with an id skip: the id term's share of ``||conv|| + ||id||`` and the cosine
    of the embedding with each term. Propagation: the item's own layer-0 vector's share of
    the layer sum (``||h0|| / (||h0|| + ||h1 + ... + hK||)``) and the embedding's cosine with
    its ``h0``. K = 0: everything is the item's own input.
    """
    from pinsage_ray.inference.layerwise import embed_all

    captured: list[torch.Tensor] = []
    real = model.output_layer

    def capture(h: torch.Tensor, node_ids: torch.Tensor | None = None) -> torch.Tensor:
        captured.append(h.detach())
        return real(h, node_ids)

    model.output_layer = capture
    try:
        emb = torch.from_numpy(embed_all(model, feats, degree, nb.ids, nb.weights))
    finally:
        del model.output_layer
    h = torch.cat(captured)
    has = torch.from_numpy(np.asarray(degree) > 0)
    ids = torch.arange(len(degree))
    cos = torch.nn.functional.cosine_similarity
    with torch.no_grad():
        if model.propagate:
            hid = model.config.hidden_dim
            h0 = model.input_layer(ids, None if feats is None else torch.from_numpy(feats),
                                   torch.from_numpy(np.log1p(degree).astype(np.float32)))
            own, total = h0[:, :hid], h[:, hid:]
            rest = (total - own).norm(dim=1)
            share = own.norm(dim=1) / (own.norm(dim=1) + rest).clamp_min(1e-12)
            align = cos(emb, torch.nn.functional.normalize(model.output_proj(own), dim=1))
            return {"own_input_share": round(float(share[has].mean()), 4),
                    "cos_embedding_own_input": round(float(align[has].mean()), 4)}
        if model.skip_proj is None:
            return {}
        conv = model.output_proj(torch.relu(model.output_hidden(h)))
        idt = model.skip_proj(model.input_proj.id_vectors(ids))
        share = idt.norm(dim=1) / (idt.norm(dim=1) + conv.norm(dim=1)).clamp_min(1e-12)
        return {"id_share": round(float(share[has].mean()), 4),
                "cos_embedding_id": round(float(cos(emb, idt)[has].mean()), 4),
                "cos_embedding_conv": round(float(cos(emb, conv)[has].mean()), 4)}


def neighbour_stats(graph_dir: str, walk_counts: list[int], top_t: int = 10,
                    sample: int = 2000) -> None:
    """How well ``num_walks`` walks resolve each item's top-T: visits of the T-th neighbour
    (ties at 1-2 visits are broken by item id) and the neighbours' mean degree."""
    from pinsage_ray.graph import GraphStore

    store = GraphStore(graph_dir)
    deg = store.degrees("item")
    items = np.random.default_rng(0).choice(store.num_items, min(sample, store.num_items),
                                            replace=False)
    walker = producer_walker(graph_dir)
    for nw in walk_counts:
        nb = walker.importance_neighbors(items, num_walks=nw, walk_length=2, restart_prob=0.5,
                                         top_t=top_t, seed=1)
        last = nb.counts[:, top_t - 1]
        print(f"{nw} walks: visits of the {top_t}th neighbour median {np.median(last):.0f}, "
              f"<= 2 for {np.mean(last <= 2):.1%} of {len(items)} items; neighbours' mean "
              f"degree {deg[nb.ids[nb.ids >= 0]].mean():.0f} (items' {deg[items].mean():.0f})")


def producer_walker(graph_dir: str) -> Any:
    from pinsage_ray.sampling.local import LocalWalker

    return LocalWalker(graph_dir)


def table(path: Path, protocol: str | None = None) -> str:
    """Markdown of the evaluations in ``path`` (one protocol, or all): the planned budget
    (planned steps x the probed step time), the metric, and for final evaluations the metric
    when the same weights are embedded without neighbours."""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if protocol in (None, r["protocol"])]
    if not rows:
        return f"(no evaluations of {protocol or 'any protocol'} in {path})"
    keys = [k for k in ("recall@20", "ndcg@20", "hit@10", "mrr", "fine_p10", "coarse_p10")
            if any(k in r for r in rows)]
    head = ["protocol", "run", "seed", "step / planned", "budget min", *keys,
            f"{keys[0]} without neighbours", "own-input or id share"]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        share = r.get("own_input_share", r.get("id_share", ""))
        out.append("| " + " | ".join(str(x) for x in (
            r["protocol"], r["label"].replace("|", ";"), r["seed"],
            f"{r['step']}/{r['planned_steps']}", round(r["planned_steps"] * r["s_per_step"] / 60, 1),
            *(r.get(k, "") for k in keys), r.get(f"{keys[0]}_without_neighbours", ""),
            share)) + " |")
    return "\n".join(out)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("protocol", nargs="?", choices=["p1", "p2", "planted"])
    ap.add_argument("--preset", default="items")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=JSON",
                    help="TrainConfig override, e.g. conv='\"propagate\"' or num_layers=0")
    ap.add_argument("--label", default="")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--minutes", type=float, default=4.0, help="training budget")
    ap.add_argument("--steps", type=int, default=0, help="fixed step budget (over --minutes)")
    ap.add_argument("--eval-at", type=float, nargs="*", default=[], help="minutes")
    ap.add_argument("--probe-steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--neighbor-degree-exponent", type=float, default=0.0,
                    help="whole-graph screening: neighbour weights times degree ** -beta")
    ap.add_argument("--infer-layers", type=int, nargs="*", default=[],
                    help="propagate models: also embed the final weights with these K")
    ap.add_argument("--time-to", type=float, default=None, metavar="VALUE",
                    help="write the minutes until the validation metric first reaches VALUE "
                    "to results/train.json (e.g. p2 --time-to 0.17)")
    ap.add_argument("--save-model", type=Path, default=None, help="final state dict here")
    ap.add_argument("--calibrate", action="store_true",
                    help="p2: also score the final embeddings with degree calibration")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "tune_quality.jsonl")
    ap.add_argument("--neighbour-stats", type=int, nargs="*", metavar="WALKS",
                    help="print how well these walk counts resolve the top-10 and exit")
    ap.add_argument("--table", action="store_true", help="print --out as markdown and exit")
    add_guard_args(ap)
    args = ap.parse_args(argv)
    if args.protocol is None and not args.table:
        ap.error("give a protocol (p1, p2, planted) or --table")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.table:
        print(table(args.out, args.protocol))
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.neighbour_stats:
        neighbour_stats(protocol_data(args.protocol, args.seed)[0], args.neighbour_stats)
        return
    args.label = args.label or (" ".join(args.set) or args.preset)
    # Into the committed results: the JSON lines under results/ or a metric in train.json.
    committed = args.time_to is not None or args.out.resolve().parent == RESULTS_DIR.resolve()
    machine = guard_machine(machine_info(), args, committed=committed)
    rows = run(args)
    with open(args.out, "a") as f:
        for r in rows:
            f.write(json.dumps({**r, "load_average_start": machine["load_average_start"],
                                "git_commit": machine["git_commit"],
                                "guard": machine["guard"]}) + "\n")
    if args.time_to is not None:
        key, threshold = {"p2": "recall@20", "p1": "hit@10", "planted": "fine_p10"}[
            args.protocol], args.time_to
        curve = [(r["train_minutes"], r[key]) for r in rows if "calibration" not in r]
        reached = [m for m, v in curve if v >= threshold]
        name = (f"{args.protocol}_{'gowalla' if args.protocol == 'p2' else 'ml100k'}_minutes_to_"
                f"{key.replace('@', '').replace('_', '')}_{str(threshold).replace('.', '_')}")
        value = reached[0] if reached else float("nan")
        path = merge_results("train", [metric(name, value, "min", False)], machine,
                             "time_to_quality", {
                                 "metric": name, "curve_minutes_value": curve,
                                 "command": "python benchmarks/tune_quality.py " + " ".join(
                                     sys.argv[1:] if argv is None else argv),
                                 "how": "minutes of in-process training (batches built on the "
                                        "same core) until the validation split first reaches "
                                        "the threshold, at the evaluated points of one "
                                        "schedule planned for --minutes"})
        print(f"{name} = {value} ({path})")


if __name__ == "__main__":
    main()
