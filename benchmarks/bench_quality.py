"""Recommendation quality: PinSage vs simple baselines under protocols P1 and P2.

* **P1** (MovieLens-100K, related items to the latest item, leave-last-out): HR@10, HR@50, MRR,
  NDCG@10 on validation and test for PinSage (mean and std over ``--seeds``) and the
  popularity, ItemKNN, RP3beta and PPR baselines.
* **P2** (Gowalla, LightGCN's train/test split, full ranking): Recall@20 and NDCG@20 for
  PinSage (a user = the mean of their training-item embeddings) and the popularity, ItemKNN
  and RP3beta baselines. ``--p2-validation F`` tunes instead: ``test.txt`` is not read, a
  fraction F of each user's ``train.txt`` is held out and scored.
* ``--ablation`` (P1): the paper's max-margin loss instead of the softmax, no id skip, distinct
  pairs, importance vs mean pooling, no hard negatives, no curriculum, T = 10 vs 50, each
  trained like the main run.

Every PinSage run directory gets ``diagnostics/`` (random-pair cosine histogram; see
:mod:`pinsage_ray.evaluation.diagnostics`). Writes ``results/quality.json`` and the
``quality`` section of RESULTS.md (``--quick``: a tiny run under ``.bench_cache/quick``).

    python benchmarks/bench_quality.py --protocols p1 --seeds 0 1 2 --ablation
    python benchmarks/bench_quality.py --protocols p2 --seeds 0 --p2-config '{"num_epochs": 4}'
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")

import numpy as np  # noqa: E402

from _common import (REPO, RESULTS_DIR, add_guard_args, guard_machine,  # noqa: E402
                     machine_info, markdown_table, metric, update_results_md, write_results)
from planted_section import VARIANT_WORDS  # noqa: E402

logger = logging.getLogger("bench_quality")

# The recipes are the library's presets (TrainConfig.preset; docs/quality.md says how they were
# chosen, on validation splits only): "items" for P1 (related items), "groups" for P2 (a
# user = a pooled set of items). ``margin`` is used only by the "max-margin loss" ablation row.
from pinsage_ray.training.config import PRESETS  # noqa: E402

P1_CONFIG: dict[str, Any] = dict(PRESETS["items"], margin=0.3)
P2_CONFIG: dict[str, Any] = dict(PRESETS["groups"], margin=0.3)
QUICK: dict[str, Any] = dict(num_epochs=2, batches_per_epoch=5, batch_size=64)

ABLATIONS: dict[str, dict[str, Any]] = {
    "full (items preset)": {},
    "no group-context examples (item pairs only)": {"group_queries": 0.0},
    "plain id skip (sum, not balanced; the previous preset)": {"balanced_skip": False},
    "balanced skip with id weight 1.0 (was 0.7)": {"id_weight": 1.0},
    "500 shared negatives (was 2,000)": {"num_shared_negatives": 500},
    "max-margin loss (the paper's), margin 0.3": {"loss": "max_margin"},
    "no id skip (the paper's architecture)": {"id_skip": False},
    "curriculum hard negatives (up to 3, PPR band 5-30 %)": {
        "max_hard_negatives": 3, "hard_band": (0.05, 0.3)},
}

#: ``--variants``: the same recipe with one change, trained on the same seeds, so the
#: convolution's share is measured in the same run (issue 18): no neighbours at all, and the
#: paper's CONVOLVE layer in place of the preset's.
VARIANTS: dict[str, dict[str, Any]] = {"no_graph": {"num_layers": 0},
                                       "paper_layer": {"conv": "paper"}}

P1_BASELINES = ("popularity", "itemknn", "rp3beta", "ppr", "svd", "ease")
# EASE on Gowalla is a dense 41k x 41k inverse (~20 GB peak): --p2-ease adds it
P2_BASELINES = ("popularity", "itemknn", "rp3beta", "svd")
# Reference numbers from the issue (not recomputed here): (val, test) HR@10 / (R@20, N@20).
P1_REFERENCE = {"DGL PinSAGE example": (0.098, 0.080)}
P2_REFERENCE = {"ALS": (0.1557, 0.1329), "LightGCN": (0.1830, 0.1554)}
TARGETS = {"p1": ("test_hit@10", 0.17), "p2": ("recall@20", 0.185)}


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) and isinstance(out.get(k), dict) \
            else v
    return out


def run_pinsage(data: Any, cfg_dict: dict[str, Any], workdir: Path, seeds: list[int]) -> dict:
    from pinsage_ray.evaluation.diagnostics import embedding_diagnostics
    from pinsage_ray.evaluation.harness import run_protocol
    from pinsage_ray.training import TrainConfig

    cfg = TrainConfig.from_dict(cfg_dict)
    for seed in seeds:  # a fresh run per invocation (train() would resume an old one)
        shutil.rmtree(workdir / f"run-seed{seed}", ignore_errors=True)
    t0 = time.perf_counter()
    rep = run_protocol(data, cfg, workdir, seeds=tuple(seeds), baselines=())
    rep["wall_seconds"] = time.perf_counter() - t0
    for run in rep["runs"]:
        diag = embedding_diagnostics(workdir / f"run-seed{run['seed']}",
                                     title=f"{data.name} seed {run['seed']}")
        run["diagnostics"] = {k: diag[k] for k in ("mean", "std", "kurtosis", "q05", "q95",
                                                   "plot")}
    return rep


def run_variants(data: Any, cfg: dict[str, Any], workdir: Path, seeds: list[int],
                 names: list[str]) -> dict[str, dict]:
    """The same recipe with each :data:`VARIANTS` change; ``{name: run_protocol report}``."""
    return {name: run_pinsage(data, _merge(cfg, VARIANTS[name]), workdir / name, seeds)
            for name in names}


def _variant_rows(variants: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Table rows of the variants; a one-seed variant gets no ``± std`` (it has none)."""
    out = {}
    for n, rep in variants.items():
        row, seeds = rep["rows"]["pinsage"], rep["seeds"]
        if len(seeds) == 1:
            row = {k: v for k, v in row.items() if not k.endswith("_std")}
        out[f"PinSage, {VARIANT_WORDS[n]}" + (f", seed {seeds[0]}" if len(seeds) == 1
                                               else "")] = row
    return out


