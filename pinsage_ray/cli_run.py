"""``pinsage-ray serve``, ``evaluate`` and ``quickstart``: the commands that run a trained
model (or the whole pipeline), kept apart from :mod:`pinsage_ray.cli`, which registers them,
so each module stays a short list of thin commands. Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pinsage_ray.cli_train import add_preset_args, train_config_from_args
from pinsage_ray.console import hint


# --------------------------------------------------------------------------- serve
def serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run with embeddings and an index (embed, index)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--num-replicas", type=int, default=1,
                   help="replicas, each holding the index (default 1)")
    p.add_argument("--ef", type=int, default=None, help="HNSW search ef (default: the index's)")
    p.add_argument("--address", help="Ray address (default: a new local instance); a running "
                   "cluster keeps its own ingress settings (docs/cluster.md)")
    p.add_argument("--no-haproxy", action="store_true",
                   help="Serve's Python proxy instead of HAProxy (default: HAProxy, several "
                   "times the requests/s; it also listens on *:8404 and *:9101)")
    p.add_argument("--no-throughput-optimized", action="store_true",
                   help="Serve's default mode instead of RAY_SERVE_THROUGHPUT_OPTIMIZED")
    p.add_argument("--api", choices=["plain", "fastapi"], default="plain",
                   help="HTTP routing: hand-written (default, fastest) or FastAPI with pydantic "
                   "models and an OpenAPI page at /docs (16-37%% fewer requests/s; "
                   "docs/serving.md)")
    p.add_argument("--access-log", action="store_true",
                   help="Serve's per-request access log lines (default: off)")
    p.add_argument("--watch-updates", type=float, default=2.0, metavar="SECONDS",
                   help="how often replicas check for a new version written by `pinsage-ray "
                   "update` and switch to it with no restart (default: 2; 0: never)")
    p.add_argument("--partition-actors", action="store_true",
                   help="a partitioned index (index --partitions P) served from one Ray actor "
                   "per partition instead of loaded whole into each replica (read-only: no "
                   "POST /items)")


def serve(args: argparse.Namespace) -> int:
    """Serve RUN_DIR's related items and recommendations over HTTP (Ray Serve) until Ctrl-C."""
    from pinsage_ray.console import where_logs_are
    from pinsage_ray.serve import import_app

    try:  # Ray Serve is the `serve` extra
        app = import_app()
    except ImportError as err:
        print(f"pinsage-ray serve: error: {err}", file=sys.stderr)
        return 2
    serve_summary, start, wait_until_stopped = app.serve_summary, app.start, app.wait_until_stopped
    url = start(args.run_dir, host=args.host, port=args.port, num_replicas=args.num_replicas,
                ef=args.ef, address=args.address, haproxy=not args.no_haproxy,
                throughput_optimized=not args.no_throughput_optimized,
                access_log=args.access_log, api=args.api, watch_updates=args.watch_updates,
                partition_actors=args.partition_actors)
    print(serve_summary(url, args.run_dir, args.num_replicas, where_logs_are(args.log_handler)),
          flush=True)
    wait_until_stopped()
    print("stopped", flush=True)
    return 0


# --------------------------------------------------------------------------- evaluate
def evaluate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", nargs="?", help="a trained run: protocol P3 on its held-out pairs")
    p.add_argument("--protocol", choices=["p1", "p2"], help="run protocol P1 (MovieLens-100K) "
                   "or P2 (Gowalla) end to end instead; needs --data-dir and --workdir")
    p.add_argument("--data-dir", help="dataset folder (ml-100k/ for p1, gowalla/ for p2)")
    p.add_argument("--workdir", help="where the protocol's graph and runs go")
    add_preset_args(p)
    p.add_argument("--config", help="TrainConfig fields for the protocol runs as a JSON file "
                   "or inline JSON, e.g. '{\"num_epochs\": 6}' (over the preset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--baselines", nargs="*", default=None,
                   help="baselines to compare, any of: popularity itemknn rp3beta ppr svd "
                   "(truncated-SVD item embedding, cosine) ease (EASE, dense: at most 50k "
                   "items); default with the flag alone: popularity itemknn rp3beta")
    p.add_argument("-k", type=int, nargs="+", default=[10, 500], help="P3 hit-rate cut-offs")
    p.add_argument("--json", help="also write the report as JSON to this file")


