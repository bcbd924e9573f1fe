"""Embedding new items without retraining (PinSage is inductive, paper section 3).

A new item is given by its features and the groups it joined. Its importance neighbourhood
comes from random walks that start in those groups (item -> group uses the new item's own
group list; every later hop runs on the existing graph) and its layers are computed from the
stored layer outputs of its neighbours (``run_dir/inference/layers``), so nothing already
computed is recomputed. The model must have been trained with item features: an id embedding
has no row for an unseen item.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from pinsage_ray import _io
from pinsage_ray.graph.store import GraphStore
from pinsage_ray.inference import layerwise
from pinsage_ray.inference.model_io import load_model, run_path
from pinsage_ray.inference.vectors import VectorStore
from pinsage_ray.sampling import aggregate, rng
from pinsage_ray.sampling.shard import GraphShard

logger = logging.getLogger(__name__)

_START, _ITEM, _GROUP = 11, 12, 13  # rng streams


def cold_neighbors(shard: GraphShard, groups: Sequence[np.ndarray], *, num_walks: int,
                   walk_length: int, restart_prob: float, top_t: int,
                   seed: int) -> aggregate.Neighborhood:
    """Importance neighbourhoods of new items from walks starting in their groups.

    Args:
        shard: a shard owning the whole graph (in-process walks).
        groups: per new item, an int64 array of contiguous group ids (>= 1 each).
    """
    m = len(groups)
    lens = np.array([len(g) for g in groups], dtype=np.int64)
    if (lens == 0).any():
        raise ValueError(f"new item {int(np.argmin(lens))} has no groups; every new item needs "
                         "at least one group it belongs to")
    offsets = np.concatenate([[0], np.cumsum(lens)])
    flat = np.concatenate([np.asarray(g, np.int64) for g in groups])
    walker = np.arange(m * num_walks, dtype=np.int64)
    owner = walker // num_walks
    at_new = np.ones(len(walker), dtype=bool)  # walker sits on its (new) seed item
    cur = np.zeros(len(walker), dtype=np.int64)
    visits = np.empty((len(walker), walk_length), dtype=np.int64)
    for step in range(walk_length):
        u, v = rng.two_uniforms(seed, walker, step, _START)
        group = np.empty(len(walker), dtype=np.int64)
        o = owner[at_new]
        group[at_new] = flat[offsets[o] + (u[at_new] * lens[o]).astype(np.int64)]
        if (~at_new).any():
            group[~at_new] = shard.items.choose(cur[~at_new], u[~at_new], True)
        item = shard.groups.choose(group, rng.uniforms(seed, walker, step, _GROUP), True)
        visits[:, step] = item
        at_new = v < restart_prob
        cur = item
    return aggregate.top_t(visits.reshape(m, -1), np.full(m, -1, dtype=np.int64), top_t)


def embed_new_items(run_dir: str | os.PathLike, features: np.ndarray,
                    groups: Sequence[Sequence[object]], *, graph_dir: str | None = None,
                    seed: int = 0) -> np.ndarray:
    """Embeddings of items that were not in the graph at training time.

    Args:
        run_dir: a run whose ``embed`` has been run (layer outputs are read from it).
        features: float32 (M, F) features of the new items, same columns as training.
        groups: per new item, the ORIGINAL ids of the groups it belongs to.
        graph_dir: override the training graph location.
        seed: walk seed.

    Returns:
        float32 (M, embedding_dim) L2-normalised embeddings.
    """
    model = load_model(run_dir, graph_dir)
    enc = model.encoder
    store = GraphStore(model.graph_dir)
    if store.feature_dim == 0:
        raise ValueError("this model was trained without item features (id embeddings), so an "
                         "unseen item has no input vector; retrain with item features")
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[1] != store.feature_dim:
        raise ValueError(f"features has shape {feats.shape}; expected (M, {store.feature_dim}) "
                         "with the training features' columns")
    if len(groups) != len(feats):
        raise ValueError(f"groups has {len(groups)} entries for {len(feats)} feature rows; give "
                         "one list of group ids per new item")
    group_ids = [store.group_index(list(g), argument=f"groups[{i}]") for i, g in enumerate(groups)]
    nc = model.neighbor_config
    nb = cold_neighbors(GraphShard(model.graph_dir), group_ids, num_walks=nc["num_walks"],
                        walk_length=nc["walk_length"], restart_prob=nc["restart_prob"],
                        top_t=nc["top_t"], seed=seed)
    layers_dir = run_path(run_dir, "inference", "layers")
    fs, path = _io.resolve(layers_dir)
    if not _io.exists(fs, _io.join(path, "t0")):
        raise FileNotFoundError(f"{layers_dir}: no stored layers; run `pinsage-ray embed "
                                f"{os.fspath(run_dir)}` first")
    degree = np.array([len(g) for g in group_ids], dtype=np.float32)
    # No id-embedding term (input or id_skip): a new item has no trained id, only features.
    h = layerwise.input_layer_rows(enc, None, feats, np.log1p(degree))
    for k in range(enc.num_layers):
        t = VectorStore(_io.join(layers_dir, f"t{k}"), store.num_items)
        h = layerwise.conv_layer_rows(enc, k, h, t.gather(np.maximum(nb.ids, 0)), nb.ids,
                                      nb.weights)
    return layerwise.output_layer_rows(enc, h, None).astype(np.float32)