def _full(cfg: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with every field TrainConfig fills in (the presets give only what differs)."""
    from pinsage_ray.training import TrainConfig

    return {**TrainConfig.from_dict(cfg).to_dict(), **cfg}


def _loss_words(cfg: dict[str, Any]) -> str:
    cfg = _full(cfg)
    if cfg["loss"] == "softmax":
        return f"sampled-softmax loss (temperature {cfg['temperature']})"
    return f"max-margin loss (margin {cfg['margin']})"


def _pm(row: dict[str, float], key: str) -> str:
    if f"{key}_std" in row:
        return f"{row[key]:.4f} ± {row[f'{key}_std']:.4f}"
    return f"{row[key]:.4f}"


def p1_tables(rows: dict[str, dict[str, float]]) -> str:
    keys = ["hit@10", "hit@50", "mrr", "ndcg@10"]
    head = ["model"] + [f"val {k}" for k in keys] + [f"test {k}" for k in keys]
    body = [[f"**{name}**" if name == "pinsage" else name]
            + [_pm(r, f"{s}_{k}") for s in ("val", "test") for k in keys]
            for name, r in rows.items()]
    body += [[f"{n} (issue, not rerun)", f"{v:.3f}", "", "", "", f"{t:.3f}", "", "", ""]
             for n, (v, t) in P1_REFERENCE.items()]
    return markdown_table(head, body)


def p2_tables(rows: dict[str, dict[str, float]], validation: bool = False) -> str:
    body = [[f"**{name}**" if name == "pinsage" else name, _pm(r, "recall@20"), _pm(r, "ndcg@20")]
            for name, r in rows.items()]
    if not validation:  # the reference numbers are on test.txt
        body += [[f"{n} (issue, not rerun)", f"{a:.4f}", f"{b:.4f}"]
                 for n, (a, b) in P2_REFERENCE.items()]
    return markdown_table(["model", "Recall@20", "NDCG@20"], body)


def _protocol_of(key: str) -> str:
    # 'p1', 'p1_ablation', 'p1_ml100k_...' -> 'p1'; the cold-start metrics are 'planted''s
    head = key.split("_")[0]
    return "planted" if head == "coldstart" else head


def _schedule_words(cfg: dict[str, Any]) -> str:
    cfg = _full(cfg)
    per = (f"{cfg['batches_per_epoch']} batches" if cfg["batches_per_epoch"]
           else "one pass over the training examples")
    groups = (f", {cfg.get('group_queries', 0):.0%} group-context examples"
              if cfg.get("group_queries") else "")
    return (f"{cfg['num_epochs']} epochs x {per} of {cfg['batch_size']}{groups}, "
            f"{cfg['num_shared_negatives']} shared negatives")


def carry_over(path: Path, ran: set[str], metrics: list[dict], extra: dict[str, Any]
               ) -> tuple[list[dict], dict[str, Any]]:
    """Keep the results of the protocols this invocation did not run from an earlier file.

    P1 and P2 take very different times, so they are often run separately; both belong in
    one ``quality.json``. Metrics, ``extra`` entries and markdown sections are grouped by
    their ``p1``/``p2`` prefix.
    """
    if not path.exists():
        return metrics, extra
    old = json.loads(path.read_text())
    keep = [m for m in old.get("metrics", []) if _protocol_of(m["name"]) not in ran]
    old_extra = old.get("extra", {})
    for key, value in old_extra.items():
        if key in ("p1", "p1_ablation", "p2", "p2val", "planted") and \
                _protocol_of(key) not in ran:
            extra[key] = value
    for key, value in old_extra.get("sections", {}).items():
        if _protocol_of(key) not in ran:
            extra["sections"][key] = value
    extra["sections"] = dict(sorted(extra["sections"].items()))
    return keep + metrics, extra


def _with_command(extra: dict[str, Any], key: str, section: str) -> str:
    cmd = extra.get(_protocol_of(key), {}).get("command")
    if cmd is None or key.endswith("ablation"):
        return section
    return f"{section}\n\nCommand: `python benchmarks/bench_quality.py {cmd}`."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocols", nargs="+", default=["p1", "p2", "planted"],
                    choices=["p1", "p2", "planted"])
    ap.add_argument("--p2-ease", action="store_true",
                    help="also fit EASE on Gowalla (dense 41k x 41k: ~20 GB, many minutes)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--config", default="{}", help="JSON TrainConfig overrides for P1 (and P2)")
    ap.add_argument("--p2-config", default="{}", help="JSON TrainConfig overrides for P2 only")
    ap.add_argument("--p2-validation", type=float, default=0.0,
                    help="tune on this fraction of train.txt instead of test.txt")
    ap.add_argument("--variants", nargs="*", default=[], choices=sorted(VARIANTS),
                    help="also train these same-recipe variants (no_graph: K = 0; paper_layer: "
                    "the paper's CONVOLVE) on the same seeds, for every protocol run")
    ap.add_argument("--variant-seeds", nargs="+", type=int, default=None,
                    help="seeds of the --variants runs (default: --seeds)")
    ap.add_argument("--ablation", action="store_true", help="P1 ablation table")
    ap.add_argument("--ablation-seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--no-baselines", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny training; output under cache")
    ap.add_argument("--data-dir", default=os.environ.get("PINSAGE_DATA_DIR",
                                                          str(REPO.parent / "shared" / "data")))
    ap.add_argument("--cache-dir", default=str(REPO / ".bench_cache"))
    ap.add_argument("--num-cpus", type=int, default=2)
    add_guard_args(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("ray", "pinsage_ray.sampling", "pinsage_ray.graph"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from pinsage_ray import init_ray
    from pinsage_ray.evaluation.harness import (evaluate_scorer, fit_baseline, p1_data,
                                                p2_data)

    machine = guard_machine(machine_info(), args, committed=not args.quick)
    init_ray(num_cpus=args.num_cpus)
    cache = Path(args.cache_dir) / ("quick" if args.quick else "quality")
    results_dir = cache if args.quick else RESULTS_DIR
    md_path = cache / "RESULTS.md" if args.quick else None
    over = json.loads(args.config)
    quick = QUICK if args.quick else {}
    metrics, extra, sections = [], {"args": vars(args)}, {}
    t_start = time.perf_counter()

    def baselines(data: Any, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
        out = {}
        for name in () if args.no_baselines else names:
            t = time.perf_counter()
            out[name] = evaluate_scorer(fit_baseline(name, data), data)
            logger.info("%s %s (%.0fs): %s", data.name, name, time.perf_counter() - t, out[name])
        return out

    if "p1" in args.protocols:
        data = p1_data(Path(args.data_dir) / "ml-100k", cache / "p1")
        cfg = _merge(_merge(P1_CONFIG, over), quick)
        rep = run_pinsage(data, cfg, cache / "p1", args.seeds)
        var = run_variants(data, cfg, cache / "p1-variants", args.variant_seeds or args.seeds,
                           args.variants)
        rows = {"pinsage": rep["rows"]["pinsage"], **_variant_rows(var),
                **baselines(data, P1_BASELINES)}
        p = rows["pinsage"]
        for name, vrep in var.items():
            v = vrep["rows"]["pinsage"]
            metrics += [metric(f"p1_ml100k_test_hr10_pinsage_{name}", v["test_hit@10"], "ratio"),
                        metric(f"p1_ml100k_val_hr10_pinsage_{name}", v["val_hit@10"], "ratio")]
        metrics += [metric("p1_ml100k_test_hr10_pinsage", p["test_hit@10"], "ratio"),
                    metric("p1_ml100k_test_hr10_pinsage_std", p["test_hit@10_std"], "ratio", False),
                    metric("p1_ml100k_val_hr10_pinsage", p["val_hit@10"], "ratio"),
                    metric("p1_ml100k_val_hr10_pinsage_std", p["val_hit@10_std"], "ratio", False)]
        metrics += [metric(f"p1_ml100k_test_hr10_{n}", r["test_hit@10"], "ratio")
                    for n, r in rows.items() if n != "pinsage" and not n.startswith("PinSage")]
        extra["p1"] = {"rows": rows, "runs": rep["runs"], "config": cfg,
                       "variants": {n: v["runs"] for n, v in var.items()},
                       "wall_seconds": rep["wall_seconds"]}
        train_min = np.mean([r["train_seconds"] for r in rep["runs"]]) / 60
        sections["p1"] = (f"### P1: MovieLens-100K, related items to the latest item\n\n"
                        f"PinSage: seeds {args.seeds}, {_schedule_words(cfg)}, "
                        f"{_loss_words(cfg)}, {train_min:.1f} min training per seed."
                        f"\n\n{p1_tables(rows)}")
        extra["p1"]["command"] = command
        if args.ablation:
            abl = {}
            for label, change in ABLATIONS.items():
                if not change and args.ablation_seeds == args.seeds:
                    r = rep  # the main runs are the 'full' variant: not trained twice
                else:
                    r = run_pinsage(data, _merge(cfg, change), cache / "p1-ablation" /
                                    ("_".join(f"{k}" for k in change) or "full"),
                                    args.ablation_seeds)
                abl[label] = {"change": change, "row": r["rows"]["pinsage"], "runs": r["runs"]}
            extra["p1_ablation"] = abl
            body = [[label, _pm(a["row"], "val_hit@10"), _pm(a["row"], "test_hit@10"),
                     _pm(a["row"], "val_mrr"),
                     f"{np.mean([x['train_seconds'] for x in a['runs']]) / 60:.1f}"]
                    for label, a in abl.items()]
            sections["p1_ablation"] = (f"### P1 ablation (seeds {args.ablation_seeds})\n\n" + markdown_table(
                ["variant", "val HR@10", "test HR@10", "val MRR", "train min"], body))

    if "p2" in args.protocols:
        data = p2_data(Path(args.data_dir) / "gowalla", cache / "p2",
                       validation=args.p2_validation)
        cfg = _merge(_merge(_merge(P2_CONFIG, over), json.loads(args.p2_config)), quick)
        rep = run_pinsage(data, cfg, cache / "p2", args.seeds)
        var = run_variants(data, cfg, cache / "p2-variants", args.variant_seeds or args.seeds,
                           args.variants)
        rows = {"pinsage": rep["rows"]["pinsage"], **_variant_rows(var),
                **baselines(data, P2_BASELINES + (("ease",) if args.p2_ease else ()))}
        p = rows["pinsage"]
        key = "p2val" if args.p2_validation else "p2"  # tuning runs do not replace test ones
        pre = f"{key}_gowalla"
        metrics += [metric(f"{pre}_recall20_pinsage_{name}", v["rows"]["pinsage"]["recall@20"],
                           "ratio") for name, v in var.items()]
        metrics += [metric(f"{pre}_train_minutes",
                           np.mean([r["train_seconds"] for r in rep["runs"]]) / 60, "min",
                           False),
                    metric(f"{pre}_recall20_pinsage", p["recall@20"], "ratio"),
                    metric(f"{pre}_recall20_pinsage_std", p["recall@20_std"], "ratio", False),
                    metric(f"{pre}_ndcg20_pinsage", p["ndcg@20"], "ratio"),
                    metric(f"{pre}_ndcg20_pinsage_std", p["ndcg@20_std"], "ratio", False)]
        metrics += [metric(f"{pre}_recall20_{n}", r["recall@20"], "ratio")
                    for n, r in rows.items() if n != "pinsage" and not n.startswith("PinSage")]
        extra[key] = {"rows": rows, "runs": rep["runs"], "config": cfg,
                      "variants": {n: v["runs"] for n, v in var.items()},
                       "wall_seconds": rep["wall_seconds"], "validation": args.p2_validation}
        train_min = np.mean([r["train_seconds"] for r in rep["runs"]]) / 60
        sections[key] = (f"### P2: Gowalla{' (validation carved from train.txt)' if args.p2_validation else ''}"
                        f"\n\nPinSage: seeds {args.seeds}, {_schedule_words(cfg)}, "
                        f"{_loss_words(cfg)}, {train_min:.1f} min training per seed."
                        f"\n\n{p2_tables(rows, bool(args.p2_validation))}")
        extra[key]["command"] = command

    if "planted" in args.protocols:
        from planted_section import planted_section

        cfg = _merge(_merge(P1_CONFIG, over), quick)
        m, extra["planted"], sections["planted"] = planted_section(
            cfg, cache / "planted", args.seeds,
            {name: VARIANTS[name] for name in args.variants})
        metrics += m
        extra["planted"]["command"] = command

    extra["wall_seconds"] = time.perf_counter() - t_start
    extra["sections"] = sections
    ran = {"p2val" if p == "p2" and args.p2_validation else p for p in args.protocols}
    metrics, extra = carry_over(results_dir / "quality.json", ran, metrics, extra)
    path = write_results("quality", metrics, machine, extra, results_dir=results_dir)
    md = ("## Recommendation quality (`bench_quality.py`)\n\n"
          "Targets: P1 test HR@10 >= 0.17, P2 Recall@20 >= 0.185 (PinSage, mean of seeds). "
          "See docs/quality.md. Each protocol's section names the command that produced it "
          "(a run of one protocol keeps the other's results).\n\n"
          + "\n\n".join(_with_command(extra, k, v) for k, v in extra["sections"].items()))
    update_results_md("quality", md, path=md_path)
    print(f"wrote {path}")
    print(md)


if __name__ == "__main__":
    main()
