"""Embedding new items without retraining (PinSage is inductive, paper section 3).

A new item is given by its features and the groups it joined (possibly none: content without
engagement yet, embedded from its features alone, exactly as layer-wise inference embeds a
feature-only item of the graph). Its importance neighbourhood
comes from random walks that start in those groups (item -> group uses the new item's own
group list; every later hop runs on the existing graph) and its layers are computed from the
stored layer outputs of its neighbours (``run_dir/inference/layers``), so nothing already
computed is recomputed. The model must have been trained with item features: an id embedding
has no row for an unseen item, so a new item gets no id term (input layer or ``id_skip``).
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
        groups: per new item, an int64 array of contiguous group ids; an empty array (an
            item without engagement) gives an empty neighbourhood (all -1, weights 0).
    """
    m = len(groups)
    if m == 0:
        z = np.zeros((0, top_t))
        return aggregate.Neighborhood(z.astype(np.int64), z.astype(np.float32),
                                      z.astype(np.int64))
    lens = np.array([len(g) for g in groups], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lens)])
    flat = np.concatenate([np.asarray(g, np.int64).reshape(-1) for g in groups] +
                          [np.full(1, -1, np.int64)])  # sentinel, see below
    walker = np.arange(m * num_walks, dtype=np.int64)
    owner = walker // num_walks
    at_new = np.ones(len(walker), dtype=bool)  # walker sits on its (new) seed item
    cur = np.zeros(len(walker), dtype=np.int64)
    visits = np.empty((len(walker), walk_length), dtype=np.int64)
    for step in range(walk_length):
        u, v = rng.two_uniforms(seed, walker, step, _START)
        group = np.empty(len(walker), dtype=np.int64)
        o = owner[at_new]
        # An item without groups gets group -1: a dead walker that records -1 at every step
        # (choose() maps -1 to -1). The trailing sentinel keeps the gather in bounds.
        pick = flat[offsets[o] + (u[at_new] * lens[o]).astype(np.int64)]
        group[at_new] = np.where(lens[o] > 0, pick, -1)
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
        groups: per new item, the ORIGINAL ids of the groups it belongs to; an empty list
            for an item without engagement yet (embedded from its features alone: empty
            neighbourhood, degree 0, no id term).
        graph_dir: override the training graph location.
        seed: walk seed.

    Returns:
        float32 (M, embedding_dim) L2-normalised embeddings.
    """
    model = load_model(run_dir, graph_dir)
    enc = model.encoder
    store = GraphStore(model.graph_dir)
    if store.feature_dim == 0:
        raise ValueError(
            "this model was trained without item features (ids only), so an unseen item has no "
            "input vector: its id has no trained embedding. To embed new items without "
            "retraining, prepare the graph with item features (prepare(..., item_features=...) "
            "or `pinsage-ray prepare --features`; a feature row is enough for an item "
            "without interactions) and train on it; or add the new items' interactions to the "
            "input and re-run prepare, train and embed")
    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 2 or feats.shape[1] != store.feature_dim:
        raise ValueError(f"features has shape {feats.shape}; expected (M, {store.feature_dim}) "
                         "with the training features' columns")
    if len(groups) != len(feats):
        raise ValueError(f"groups has {len(groups)} entries for {len(feats)} feature rows; give "
                         "one list of group ids per new item")
    group_ids = [store.group_index(list(g), argument=f"groups[{i}]") if len(g)
                 else np.zeros(0, np.int64) for i, g in enumerate(groups)]
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
