"""``pinsage-ray`` command line: a thin shell over the library.

Each sub-command parses flags, calls one library function and prints its result; no logic
lives here that a Python user could not reach. ``pinsage-ray --help`` lists the commands.

Building the parser imports neither torch nor Ray (each command imports what it runs), so
``--help`` and ``--version`` answer at once. Commands whose standard output is JSON (for
scripts) print the hint of the command to run next on standard error.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from pinsage_ray.cli_train import add_preset_args, add_train_args, train_config_from_args
from pinsage_ray.console import next_command

logger = logging.getLogger(__name__)

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable]] = {}


def command(name: str, add_args: Callable[[argparse.ArgumentParser], None]):
    def register(fn: Callable) -> Callable:
        COMMANDS[name] = (add_args, fn)
        return fn
    return register


# --------------------------------------------------------------------------- prepare
def _prepare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="Parquet/CSV file or folder with columns item, group "
                   "[, weight, timestamp] (other names: --item-col etc.); or a dataset folder "
                   "with --format")
    p.add_argument("graph_dir", help="output graph directory (local path or s3://...)")
    p.add_argument("--format", choices=["table", "movielens", "lightgcn", "synthetic"],
                   default="table", help="input format (default: table)")
    p.add_argument("--features", help="Parquet with item + a list column or numeric columns")
    p.add_argument("--overwrite", action="store_true", help="replace an existing graph_dir")
    for role, what in COLUMN_ROLES.items():
        p.add_argument(f"--{role}-col", metavar="NAME", dest=f"{role}_col",
                       help=f"the input's column of {what} (default: {role})")


#: prepare's column roles (pinsage_ray.data.types.INTERACTION_COLUMNS; spelled out here so
#: that building the parser imports no pyarrow) -> what --ROLE-col names
COLUMN_ROLES = {"item": "item ids (also used in --features)", "group": "group ids",
                "weight": "edge weights", "timestamp": "timestamps"}


def hint(*argv: object, note: str = "") -> None:
    """Print the next command to run on stderr (stdout holds the command's JSON)."""
    print(next_command(*argv, note=note), file=sys.stderr, flush=True)


@command("prepare", _prepare_args)
def _prepare(args: argparse.Namespace) -> int:
    """Build a graph directory from interactions (+ item features)."""
    from pinsage_ray.data import read_lightgcn, read_movielens_100k, read_synthetic
    from pinsage_ray.graph import prepare

    readers = {"movielens": read_movielens_100k, "synthetic": read_synthetic,
               "lightgcn": lambda p: read_lightgcn(p)[0]}
    source = args.input if args.format == "table" else readers[args.format](args.input)
    columns = {role: getattr(args, f"{role}_col") for role in COLUMN_ROLES
               if getattr(args, f"{role}_col")}
    store = prepare(source, args.graph_dir, item_features=args.features,
                    overwrite=args.overwrite, columns=columns or None)
    print(json.dumps(_summary(store), indent=2))
    hint("train", args.graph_dir, "RUN_DIR", note="RUN_DIR: a new folder for the model")
    return 0


def _summary(store) -> dict:
    m = store.manifest
    return {"graph_dir": store.uri, "items": m["num_items"], "groups": m["num_groups"],
            "edges": m["num_edges"], "feature_only_items": m.get("feature_only_items", 0),
            "feature_dim": m["feature_dim"],
            "timestamps": m["has_timestamps"], "weighted": m["weighted"],
            "item_degree": m["stats"]["item_degree"], "report": m["report"]}


# --------------------------------------------------------------------------- synthetic
def _synthetic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="folder for interactions/features/labels Parquet files")
    p.add_argument("--preset", choices=["default", "fine-coarse"], default="default",
                   help="starting parameters; the flags below override them. fine-coarse: "
                   "features show 10 coarse categories, only the graph shows their 10 fine "
                   "communities each (pinsage_ray.data.synthetic.fine_coarse_config)")
    p.add_argument("--items", type=int, help="default 10000")
    p.add_argument("--groups", type=int, help="default 5000")
    p.add_argument("--communities", type=int,
                   help="communities, or coarse categories with --fine-per-coarse (default 20)")
    p.add_argument("--fine-per-coarse", type=int,
                   help="split each community into this many fine ones that only the graph "
                   "shows; features follow the coarse one (default 0 = one level)")
    p.add_argument("--group-size", type=float, help="mean items per group (default 10)")
    p.add_argument("--p-in", type=float,
                   help="fraction of a group's draws from its home community (default 0.8)")
    p.add_argument("--feature-dim", type=int, help="default 32")
    p.add_argument("--feature-noise", type=float, help="default 1.0")
    p.add_argument("--timestamps", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


@command("synthetic", _synthetic_args)
def _synthetic(args: argparse.Namespace) -> int:
    """Write a planted-community synthetic dataset (Parquet)."""
    import dataclasses

    from pinsage_ray.data import SyntheticConfig, write_synthetic
    from pinsage_ray.data.synthetic import fine_coarse_config

    base = (fine_coarse_config(seed=args.seed) if args.preset == "fine-coarse"
            else SyntheticConfig(seed=args.seed))
    flags = {"num_items": args.items, "num_groups": args.groups,
             "num_communities": args.communities, "num_fine_per_coarse": args.fine_per_coarse,
             "mean_group_size": args.group_size, "p_in": args.p_in,
             "feature_dim": args.feature_dim, "feature_noise": args.feature_noise}
    cfg = dataclasses.replace(base, timestamps=args.timestamps,
                              **{k: v for k, v in flags.items() if v is not None})
    print(json.dumps(write_synthetic(cfg, args.out_dir, show_progress=True,
                                     overwrite=args.overwrite), indent=2, default=str))
    hint("prepare", "--format", "synthetic", args.out_dir, "GRAPH_DIR")
    return 0


# --------------------------------------------------------------------------- inspect
def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph_dir")
    p.add_argument("--verify", action="store_true",
                   help="recompute every file's sha256 (done anyway for graphs up to 64 MiB)")


@command("inspect", _inspect_args)
def _inspect(args: argparse.Namespace) -> int:
    """Print a graph directory's counts, stats and report."""
    from pinsage_ray.graph import GraphStore

    print(json.dumps(_summary(GraphStore(args.graph_dir, verify=args.verify or None)),
                     indent=2))
    hint("train", args.graph_dir, "RUN_DIR", note="RUN_DIR: a new folder for the model")
    return 0


# --------------------------------------------------------------------------- neighbors
def _neighbors_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph_dir")
    p.add_argument("--item", action="append", required=True,
                   help="original item id (repeatable); ints are tried as ints first")
    p.add_argument("--num-shards", type=int, default=0,
                   help="0 = in-process walker; >0 = that many Ray shard actors")
    p.add_argument("--num-walks", type=int, default=100)
    p.add_argument("--walk-length", type=int, default=2)
    p.add_argument("--restart-prob", type=float, default=0.5)
    p.add_argument("--top-t", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--address", help="Ray address (default: a new local instance)")


def parse_item_ids(values: Sequence[str], store) -> list:
    """Original ids from CLI strings, typed like the graph's item ids."""
    typ = str(store.item_ids.type)
    return [int(v) for v in values] if typ.startswith(("int", "uint")) else list(values)


@command("neighbors", _neighbors_args)
def _neighbors(args: argparse.Namespace) -> int:
    """Importance-based neighbourhoods of items from random walks."""
    from pinsage_ray.graph import GraphStore
    from pinsage_ray.sampling import open_walker

    store = GraphStore(args.graph_dir)
    items = store.item_index(parse_item_ids(args.item, store), argument="--item")
    with open_walker(args.graph_dir, num_shards=args.num_shards, address=args.address) as w:
        nb = w.importance_neighbors(items, num_walks=args.num_walks,
                                    walk_length=args.walk_length,
                                    restart_prob=args.restart_prob, top_t=args.top_t,
                                    seed=args.seed)
    ids = store.item_ids
    for q, row, weights in zip(args.item, nb.ids, nb.weights):
        found = [(ids[int(i)].as_py(), round(float(wt), 4)) for i, wt in zip(row, weights)
                 if i >= 0]
        print(json.dumps({"item": q, "neighbors": found}))
    hint("train", args.graph_dir, "RUN_DIR", note="RUN_DIR: a new folder for the model")
    return 0


# --------------------------------------------------------------------------- train
@command("train", add_train_args)
def _train(args: argparse.Namespace) -> int:
    """Train PinSage with Ray Train (checkpoints each epoch; rerun to resume)."""
    from pinsage_ray.console import train_summary
    from pinsage_ray.training import train

    t0 = time.perf_counter()
    result = train(args.graph_dir, args.run_dir, train_config_from_args(args),
                   address=args.address, show_progress=True)
    print(train_summary(result, time.perf_counter() - t0, args.log_handler))
    return 0


# --------------------------------------------------------------------------- embed / index
def _embed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--graph-dir", help="override the training graph's location")
    p.add_argument("--mode", choices=["auto", "ray", "local"], default="auto",
                   help="ray: Ray Data layer passes; local: one process (default: auto)")
    p.add_argument("--num-shards", type=int, default=0, help="walk shards (0 = in process)")
    p.add_argument("--batch-size", type=int, default=8192)
    p.add_argument("--num-actors", type=int, default=1)
    p.add_argument("--address", help="Ray address (default: a new local instance)")


@command("embed", _embed_args)
def _embed(args: argparse.Namespace) -> int:
    """Embed every item layer by layer (writes RUN_DIR/embeddings)."""
    from pinsage_ray.console import embed_summary
    from pinsage_ray.inference.pipeline import embed

    if args.address or args.mode == "ray" or args.num_shards:
        from pinsage_ray.ray_utils import init_ray

        init_ray(args.address)
    res = embed(args.run_dir, graph_dir=args.graph_dir, mode=args.mode,
                num_shards=args.num_shards, batch_size=args.batch_size,
                num_actors=args.num_actors, show_progress=True)
    print(embed_summary(res, args.run_dir, args.log_handler))
    return 0


def _index_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--space", choices=["cosine", "ip", "l2"], default="cosine")
    p.add_argument("--M", type=int, default=16)
    p.add_argument("--ef-construction", type=int, default=200)
    p.add_argument("--ef", type=int, default=None, help="default: smallest with recall >= target")
    p.add_argument("--target-recall", type=float, default=0.95)
    p.add_argument("--search", choices=["auto", "hnsw", "exact"], default="auto",
                   help="auto (default): exact search where it is faster than HNSW or HNSW "
                   "cannot reach the target recall")


@command("index", _index_args)
def _index(args: argparse.Namespace) -> int:
    """Build the HNSW index over RUN_DIR/embeddings (writes RUN_DIR/index)."""
    from pinsage_ray.console import index_summary
    from pinsage_ray.index import HNSWConfig
    from pinsage_ray.inference.model_io import run_path
    from pinsage_ray.recommender import build_index

    cfg = HNSWConfig(space=args.space, M=args.M, ef_construction=args.ef_construction,
                     ef=args.ef, target_recall=args.target_recall, search=args.search)
    index = build_index(args.run_dir, cfg, show_progress=True)
    print(index_summary(index, run_path(args.run_dir, "index"), args.run_dir, args.log_handler))
    return 0


def _recommend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir")
    p.add_argument("--item", action="append", help="related items for this original id "
                   "(repeatable)")
    p.add_argument("--group-items", help="comma-separated item ids of one group: recommend "
                   "for the group")
    p.add_argument("-k", type=int, default=10)


@command("recommend", _recommend_args)
def _recommend(args: argparse.Namespace) -> int:
    """Related items for --item ids, or recommendations for --group-items."""
    import numpy as np

    from pinsage_ray.recommender import Recommender

    if not args.item and not args.group_items:
        raise ValueError("give --item ID (repeatable) or --group-items ID,ID,...")
    rec = Recommender.load(args.run_dir)
    typ = rec.ids.dtype

    def cast(v: str) -> object:
        if not np.issubdtype(typ, np.integer):
            return v
        try:
            return int(v)
        except ValueError:
            raise ValueError(f"item id {v!r}: this run's item ids are integers") from None

    for item in args.item or []:
        print(json.dumps({"item": cast(item), "similar": rec.similar_items(cast(item), args.k)}))
    if args.group_items:
        items = [cast(v) for v in args.group_items.split(",") if v]
        print(json.dumps({"group_items": items,
                          "recommended": rec.recommend_for_group(items, args.k)}))
    hint("serve", args.run_dir, note="the same answers over HTTP")
    return 0


# --------------------------------------------------------------------------- serve
def _serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run with embeddings and an index (embed, index)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--num-replicas", type=int, default=1,
                   help="replicas, each holding the index (default 1)")
    p.add_argument("--ef", type=int, default=None, help="HNSW search ef (default: the index's)")
    p.add_argument("--address", help="Ray address (default: a new local instance)")


@command("serve", _serve_args)
def _serve(args: argparse.Namespace) -> int:
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
                ef=args.ef, address=args.address)
    print(serve_summary(url, args.run_dir, args.num_replicas, where_logs_are(args.log_handler)),
          flush=True)
    wait_until_stopped()
    print("stopped", flush=True)
    return 0


