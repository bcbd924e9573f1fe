"""``pinsage-ray`` command line: a thin shell over the library.

Each sub-command parses flags, calls one library function and prints its result; no logic
lives here that a Python user could not reach. ``pinsage-ray --help`` lists the commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence

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
                   "[, weight, timestamp]; or a dataset folder with --format")
    p.add_argument("graph_dir", help="output graph directory (local path or s3://...)")
    p.add_argument("--format", choices=["table", "movielens", "lightgcn", "synthetic"],
                   default="table", help="input format (default: table)")
    p.add_argument("--features", help="Parquet with item + a list column or numeric columns")
    p.add_argument("--overwrite", action="store_true", help="replace an existing graph_dir")


@command("prepare", _prepare_args)
def _prepare(args: argparse.Namespace) -> int:
    """Build a graph directory from interactions (+ item features)."""
    from pinsage_ray.data import read_lightgcn, read_movielens_100k, read_synthetic
    from pinsage_ray.graph import prepare

    readers = {"movielens": read_movielens_100k, "synthetic": read_synthetic,
               "lightgcn": lambda p: read_lightgcn(p)[0]}
    source = args.input if args.format == "table" else readers[args.format](args.input)
    store = prepare(source, args.graph_dir, item_features=args.features,
                    overwrite=args.overwrite)
    print(json.dumps(_summary(store), indent=2))
    return 0


def _summary(store) -> dict:
    m = store.manifest
    return {"graph_dir": store.uri, "items": m["num_items"], "groups": m["num_groups"],
            "edges": m["num_edges"], "feature_dim": m["feature_dim"],
            "timestamps": m["has_timestamps"], "weighted": m["weighted"],
            "item_degree": m["stats"]["item_degree"], "report": m["report"]}


# --------------------------------------------------------------------------- synthetic
def _synthetic_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="folder for interactions/features/labels Parquet files")
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--groups", type=int, default=5_000)
    p.add_argument("--communities", type=int, default=20)
    p.add_argument("--group-size", type=float, default=10.0, help="mean items per group")
    p.add_argument("--feature-dim", type=int, default=32)
    p.add_argument("--feature-noise", type=float, default=1.0)
    p.add_argument("--timestamps", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")


@command("synthetic", _synthetic_args)
def _synthetic(args: argparse.Namespace) -> int:
    """Write a planted-community synthetic dataset (Parquet)."""
    from pinsage_ray.data import SyntheticConfig, write_synthetic

    cfg = SyntheticConfig(num_items=args.items, num_groups=args.groups,
                          num_communities=args.communities, mean_group_size=args.group_size,
                          feature_dim=args.feature_dim, feature_noise=args.feature_noise,
                          timestamps=args.timestamps, seed=args.seed)
    print(json.dumps(write_synthetic(cfg, args.out_dir, show_progress=True,
                                     overwrite=args.overwrite), indent=2, default=str))
    return 0


# --------------------------------------------------------------------------- inspect
def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("graph_dir")
    p.add_argument("--verify", action="store_true", help="recompute every file's sha256")


@command("inspect", _inspect_args)
def _inspect(args: argparse.Namespace) -> int:
    """Print a graph directory's counts, stats and report."""
    from pinsage_ray.graph import GraphStore

    print(json.dumps(_summary(GraphStore(args.graph_dir, verify=args.verify)), indent=2))
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
    return 0


# --------------------------------------------------------------------------- train
def _train_args(p: argparse.ArgumentParser) -> None:
    from pinsage_ray.training import TrainConfig

    p.add_argument("graph_dir")
    p.add_argument("run_dir", help="checkpoints, metrics.jsonl and model/ (rerun to resume)")
    p.add_argument("--config", help="JSON file with TrainConfig fields (flags override it)")
    d = TrainConfig()
    for name, typ in [("num_epochs", int), ("batch_size", int), ("batches_per_epoch", int),
                      ("lr", float), ("margin", float), ("hidden_dim", int),
                      ("embedding_dim", int), ("num_layers", int), ("num_workers", int),
                      ("num_shards", int), ("num_producers", int), ("prefetch", int),
                      ("num_shared_negatives", int), ("max_hard_negatives", int),
                      ("max_failures", int), ("seed", int)]:
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                       help=f"default {getattr(d, name)}")
    p.add_argument("--top-t", type=int, default=None, help=f"default {d.neighbors.top_t}")
    p.add_argument("--pooling", choices=["importance", "mean"], default=None)
    p.add_argument("--positives", choices=["auto", "walks", "sequence"], default=None)
    p.add_argument("--use-gpu", action="store_true", default=None)
    p.add_argument("--address", help="Ray address (default: a new local instance)")


def train_config_from_args(args: argparse.Namespace):
    """TrainConfig from ``--config`` JSON plus any flags given."""
    from pinsage_ray.training import TrainConfig

    data = {}
    if args.config:
        with open(args.config) as f:
            data = json.load(f)
    skip = {"graph_dir", "run_dir", "config", "address", "func", "command", "verbose", "top_t"}
    data.update({k: v for k, v in vars(args).items() if k not in skip and v is not None})
    if args.top_t is not None:
        data.setdefault("neighbors", {})["top_t"] = args.top_t
    return TrainConfig.from_dict(data)


@command("train", _train_args)
def _train(args: argparse.Namespace) -> int:
    """Train PinSage with Ray Train (checkpoints each epoch; rerun to resume)."""
    from pinsage_ray.training import train

    result = train(args.graph_dir, train_config_from_args(args), args.run_dir,
                   address=args.address)
    print(json.dumps({"run_dir": result.run_dir, "model_dir": result.model_dir,
                      "best": result.best}, indent=2))
    return 0


# --------------------------------------------------------------------------- quickstart
def _quickstart_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workdir", default="pinsage-quickstart",
                   help="folder for the graph and run (default: ./pinsage-quickstart)")
    p.add_argument("--items", type=int, default=5_000)
    p.add_argument("--groups", type=int, default=4_000)
    p.add_argument("--num-shards", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)


@command("quickstart", _quickstart_args)
def _quickstart(args: argparse.Namespace) -> int:
    """Run the pipeline on a built-in synthetic graph (no download)."""
    from pinsage_ray.quickstart import run_quickstart

    report = run_quickstart(args.workdir, num_items=args.items, num_groups=args.groups,
                            num_shards=args.num_shards, seed=args.seed)
    print(json.dumps(report, indent=2, default=str))
    return 0


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinsage-ray",
        description="PinSage on Ray: item graphs, random-walk neighbourhoods, training, "
                    "inference and related-item retrieval.")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more logging (-v info, -vv debug)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_args, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().split("\n")[0] or None)
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    if args.command == "quickstart":
        level = min(level, logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.perf_counter()
    try:
        code = args.func(args)
    except (ValueError, KeyError, FileNotFoundError, FileExistsError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"pinsage-ray {args.command}: error: {msg}", file=sys.stderr)
        return 2
    logger.info("%s finished in %.1fs", args.command, time.perf_counter() - t0)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
