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
import sys
import time
from collections.abc import Callable, Sequence

from pinsage_ray.cli_train import add_train_args, train_config_from_args
from pinsage_ray import cli_run, cli_update
from pinsage_ray.console import hint

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
    p.add_argument("--engine", choices=["auto", "local", "ray"], default="auto",
                   help="local: one process; ray: Ray Data over the input files (same graph); "
                   "auto: ray for input files of 2 GiB or more (default: auto)")
    for role, what in COLUMN_ROLES.items():
        p.add_argument(f"--{role}-col", metavar="NAME", dest=f"{role}_col",
                       help=f"the input's column of {what} (default: {role})")


#: prepare's column roles (pinsage_ray.data.types.INTERACTION_COLUMNS; spelled out here so
#: that building the parser imports no pyarrow) -> what --ROLE-col names
COLUMN_ROLES = {"item": "item ids (also used in --features)", "group": "group ids",
                "weight": "edge weights", "timestamp": "timestamps"}


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
                    overwrite=args.overwrite, columns=columns or None, engine=args.engine)
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
    p.add_argument("--partitions", type=int, default=1,
                   help="P > 1: one index per 1/P of the items, built in parallel as Ray tasks "
                   "that each read only their rows; queries fan out and merge exactly "
                   "(for embeddings that should not meet in one process)")


@command("index", _index_args)
def _index(args: argparse.Namespace) -> int:
    """Build the HNSW index over RUN_DIR/embeddings (writes RUN_DIR/index)."""
    from pinsage_ray.console import index_summary
    from pinsage_ray.index import HNSWConfig
    from pinsage_ray.inference.model_io import run_path
    from pinsage_ray.recommender import build_index

    cfg = HNSWConfig(space=args.space, M=args.M, ef_construction=args.ef_construction,
                     ef=args.ef, target_recall=args.target_recall, search=args.search)
    index = build_index(args.run_dir, cfg, partitions=args.partitions, show_progress=True)
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


# ------------------------------------------------------------ serve / evaluate / quickstart
# (in pinsage_ray.cli_run and cli_update; registered here, in the order --help lists them)
for _module, _name in ((cli_run, "serve"), (cli_run, "evaluate"), (cli_run, "quickstart"),
                       (cli_update, "update")):
    command(_name, getattr(_module, f"{_name}_args"))(getattr(_module, _name))


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
