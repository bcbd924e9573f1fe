"""The planted fine/coarse and cold-start section of ``bench_quality.py`` (issue 11).

Runs :func:`pinsage_ray.evaluation.oracle.planted_recovery` and
:func:`pinsage_ray.evaluation.oracle.cold_start` per seed with the given TrainConfig dict and
returns ``(metrics, extra, markdown section)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from _common import markdown_table, metric

#: How bench_quality's same-recipe variants are named in tables.
VARIANT_WORDS = {"no_graph": "no graph (K = 0: id and feature input alone)",
                 "paper_layer": "the paper's layer (CONVOLVE, same recipe)",
                 "propagate": "linear propagation (same recipe)"}

#: Planted metrics reported as mean (PinSage also with its std over seeds).
_PLANTED = [("planted_fine_p10", "fine p@10"), ("planted_coarse_p10", "coarse p@10")]


def planted_section(cfg_dict: dict[str, Any], workdir: Path, seeds: list[int],
                    variants: dict[str, dict[str, Any]] | None = None,
                    ) -> tuple[list[dict], dict[str, Any], str]:
    """``variants``: name -> TrainConfig changes (e.g. ``{"no_graph": {"num_layers": 0}}``),
    each trained on the same seeds; their fine/coarse precision is reported beside PinSage's
    as ``planted_fine_p10_pinsage_NAME``."""
    from pinsage_ray.evaluation.oracle import cold_start, planted_recovery
    from pinsage_ray.training import TrainConfig

    cfg = TrainConfig.from_dict(cfg_dict)
    runs = [{"seed": s, **planted_recovery(cfg, workdir, seed=s),
             **cold_start(cfg, workdir, seed=s)} for s in seeds]
    for name, change in (variants or {}).items():
        vcfg = TrainConfig.from_dict({**cfg_dict, **change})
        for run in runs:
            got = planted_recovery(vcfg, workdir / name, seed=run["seed"])
            run.update({f"{k}_{name}": v for k, v in got.items() if k.endswith("_pinsage")})

    def mean(key: str) -> float:
        return float(np.mean([r[key] for r in runs]))

    def std(key: str) -> float:
        return float(np.std([r[key] for r in runs]))

    metrics = []
    for key, _ in _PLANTED:
        short = key.removeprefix("planted_")
        for model in ("pinsage", "svd", "features"):
            metrics.append(metric(f"{key}_{model}", mean(f"{short}_{model}"), "ratio"))
        metrics.append(metric(f"{key}_pinsage_std", std(f"{short}_pinsage"), "ratio", False))
        for name in variants or {}:
            metrics.append(metric(f"{key}_pinsage_{name}", mean(f"{short}_pinsage_{name}"),
                                  "ratio"))
    for model in ("pinsage", "features", "random"):
        metrics.append(metric(f"coldstart_hit10_{model}", mean(f"coldstart_hit10_{model}"),
                              "ratio"))
    metrics.append(metric("coldstart_hit10_pinsage_std", std("coldstart_hit10_pinsage"),
                          "ratio", False))

    def cell(key: str, model: str) -> str:
        k = f"{key}_{model}"
        return f"{mean(k):.3f} ± {std(k):.3f}"

    table = markdown_table(
        ["embedding", "fine p@10", "coarse p@10", "cold-start hit@10"],
        [["**PinSage**", cell("fine_p10", "pinsage"), cell("coarse_p10", "pinsage"),
          cell("coldstart_hit10", "pinsage")],
         *[[f"PinSage, {VARIANT_WORDS.get(name, name)}", cell("fine_p10", f"pinsage_{name}"),
            cell("coarse_p10", f"pinsage_{name}"), ""] for name in variants or {}],
         ["64-d truncated SVD", cell("fine_p10", "svd"), cell("coarse_p10", "svd"), "n/a"],
         ["features alone", cell("fine_p10", "features"), cell("coarse_p10", "features"),
          cell("coldstart_hit10", "features")],
         ["random vectors", "", "", cell("coldstart_hit10", "random")]])
    section = ("### Planted fine/coarse graph and cold start\n\n"
               f"`fine_coarse_config(seed)` (4,000 items, 10 coarse x 10 fine communities; "
               f"features reveal only the coarse category), seeds {seeds}, the same recipe as "
               f"P1. Cold start: 10 % of the items held out of training, embedded from their "
               f"features and all of their groups but one; targets are the items of the "
               f"held-out group ({int(mean('coldstart_pairs'))} pairs per seed).\n\n{table}")
    return metrics, {"runs": runs, "config": cfg_dict}, section