# --------------------------------------------------------------------------- evaluate
def _evaluate_args(p: argparse.ArgumentParser) -> None:
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


@command("evaluate", _evaluate_args)
def _evaluate(args: argparse.Namespace) -> int:
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
def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="pinsage-quickstart",
                   help="folder for the graph and run (default: ./pinsage-quickstart)")
    p.add_argument("--items", type=int, default=5_000)
    p.add_argument("--groups", type=int, default=4_000)
    p.add_argument("--num-shards", type=int, default=2)
    p.add_argument("--epochs", type=int, default=None,
                   help="training passes (default: the 'items' preset's 5)")
    p.add_argument("--seed", type=int, default=0)


@command("quickstart", _quickstart_args)
def _quickstart(args: argparse.Namespace) -> int:
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


# --------------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line (the full usage is in --help)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def version() -> str:
    """The installed distribution's version (``pinsage_ray.__version__`` when not installed)."""
    from importlib import metadata

    try:
        return metadata.version("pinsage-ray")
    except metadata.PackageNotFoundError:
        import pinsage_ray

        return getattr(pinsage_ray, "__version__", "unknown")


class _Version(argparse.Action):
    """``--version``, looked up only when asked for (importlib.metadata costs ~50 ms)."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[override]
        print(f"{parser.prog} {version()}")  # on stdout, as argparse's own version action
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The ``pinsage-ray`` argument parser (imports no torch, Ray or pyarrow)."""
    parser = _Parser(
        prog="pinsage-ray",
        description="PinSage on Ray: item graphs, random-walk neighbourhoods, training, "
                    "inference and related-item retrieval.")
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show the installed version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="-v: also Ray's own output and INFO logs on the terminal (by "
                        "default they go to RUN_DIR/logs/COMMAND.log); -vv: debug")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().split("\n")[0] or None)
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from pinsage_ray.console import log_target, reset_logging, setup_logging

    args = build_parser().parse_args(argv)
    # the product's output on the terminal; logs (Ray's included) to RUN_DIR/logs/, see console
    run_dir = (args.run_dir if args.command in ("train", "embed", "index", "evaluate", "serve")
               else None)
    workdir = args.workdir if args.command in ("quickstart", "evaluate") else None
    target = log_target(args.command, run_dir=run_dir, workdir=None if run_dir else workdir)
    # argv None: a real command line process (not a test calling main), see console.py
    args.log_handler = setup_logging(args.verbose, target,
                                     argv=list(sys.argv[1:] if argv is None else argv),
                                     divert_native=argv is None)
    t0 = time.perf_counter()
    try:
        code = args.func(args)
        if args.log_handler is not None and code == 0:
            args.log_handler.keep()  # a successful command leaves its log in the run
        logger.info("%s finished in %.1fs", args.command, time.perf_counter() - t0)
        return code
    except (ValueError, KeyError, OSError) as err:  # bad input, or a missing/bad file
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        text = " ".join(str(msg).split())  # one line, whatever the message held
        print(f"pinsage-ray {args.command}: error: {text}", file=sys.stderr)
        return 2
    finally:
        if argv is not None:  # called in a process that goes on (tests): undo the set-up
            reset_logging()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
