"""The quickstart pipeline: what ``pinsage-ray quickstart`` runs on built-in synthetic data.

It generates a planted-community graph, prepares the graph directory, starts the sharded walk
service and computes importance neighbourhoods for every item, then reports how well those
neighbourhoods recover the planted communities (the known right answer).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def run_quickstart(workdir: str | os.PathLike, *, num_items: int = 5_000,
                   num_groups: int = 4_000, num_shards: int = 2, seed: int = 0) -> dict[str, Any]:
    """Run the pipeline in ``workdir`` and return a summary dict."""
    from pinsage_ray.data import SyntheticConfig, generate_synthetic
    from pinsage_ray.graph import GraphStore, prepare
    from pinsage_ray.sampling import open_walker

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"workdir": str(workdir.resolve())}
    t0 = time.perf_counter()
    cfg = SyntheticConfig(num_items=num_items, num_groups=num_groups, num_communities=20,
                          feature_noise=0.5, timestamps=True, seed=seed)
    graph_dir = workdir / "graph"
    logger.info("1/3 generating a planted graph: %d items, %d groups", num_items, num_groups)
    store = prepare(generate_synthetic(cfg), graph_dir, overwrite=True)
    report["graph"] = {"items": store.num_items, "groups": store.num_groups,
                       "edges": store.num_edges, "seconds": round(time.perf_counter() - t0, 2)}
    logger.info("2/3 starting %d walk shards", num_shards)
    t1 = time.perf_counter()
    with open_walker(graph_dir, num_shards=num_shards) as walker:
        logger.info("3/3 importance neighbourhoods for all %d items", store.num_items)
        nb = walker.importance_neighbors(np.arange(store.num_items), num_walks=50,
                                         walk_length=2, restart_prob=0.5, top_t=10, seed=seed)
    labels = np.asarray(GraphStore(graph_dir).labels())
    valid = nb.ids >= 0
    same = labels[nb.ids[valid]] == np.broadcast_to(labels[:, None], nb.ids.shape)[valid]
    report["neighbors"] = {
        "shards": num_shards, "top_t": 10, "seconds": round(time.perf_counter() - t1, 2),
        "same_community_fraction": round(float(same.mean()), 4),
        "chance": round(1.0 / cfg.num_communities, 4),
    }
    report["seconds"] = round(time.perf_counter() - t0, 2)
    return report
