"""Fixtures of the update tests: a planted graph split into a base and one day of changes,
a run with a small seeded model, and the full recompute every update is compared with."""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pinsage_ray.data.synthetic import SyntheticConfig, generate_synthetic
from pinsage_ray.graph import GraphStore, prepare
from pinsage_ray.inference import layerwise
from pinsage_ray.inference.pipeline import embed
from pinsage_ray.model import PinSageEncoder
from pinsage_ray.recommender import build_index
from pinsage_ray.sampling import LocalWalker
from pinsage_ray.update.layers import node_ids

NEIGHBORS = {"num_walks": 20, "walk_length": 2, "restart_prob": 0.5, "top_t": 6}
SEED = 1234567  # embed's default inference seed


def split_day(seed: int = 3) -> dict:
    """Base data and one day of changes from a planted graph (timestamps, 8-d features)."""
    data = generate_synthetic(SyntheticConfig(num_items=3000, num_groups=3000,
                                              num_communities=30, mean_group_size=4.0,
                                              popularity_exponent=0.5, feature_dim=8,
                                              timestamps=True, seed=seed))
    inter, feats = data.interactions, data.item_features
    items = np.unique(inter.column("item").to_numpy())
    groups = np.unique(inter.column("group").to_numpy())
    rng = np.random.default_rng(seed)
    it, gr = inter.column("item").to_numpy(), inter.column("group").to_numpy()
    # a small day: two new items of 2 interactions, one new group of 3 items, 3 new edges
    i_deg = np.bincount(np.searchsorted(items, it), minlength=len(items))
    g_deg = np.bincount(np.searchsorted(groups, gr), minlength=len(groups))
    new_items = rng.choice(items[i_deg == 2], 2, replace=False)
    new_groups = rng.choice(groups[g_deg == 3], 1, replace=False)
    day = np.isin(it, new_items) | np.isin(gr, new_groups)
    day[rng.choice(len(it), 3, replace=False)] = True  # new edges of existing items, groups
    base, new = inter.filter(pa.array(~day)), inter.filter(pa.array(day))
    base_items = pc.unique(base.column("item"))
    in_base = pc.is_in(feats.column("item"), value_set=base_items)
    base_feats, new_feats = feats.filter(in_base), feats.filter(pc.invert(in_base))
    # remove a low-degree base item that the day does not touch
    deg = np.bincount(np.searchsorted(items, base.column("item").to_numpy()),
                      minlength=len(items))
    touched = set(new.column("item").to_numpy().tolist())
    removable = [int(items[i]) for i in np.argsort(deg, kind="stable")
                 if deg[i] >= 2 and int(items[i]) not in touched]
    return {"base": base, "base_feats": base_feats, "new": new, "new_feats": new_feats,
            "remove": [removable[0]], "all_feats": feats}


def full_recompute(version, training_graph: str, enc: PinSageEncoder) -> np.ndarray:
    """Every item's embedding from scratch on ``version``'s graph: all walks, all layers."""
    store = GraphStore(version / "graph")
    n = store.num_items
    full_nb = LocalWalker(str(store.uri)).importance_neighbors(np.arange(n), seed=SEED,
                                                               **NEIGHBORS)
    degree = store.degrees("item")
    ids = node_ids(n, degree, GraphStore(training_graph).degrees("item"))
    return layerwise.embed_all(enc, np.asarray(store.features()), degree, full_nb.ids,
                               full_nb.weights, node_ids=ids)



def base_run(base, make_run) -> dict:
    """Prepare, embed and index the base of :func:`split_day` under ``base``, with a seeded
    untrained model with id vectors and id_skip (``make_run``: the ``untrained_run``
    fixture; the update must treat trained and untrained weights alike)."""
    day = split_day()
    graph = str(base / "graph")
    prepare(day["base"], graph, item_features=day["base_feats"])
    enc = make_run(graph, base / "run", neighbors=NEIGHBORS)
    embed(base / "run", mode="local")
    build_index(base / "run")
    return {"day": day, "run": base / "run", "graph": graph, "enc": enc, "tmp": base}


@pytest.fixture(scope="module")
def update_base(tmp_path_factory, untrained_run) -> dict:
    """A fresh embedded and indexed base run per test module (updates change it)."""
    return base_run(tmp_path_factory.mktemp("update"), untrained_run)


@pytest.fixture(scope="session")
def recompute():
    """``recompute(version_dir, training_graph, encoder)``: the full-recompute oracle."""
    return full_recompute
