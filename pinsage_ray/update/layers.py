"""Recomputing only the changed rows of each inference layer (paper section 3.4).

``embed`` keeps every layer's outputs (``inference/layers/h{k}``, ``t{k}``). After an update,
layer ``k`` is recomputed only for the items of ``C_k`` (:func:`pinsage_ray.update.affected.
layer_change_sets`), with the same per-layer functions as the full pass
(:mod:`pinsage_ray.inference.layerwise`) and the stored rows of every other item: a row is a
pure function of its inputs, so the result equals a full recompute.

Which items get their trained id vector (:func:`node_ids`): an item of the model's id table
that had edges in the training graph and still has edges. Everything else, new items (beyond
the id table), feature-only items and removed items, gets id -1: no id term, the rule
:func:`pinsage_ray.inference.layerwise.inference_ids` applies to degree-0 items and
:mod:`pinsage_ray.inference.coldstart` to unseen ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pinsage_ray.inference import layerwise

logger = logging.getLogger(__name__)


def node_ids(num_items: int, degree: np.ndarray, trained_degree: np.ndarray) -> np.ndarray:
    """int64 (num_items,): the id each item gives the model (-1: no trained id vector).

    Args:
        degree: (num_items,) degrees in the updated graph.
        trained_degree: (M,) degrees in the graph the model was trained on (M = its id table).
    """
    ids = np.arange(num_items, dtype=np.int64)
    trained = np.zeros(num_items, dtype=bool)
    m = min(len(trained_degree), num_items)
    trained[:m] = np.asarray(trained_degree[:m]) > 0
    return np.where(trained & (np.asarray(degree) > 0), ids, np.int64(-1))


@dataclass
class LayerUpdate:
    """Every item's layer outputs after an update, and how many rows were recomputed.

    Attributes:
        h, t: per layer k < K, float32 (N, hidden): ``h_k`` and its neighbour transform.
        embeddings: float32 (N, embedding_dim).
        recomputed: rows recomputed per layer: ``[h0, h1, ..., h_K (output)]``.
    """

    h: list[np.ndarray]
    t: list[np.ndarray]
    embeddings: np.ndarray
    recomputed: list[int]


def update_layers(encoder: object, old_h: list[np.ndarray], old_t: list[np.ndarray],
                  old_emb: np.ndarray, features: np.ndarray | None, degree: np.ndarray,
                  ids: np.ndarray, nb_ids: np.ndarray, nb_weights: np.ndarray,
                  change: list[np.ndarray], *, batch_size: int = 65536) -> LayerUpdate:
    """Layer outputs of all N items, recomputing only the rows in ``change``.

    Args:
        encoder: the trained :class:`~pinsage_ray.model.encoder.PinSageEncoder`.
        old_h, old_t: stored layer outputs (N_old rows each, N_old <= N), k < K.
        old_emb: float32 (N_old, D) stored final embeddings, in contiguous-id order.
        features, degree, ids: the updated graph's rows for all N items (``ids`` from
            :func:`node_ids`).
        nb_ids, nb_weights: (N, T) the updated neighbourhood table.
        change: bool masks ``[C_0, ..., C_K]`` (every item beyond N_old must be in C_0).
    """
    encoder.eval()
    n = len(degree)
    log_deg = np.log1p(np.asarray(degree, dtype=np.float32))
    k_layers = encoder.num_layers
    rows0 = np.flatnonzero(change[0])
    if (np.arange(len(old_emb), n) != rows0[rows0 >= len(old_emb)]).any():
        raise ValueError("every new item must be in the layer-0 change set")

    def grow(old: np.ndarray) -> np.ndarray:
        out = np.zeros((n, old.shape[1]), dtype=np.float32)
        out[: len(old)] = old
        return out

    h_all, t_all, recomputed = [], [], []
    h = grow(np.asarray(old_h[0]))
    for s in range(0, len(rows0), batch_size):
        r = rows0[s:s + batch_size]
        h[r] = layerwise.input_layer_rows(encoder, ids[r], None if features is None
                                          else features[r], log_deg[r])
    recomputed.append(len(rows0))
    for k in range(k_layers):
        t = grow(np.asarray(old_t[k]))
        rows = np.flatnonzero(change[k])
        for s in range(0, len(rows), batch_size):
            r = rows[s:s + batch_size]
            t[r] = layerwise.transform_rows(encoder, k, h[r])
        h_all.append(h)
        t_all.append(t)
        rows = np.flatnonzero(change[k + 1])
        parts = []
        for s in range(0, len(rows), batch_size):
            r = rows[s:s + batch_size]
            nb = nb_ids[r]
            parts.append(layerwise.conv_layer_rows(encoder, k, h[r], t[np.maximum(nb, 0)], nb,
                                                   nb_weights[r]))
        if k + 1 < k_layers:
            h_next = grow(np.asarray(old_h[k + 1]))
        else:  # h_K is only read for the rows whose output is recomputed
            width = parts[0].shape[1] if parts else 1
            h_next = np.zeros((n, width), dtype=np.float32)
        if parts:
            h_next[rows] = np.concatenate(parts)
        recomputed.append(len(rows))
        h = h_next
    emb = np.zeros((n, old_emb.shape[1]), dtype=np.float32)
    emb[: len(old_emb)] = old_emb
    rows = np.flatnonzero(change[k_layers])
    for s in range(0, len(rows), batch_size):
        r = rows[s:s + batch_size]
        emb[r] = layerwise.output_layer_rows(encoder, h[r], ids[r])
    return LayerUpdate(h_all, t_all, emb, recomputed)