def evaluate(args: argparse.Namespace) -> int:
    """P3 on a run's held-out pairs, or protocol P1/P2 end to end, with baselines."""
    from pinsage_ray.evaluation.harness import BASELINES
    from pinsage_ray.evaluation.protocols import format_markdown_table

    if any(k < 1 for k in args.k):
        raise ValueError(f"-k {' '.join(map(str, args.k))}: cut-offs must be integers >= 1")
    if args.json and (os.path.isdir(args.json)
                      or not os.path.isdir(os.path.dirname(os.path.abspath(args.json)))):
        raise ValueError(f"--json {args.json!r}: not a file path in an existing folder")
    names = (["popularity", "itemknn", "rp3beta"] if args.baselines == []
             else list(args.baselines or []))
    unknown = [n for n in names if n not in BASELINES]
    if unknown:  # fail now, not after the protocol's training runs
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(BASELINES)}")
    if args.protocol:
        from pinsage_ray.evaluation.harness import p1_data, p2_data, run_protocol

        if not (args.data_dir and args.workdir):
            raise ValueError("--protocol needs --data-dir (the dataset folder) and --workdir")
        cfg = train_config_from_args(args)
        data = (p1_data if args.protocol == "p1" else p2_data)(args.data_dir, args.workdir)
        report = run_protocol(data, cfg, args.workdir, seeds=tuple(args.seeds),
                              baselines=tuple(names))
        rows = report["rows"]
    else:
        from pinsage_ray.evaluation.runs import evaluate_run

        if not args.run_dir:
            raise ValueError("give RUN_DIR (protocol P3) or --protocol p1|p2")
        rows = evaluate_run(args.run_dir, ks=tuple(args.k), baselines=tuple(names))
        report = {"protocol": "p3", "rows": rows}
    print(format_markdown_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2, default=float)
    if args.run_dir and not args.protocol:
        hint("serve", args.run_dir, note="related items over HTTP")
    return 0


# --------------------------------------------------------------------------- quickstart
def quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="pinsage-quickstart",
                   help="folder for the graph and run (default: ./pinsage-quickstart)")
    p.add_argument("--items", type=int, default=5_000)
    p.add_argument("--groups", type=int, default=4_000)
    p.add_argument("--num-shards", type=int, default=2)
    p.add_argument("--epochs", type=int, default=None,
                   help="training passes (default: the 'items' preset's 5)")
    p.add_argument("--seed", type=int, default=0)


def quickstart(args: argparse.Namespace) -> int:
    """Run the pipeline on a built-in synthetic graph (no download)."""
    from pinsage_ray.console import where_logs_are
    from pinsage_ray.quickstart import run_quickstart

    report = run_quickstart(args.workdir, num_items=args.items, num_groups=args.groups,
                            num_shards=args.num_shards, num_epochs=args.epochs,
                            seed=args.seed, show_progress=True)
    print(format_quickstart(report))
    print(f"logs: {where_logs_are(args.log_handler)}")
    return 0


def format_quickstart(report: dict) -> str:
    """A short human-readable summary of :func:`run_quickstart`'s report."""
    g, ev, ix = report["graph"], report["evaluation"], report["index"]
    lines = [f"graph: {g['items']} items, {g['groups']} groups, {g['edges']} edges "
             f"(in {report['workdir']})", "training:"]
    for m in report["training"]:
        lines.append(f"  epoch {m['epoch']}: loss {m['loss']:.4f}, hard negatives "
                     f"{m['hard_negatives']}, {m['examples_per_s']:.0f} examples/s, "
                     f"val hit@10 {m.get('val_hit_at_10', float('nan')):.4f}")
    lines.append(f"index: {ix['items']} items, ef={ix['ef']}, recall@10 {ix['recall_at_10']}")
    base = ev.get("baselines_same_community", {})
    shown = {"features": "features alone", "popularity": "popularity", "itemknn": "ItemKNN"}
    lines.append("related items in the query's planted community (top 10 of 200 query "
                 f"items): PinSage {ev['related_items_same_community']:.1%}, "
                 + "".join(f"{shown.get(name, name)} {v:.1%}, " for name, v in base.items())
                 + f"chance {ev['chance']:.1%}")
    for ex in report["examples"]:
        sims = ", ".join(f"{j} (c{c}, {s:.3f})" for j, c, s in ex["similar"])
        lines.append(f"  item {ex['item']} (community {ex['community']}) -> {sims}")
    lines.append(f"done in {report['seconds']}s; try: pinsage-ray recommend "
                 f"{report['workdir']}/run --item {report['examples'][0]['item']}")
    return "\n".join(lines)
