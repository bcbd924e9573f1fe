"""``pinsage-ray update``: a day of new interactions into a trained run, as a new version.

A thin shell over :func:`pinsage_ray.update.update_run` (registered by :mod:`pinsage_ray.cli`):
parse the flags, call it, print its report as JSON on stdout and the next command on stderr.
Bad input is refused before anything is written (exit status 2, one line naming the file,
row and column, as ``prepare``).
"""

from __future__ import annotations

import argparse
import json
import os

from pinsage_ray.console import hint

COLUMN_ROLES = ("item", "group", "weight", "timestamp")


def update_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run where train, embed and index have run")
    p.add_argument("new_interactions", help="Parquet/CSV file or folder with columns item, "
                   "group [, weight, timestamp]; items and groups may be existing or new")
    p.add_argument("--features", help="Parquet/CSV with item + feature columns for the new "
                   "items (every new item needs a row, as in prepare)")
    p.add_argument("--remove-items", metavar="FILE_OR_IDS",
                   help="items to remove: a Parquet/CSV file with an 'item' column, or ids "
                   "separated by commas")
    p.add_argument("--num-shards", type=int, default=0,
                   help="walk shards (Ray actors) for the affected items' walks; 0 (default): "
                   "in process, the same neighbourhoods")
    p.add_argument("--mode", choices=("auto", "local", "ray"), default="auto",
                   help="where the layers are recomputed: 'local' (one process), 'ray' (Ray "
                   "Data passes over layer parts) or 'auto' (default: local up to 200,000 "
                   "items, as embed); the same embeddings")
    p.add_argument("--num-actors", type=int, default=1,
                   help="actors per Ray Data pass with --mode ray (default 1)")
    p.add_argument("--keep-versions", type=int, default=2,
                   help="versions kept after this one commits, itself included (older "
                   "updates/vNNNN are deleted; the run itself always stays); default 2")
    for role in COLUMN_ROLES:
        p.add_argument(f"--{role}-col", metavar="NAME", dest=f"{role}_col",
                       help=f"the input's column of {role} (default: {role})")


def _remove_arg(value: str | None) -> object:
    if value is None:
        return None
    if os.path.exists(value):
        return value
    ids = [v.strip() for v in value.split(",") if v.strip()]
    if not ids:
        raise ValueError(f"--remove-items {value!r}: neither a file nor a list of ids; give a "
                         "Parquet/CSV file with an 'item' column or ids like 12,57")
    return ids


def update(args: argparse.Namespace) -> int:
    """Apply new interactions (+ features, removals) to RUN_DIR as a new current version."""
    from pinsage_ray.update import update_run

    columns = {role: getattr(args, f"{role}_col") for role in COLUMN_ROLES
               if getattr(args, f"{role}_col", None)}
    result = update_run(args.run_dir, args.new_interactions, item_features=args.features,
                        remove_items=_remove_arg(args.remove_items), columns=columns or None,
                        num_shards=args.num_shards, mode=args.mode,
                        num_actors=args.num_actors, keep_versions=args.keep_versions)
    print(json.dumps(result.as_dict(), indent=2, default=str))
    hint("recommend", args.run_dir, "--item", "ITEM", note="answers now come from " + result.version)
    return 0
