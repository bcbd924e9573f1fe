"""The ``train`` command's flags and how they become a :class:`TrainConfig`.

Shared by ``pinsage-ray train`` and ``pinsage-ray evaluate`` (which trains too): a preset,
then a ``--config`` JSON file of TrainConfig fields over it, then any flag given over both.
Kept apart from :mod:`pinsage_ray.cli` so that module stays a list of thin commands.
"""

from __future__ import annotations

import argparse
import json

__all__ = ["add_preset_args", "add_train_args", "read_config_arg", "train_config_from_args"]


def add_train_args(p: argparse.ArgumentParser) -> None:
    # training.config, not pinsage_ray.training's other modules: building the parser (and
    # so every --help) must not import torch (tests/test_cli_habits.py)
    from pinsage_ray.training.config import (CONV_MODES, DEFAULT_PRESET, LOSSES,
                                             NEGATIVE_SAMPLING, PAIR_WEIGHTING, TrainConfig)

    p.add_argument("graph_dir")
    p.add_argument("run_dir", help="checkpoints, metrics.jsonl and model/ (rerun to resume)")
    add_preset_args(p)
    p.add_argument("--config", help="TrainConfig fields as a JSON file or inline JSON, e.g. "
                   "'{\"lr\": 0.01}' (over the preset; flags override both)")
    d = TrainConfig.preset(DEFAULT_PRESET)
    for name, typ in [("num_epochs", int), ("batch_size", int), ("batches_per_epoch", int),
                      ("lr", float), ("margin", float), ("temperature", float),
                      ("negative_weight", float),
                      ("hidden_dim", int),
                      ("embedding_dim", int), ("num_layers", int), ("num_workers", int),
                      ("num_shards", int), ("num_producers", int), ("prefetch", int),
                      ("num_shared_negatives", int), ("max_hard_negatives", int),
                      ("max_failures", int), ("sequence_window", int), ("seed", int),
                      ("group_queries", float), ("group_query_size", int),
                      ("id_dropout", float), ("id_weight", float),
                      ("whole_graph_max_items", int), ("neighbor_table_max_items", int)]:
        dv = getattr(d, name)
        dv = "auto (0.5 with ordered pairs, else 1)" if dv is None else dv
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                       help=f"default {dv} in the '{DEFAULT_PRESET}' preset")
    p.add_argument("--top-t", type=int, default=None, help=f"default {d.neighbors.top_t}")
    p.add_argument("--pooling", choices=["importance", "mean"], default=None)
    p.add_argument("--conv", choices=list(CONV_MODES), default=None,
                   help=f"default {d.conv} in the '{DEFAULT_PRESET}' preset: 'propagate' = "
                   "linear propagation over the importance neighbourhoods, layer outputs "
                   "averaged; 'paper' = CONVOLVE (dense layer + ReLU per hop)")
    p.add_argument("--positives", choices=["auto", "walks", "sequence"], default=None)
    p.add_argument("--negative-sampling", choices=NEGATIVE_SAMPLING, default=None,
                   help=f"shared negatives; default {d.negative_sampling}")
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help=f"default {d.loss} in the '{DEFAULT_PRESET}' preset (the paper's: "
                   "max_margin); softmax uses --temperature, contrastive (SimpleX) --margin "
                   "and --negative-weight")
    p.add_argument("--pair-weighting", choices=PAIR_WEIGHTING, default=None,
                   help=f"default {d.pair_weighting}")
    for name, why in [("symmetric_pairs", "also train each positive pair reversed"),
                      ("use_id_embedding", "learnable id vectors (default: only without "
                                           "features)"),
                      ("id_skip", "add id vectors to the output (default: whenever ids are "
                                  "learned)"),
                      ("balanced_skip", "normalise the id term and the convolution output "
                                        "apart before adding them (on in 'items')")]:
        p.add_argument("--" + name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                       default=None, help=why)
    p.add_argument("--use-gpu", action="store_true", default=None)
    p.add_argument("--address", help="Ray address (default: a new local instance)")


def add_preset_args(p: argparse.ArgumentParser) -> None:
    from pinsage_ray.training.config import DEFAULT_PRESET, PRESETS

    p.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help="training recipe (docs/quality.md): 'items' related items (also "
                   "serves groups), 'groups' user/board/session recommendations, 'paper' the "
                   f"paper's exact settings; default {DEFAULT_PRESET}")


def train_config_from_args(args: argparse.Namespace):
    """TrainConfig: the ``--preset``, then ``--config`` JSON, then any flags given."""
    from pinsage_ray.training.config import TrainConfig

    data = read_config_arg(args.config) if args.config else {}
    skip = {"graph_dir", "run_dir", "config", "address", "func", "command", "verbose", "top_t",
            "preset", "protocol", "data_dir", "workdir", "seeds", "baselines", "k", "json",
            "log_handler"}
    data.update({k: v for k, v in vars(args).items() if k not in skip and v is not None})
    if getattr(args, "top_t", None) is not None:
        data.setdefault("neighbors", {})["top_t"] = args.top_t
    return TrainConfig.preset(args.preset, **data)


def read_config_arg(value: str) -> dict:
    """``--config``'s TrainConfig fields: inline JSON (``'{"lr": 0.01}'``) or a JSON file.

    A value that starts with ``{`` is read as inline JSON; anything else as a file path.
    """
    text, where = value, "inline JSON"
    if not value.lstrip().startswith("{"):
        try:
            with open(value, encoding="utf-8") as f:
                text, where = f.read(), "file"
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"--config {value!r}: neither inline JSON (an object starting "
                             f"with '{{') nor a readable JSON file ({type(err).__name__}: "
                             f"{err}); e.g. --config '{{\"lr\": 0.01}}' or --config "
                             "config.json") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"--config {value!r}: the {where} is not valid JSON ({err}); e.g. "
                         "--config '{\"lr\": 0.01}'") from None
    if not isinstance(data, dict):
        raise ValueError(f"--config {value!r}: holds a JSON {type(data).__name__}; expected an "
                         "object of TrainConfig fields, e.g. {\"lr\": 0.01}")
    return data
