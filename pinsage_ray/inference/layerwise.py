"""Layer-wise embedding of every item (paper section 3.4, the MapReduce inference), in process.

Computing embeddings node by node repeats work: a K-hop neighbourhood shares most nodes with
its neighbours' neighbourhoods. Layer-wise inference computes layer 0 (projected features) for
*all* items once, then layer 1 for all items from the layer-0 vectors of their neighbours, and
so on; each node is computed exactly once per layer. The same per-layer functions run inside
the Ray Data pipeline (:mod:`pinsage_ray.inference.pipeline`) over item batches; this module is
the single-process path used for per-epoch evaluation, small graphs and as the oracle.

Each item uses one importance neighbourhood (from the walk service, fixed by seed) at every
layer, exactly as in training with a per-epoch neighbourhood table.

An item with degree 0 in the training graph (a feature-only, cold-start item from
``prepare``) has no trained id vector: :func:`inference_ids` gives it id -1, which the model
reads as "no id term" (input layer and ``id_skip``), so it is embedded from its features
alone, exactly as :func:`pinsage_ray.inference.coldstart.embed_new_items` embeds an unseen
item without groups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch

from pinsage_ray.model.encoder import PinSageEncoder

logger = logging.getLogger(__name__)


def inference_ids(ids: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """The node ids to give the model at inference: ``ids``, with -1 where ``degree`` is 0.

    An item without edges in the training graph never got a trained id vector (nothing
    engaged with it), so it must get no id-embedding term; a negative id means exactly that
    to the model (``InputProjection.id_vectors``). Every inference path passes its ids through
    here, so the local, Ray Data and cold-start embeddings of such an item agree.

    Args:
        ids: int64 (B,) contiguous item ids.
        degree: (B,) their degrees in the training graph.
    """
    ids = np.asarray(ids, dtype=np.int64)
    return np.where(np.asarray(degree) > 0, ids, np.int64(-1))


def input_layer_rows(encoder: PinSageEncoder, ids: np.ndarray | None,
                     features: np.ndarray | None, log_degree: np.ndarray) -> np.ndarray:
    """Layer-0 vectors (B, hidden) of items ``ids``; ``features``/``log_degree`` are their rows.

    ``ids=None`` for items without a trained id (cold start): no id-embedding term; a
    negative id drops that row's id term (see :func:`inference_ids`).
    """
    with torch.no_grad():
        i = None if ids is None else torch.as_tensor(ids, dtype=torch.long)
        f = None if features is None else torch.as_tensor(np.array(features, np.float32))
        h = encoder.input_layer(i, f, torch.as_tensor(np.asarray(log_degree, np.float32)))
    return h.numpy()


def transform_rows(encoder: PinSageEncoder, k: int, h: np.ndarray) -> np.ndarray:
    """Neighbour transform ``ReLU(Q_k h + q_k)`` of layer ``k`` for rows ``h`` (B, D)."""
    with torch.no_grad():
        return encoder.convs[k].transform_neighbors(torch.as_tensor(h)).numpy()


def conv_layer_rows(encoder: PinSageEncoder, k: int, h_self: np.ndarray, n_neighbors: np.ndarray,
                    nb_ids: np.ndarray, nb_weights: np.ndarray) -> np.ndarray:
    """Layer ``k + 1`` vectors (B, out) of items from their own and their neighbours' vectors.

    Args:
        h_self: (B, D) layer-``k`` vectors of the items.
        n_neighbors: (B, T, H) *transformed* layer-``k`` vectors of their neighbours
            (:func:`transform_rows`; any value at padding).
        nb_ids: (B, T) neighbour ids, -1 = padding.
        nb_weights: (B, T) importance weights.
    """
    conv = encoder.convs[k]
    with torch.no_grad():
        mask = torch.as_tensor(nb_ids >= 0)
        # np.array copies: rows fetched from Ray's object store are read-only, which torch
        # only warns about (it cannot protect them), so give it a private, writable copy
        agg = conv.pool(torch.as_tensor(n_neighbors),
                        torch.as_tensor(np.array(nb_weights, np.float32)), mask)
        return conv.combine(torch.as_tensor(h_self), agg).numpy()


def output_layer_rows(encoder: PinSageEncoder, h: np.ndarray,
                      ids: np.ndarray | None = None) -> np.ndarray:
    """Final embeddings (B, embedding_dim), L2-normalised, of items ``ids`` (None: items
    without a trained id, for the ``id_skip`` term)."""
    with torch.no_grad():
        return encoder.output_layer(
            torch.as_tensor(h), None if ids is None else torch.as_tensor(ids, dtype=torch.long)
        ).numpy()


def embed_all(encoder: PinSageEncoder, features: np.ndarray | None, degree: np.ndarray,
              nb_ids: np.ndarray, nb_weights: np.ndarray, *, batch_size: int = 65536,
              show_progress: bool = False,
              layer_sink: Callable[[int, np.ndarray, np.ndarray], None] | None = None,
              node_ids: np.ndarray | None = None) -> np.ndarray:
    """Embeddings of all items, each layer computed once for every item.

    Args:
        encoder: a trained encoder (put in eval mode here).
        features: float32 (N, F) or None.
        degree: (N,) item degrees (items of degree 0 get no id term, see
            :func:`inference_ids`).
        nb_ids, nb_weights: (N, T) importance neighbourhoods of every item.
        layer_sink: called as ``sink(k, h_k, t_k)`` for k < K with every item's layer-k
            vectors and their neighbour transform (kept for cold-start items).
        node_ids: (N,) ids given to the model, -1 = no trained id; default
            :func:`inference_ids` of ``arange(N)`` and ``degree`` (an updated graph's items
            beyond the model's id table need -1: :func:`pinsage_ray.update.layers.node_ids`).

    Returns:
        float32 (N, embedding_dim).
    """
    from tqdm import tqdm  # not tqdm.auto: it warns in a notebook without ipywidgets

    encoder.eval()
    n = len(degree)
    log_deg = np.log1p(np.asarray(degree, dtype=np.float32))
    if node_ids is None:
        node_ids = inference_ids(np.arange(n), degree)  # -1: degree 0, no trained id
    starts = range(0, n, batch_size)
    bar = tqdm(total=n * (encoder.num_layers + 2), desc="layer-wise embed", unit="row",
               disable=not show_progress)
    h = np.concatenate([input_layer_rows(encoder, node_ids[s:s + batch_size],
                                         None if features is None else features[s:s + batch_size],
                                         log_deg[s:s + batch_size]) for s in starts])
    bar.update(n)
    for k in range(encoder.num_layers):
        # map: transform every node once; reduce: pool each node's neighbours' rows.
        t = np.concatenate([transform_rows(encoder, k, h[s:s + batch_size]) for s in starts])
        if layer_sink is not None:
            layer_sink(k, h, t)
        parts = []
        for s in starts:
            ids = nb_ids[s:s + batch_size]
            parts.append(conv_layer_rows(encoder, k, h[s:s + batch_size], t[np.maximum(ids, 0)],
                                         ids, nb_weights[s:s + batch_size]))
        h = np.concatenate(parts)
        bar.update(n)
    out = np.concatenate([output_layer_rows(encoder, h[s:s + batch_size],
                                            node_ids[s:s + batch_size])
                          for s in starts])
    bar.update(n)
    bar.close()
    return out.astype(np.float32)
