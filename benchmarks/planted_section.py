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

#: Planted metrics reported as mean (PinSage also with its std over seeds).
_PLANTED = [("planted_fine_p10", "fine p@10"), ("planted_coarse_p10", "coarse p@10")]


def planted_section(cfg_dict: dict[str, Any], workdir: Path, seeds: list[int]
                    ) -> tuple[list[dict], dict[str, Any], str]:
    from pinsage_ray.evaluation.oracle import cold_start, planted_recovery
    from pinsage_ray.training import TrainConfig

    cfg = TrainConfig.from_dict(cfg_dict)
    runs = [{"seed": s, **planted_recovery(cfg, workdir, seed=s),
             **cold_start(cfg, workdir, seed=s)} for s in seeds]

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
