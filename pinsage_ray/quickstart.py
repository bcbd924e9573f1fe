"""The quickstart pipeline: what ``pinsage-ray quickstart`` runs on built-in synthetic data.

Every step a user runs on their own data, on a planted-community graph whose right answer is
known: generate + prepare the graph, train briefly with Ray Train (walks served by Ray shard
actors, batches built by producer actors), embed every item layer by layer, build the HNSW
index, evaluate (held-out pairs, and how often related items share the planted community,
beside features alone, popularity and ItemKNN on the same query items), and print a few
recommendations. Training uses the library's defaults (the ``items`` preset). About a
minute on 2 cores.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def run_quickstart(workdir: str | os.PathLike, *, num_items: int = 5_000,
                   num_groups: int = 4_000, num_shards: int = 2, num_epochs: int | None = None,
                   seed: int = 0, show_progress: bool = False) -> dict[str, Any]:
    """Run the pipeline in ``workdir`` and return a summary dict.

    Training uses the library's defaults (``TrainConfig()``, the ``items`` preset) with
    ``num_epochs`` passes (None = the preset's 5). ``show_progress``: print each step,
    progress bars and one line per epoch on stderr (the steps are logged at INFO either way).
    """

    def step(message: str, *values: Any) -> None:
        logger.info(message, *values)
        if show_progress:
            print(message % values, file=sys.stderr, flush=True)

    from pinsage_ray.data import SyntheticConfig, generate_synthetic
    from pinsage_ray.graph import prepare
    from pinsage_ray.inference.pipeline import embed
    from pinsage_ray.ray_utils import init_ray
    from pinsage_ray.recommender import Recommender, build_index
    from pinsage_ray.training import TrainConfig, train

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"workdir": str(workdir.resolve())}
    t0 = time.perf_counter()
    cfg = SyntheticConfig(num_items=num_items, num_groups=num_groups, num_communities=20,
                          feature_noise=0.5, timestamps=True, seed=seed)
    graph_dir, run_dir = workdir / "graph", workdir / "run"
    step("1/5 generating a planted graph: %d items, %d groups", num_items, num_groups)
    store = prepare(generate_synthetic(cfg), graph_dir, overwrite=True)
    report["graph"] = {"items": store.num_items, "groups": store.num_groups,
                       "edges": store.num_edges}

    train_cfg = TrainConfig(num_shards=num_shards, seed=seed,
                            **({} if num_epochs is None else {"num_epochs": num_epochs}))
    step("2/5 training %d epochs (Ray Train, %d walk shards)", train_cfg.num_epochs, num_shards)
    init_ray()
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)  # the quickstart always starts from scratch
    result = train(graph_dir, run_dir, train_cfg, show_progress=show_progress)
    report["training"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()
                           if k in ("epoch", "loss", "examples_per_s", "hard_negatives",
                                    "val_hit_at_10", "val_mrr")} for m in result.history]

    step("3/5 layer-wise embedding of all items")
    emb = embed(run_dir, mode="auto", num_shards=0, show_progress=show_progress)
    step("4/5 building the HNSW index")
    index = build_index(run_dir, show_progress=show_progress)
    report["index"] = {"items": len(index), "ef": index.ef,
                       "recall_at_10": round(float(index.recall_at_k), 4)}

    step("5/5 evaluating and recommending")
    rec = Recommender.load(run_dir)
    labels = dict(zip(store.item_ids.to_pylist(), np.asarray(store.labels()).tolist()))
    rng = np.random.default_rng(seed)
    probes = rng.choice(np.asarray(list(labels)), 200, replace=False).tolist()
    rows = rec.similar_items_batch(probes, k=10)
    same = np.mean([labels[j] == labels[i] for i, row in zip(probes, rows) for j, _ in row])
    report["evaluation"] = {
        "best_epoch": result.best["epoch"],
        "val_hit_at_10": round(result.best.get("val_hit_at_10", float("nan")), 4),
        "related_items_same_community": round(float(same), 4),
        "baselines_same_community": {name: round(v, 4) for name, v in baseline_same_community(
            store, probes, k=10).items()},
        "chance": round(1.0 / cfg.num_communities, 4),
        "embed_seconds": round(emb.seconds, 2),
    }
    report["examples"] = [{"item": i, "community": labels[i],
                           "similar": [(j, labels[j], round(s, 3)) for j, s in row[:5]]}
                          for i, row in zip(probes[:3], rows[:3])]
    report["seconds"] = round(time.perf_counter() - t0, 1)
    return report


#: What the quickstart compares PinSage's related items with: features alone (what a model
#: without the graph starts from), the most popular items, and item-item cosine over shared
#: groups (ItemKNN), the usual first recommender.
QUICKSTART_BASELINES = ("features", "popularity", "itemknn")


def baseline_same_community(store: Any, probes: list, k: int = 10) -> dict[str, float]:
    """Share of each probe item's top ``k`` related items (itself excluded) that lie in its
    planted community, for every :data:`QUICKSTART_BASELINES` entry; ``probes`` are item ids.
    """
    from pinsage_ray.evaluation.harness import fit_baseline, graph_data
    from pinsage_ray.evaluation.planted import features_embedding

    labels = np.asarray(store.labels())
    rows = store.item_index(probes, argument="probes")
    unit = features_embedding(np.asarray(store.features()))
    data = graph_data(store)
    out = {}
    for name in QUICKSTART_BASELINES:
        scores = (unit[rows] @ unit.T if name == "features"
                  else fit_baseline(name, data).item_scores(rows)).astype(np.float64)
        scores[np.arange(len(rows)), rows] = -np.inf
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        out[name] = float((labels[top] == labels[rows][:, None]).mean())
    return out
