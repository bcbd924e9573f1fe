"""Minibatch construction (paper section 3.3): negatives, K-hop neighbourhoods, packing.

For a minibatch of positive pairs (q, i) the builder

1. samples ``num_shared_negatives`` items shared by the whole batch (uniform, or proportional
   to degree ** 0.75);
2. draws ``hard_k`` hard negatives per query from its personalised-PageRank rank band
   (``WalkService.ppr_rank_sample``), never the query or its positive;
3. collects the output nodes (queries, positives, negatives) and expands them K times through
   importance neighbourhoods (from a per-epoch table or fresh walks; see
   :class:`NeighborSource`), removing each pair's own link first so the label does not leak:
   the positive is dropped from the query's neighbourhood and the query from the positive's;
4. packs everything into padded tensors: nested node lists whose prefixes are the next
   layer's nodes (:class:`pinsage_ray.model.Block`), features, log degrees, and index maps.

Everything is a deterministic function of (batch seed, inputs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from pinsage_ray.inference.layerwise import inference_ids
from pinsage_ray.model.batch import Block, EncoderInput
from pinsage_ray.sampling.aggregate import Neighborhood
from pinsage_ray.sampling.api import WalkService
from pinsage_ray.training.config import TrainConfig
from pinsage_ray.training.negatives import ItemDegrees, NegativeSampler

logger = logging.getLogger(__name__)


@dataclass
class TrainBatch:
    """A packed minibatch.

    Attributes:
        inp: the encoder's K-hop input; its output nodes are indexed by the fields below.
            None in whole-graph training (:func:`uses_whole_graph`): the fields below are
            item ids, rows of the embeddings of every item.
        query, positive: int64 (B,) output-node indices of each pair.
        shared: int64 (M,) output-node indices of the shared negatives.
        hard: int64 (B, H) output-node indices of hard negatives; -1 = none.
        query_set: int64 (B, L) output-node indices of each query's item set (-1 pads), or
            None when every query is the single item ``query``. The query vector is the
            normalised mean of the set's embeddings (:mod:`pinsage_ray.training.groups`).
    """

    inp: EncoderInput | None
    query: torch.Tensor
    positive: torch.Tensor
    shared: torch.Tensor
    hard: torch.Tensor
    query_set: torch.Tensor | None = None

    @property
    def num_examples(self) -> int:
        return int(self.query.shape[0])

    def to(self, device: torch.device | str) -> TrainBatch:
        return TrainBatch(None if self.inp is None else self.inp.to(device),
                          self.query.to(device), self.positive.to(device),
                          self.shared.to(device), self.hard.to(device),
                          None if self.query_set is None else self.query_set.to(device))


def uses_whole_graph(config: TrainConfig, num_items: int) -> bool:
    """Whether training embeds every item per step (one sparse product per hop over the epoch's
    neighbourhood table) instead of sampled K-hop blocks: when the graph has at most
    ``config.whole_graph_max_items`` items (docs/quality.md measures the two)."""
    return config.num_layers > 0 and num_items <= config.whole_graph_max_items


def whole_graph_inputs(builder: "BatchBuilder", epoch: int) -> dict[str, np.ndarray | None]:
    """The arrays :meth:`pinsage_ray.model.WholeGraph.from_neighbors` needs for ``epoch``:
    every item's id (-1 without edges), features, log degree and neighbourhood row (the
    epoch's table, the one sampled blocks would gather from)."""
    n = builder.num_items
    every = np.arange(n)
    nb = builder.neighbors(every, epoch, 0)
    return {"node_ids": inference_ids(every, builder.degree[every]),
            "features": builder.features, "log_degree": builder.log_degree(every),
            "nb_ids": nb.ids, "nb_weights": nb.weights}


class NeighborSource:
    """Importance neighbourhoods for the batch builder.

    ``mode='epoch'`` computes one table for all items per epoch (one walk request of
    ``num_items`` seeds) and gathers rows from it: far cheaper whenever an epoch touches more
    nodes than the graph has, which is every realistic epoch. ``mode='batch'`` walks from
    each batch's nodes instead (for graphs too large for a table per worker).
    """

    def __init__(self, walker: WalkService, config: TrainConfig, mode: str = "epoch") -> None:
        if mode not in ("epoch", "batch"):
            raise ValueError(f"mode={mode!r}; use 'epoch' or 'batch'")
        self.walker, self.config, self.mode = walker, config, mode
        self._table: tuple[int, Neighborhood] | None = None

    def _walk(self, nodes: np.ndarray, seed: int) -> Neighborhood:
        nc = self.config.neighbors
        return self.walker.importance_neighbors(nodes, num_walks=nc.num_walks,
                                                walk_length=nc.walk_length,
                                                restart_prob=nc.restart_prob, top_t=nc.top_t,
                                                seed=seed)

    def __call__(self, nodes: np.ndarray, epoch: int, batch_seed: int) -> Neighborhood:
        if self.mode == "batch":
            return self._walk(nodes, batch_seed)
        if self._table is None or self._table[0] != epoch:
            seed = int(np.random.SeedSequence([self.config.seed, epoch, 3]).generate_state(1)[0])
            self._table = (epoch, self._walk(np.arange(self.walker.num_items), seed))
        return self._table[1].take(nodes)


def remove_links(nb: Neighborhood, rows: np.ndarray, banned: np.ndarray) -> int:
    """Drop item ``banned[j]`` from row ``rows[j]`` of ``nb`` (in place); renormalise weights.

    Returns:
        How many entries were removed.
    """
    hit = nb.ids[rows] == banned[:, None]
    r, c = np.nonzero(hit)
    if len(r) == 0:
        return 0
    nb.ids[rows[r], c] = -1
    nb.counts[rows[r], c] = 0
    nb.weights[rows[r], c] = 0.0
    touched = np.unique(rows[r])
    total = nb.counts[touched].sum(axis=1, keepdims=True)
    nb.weights[touched] = np.divide(nb.counts[touched], total, where=total > 0,
                                    out=np.zeros(nb.counts[touched].shape)).astype(np.float32)
    return len(r)


def _positions(sorted_nodes: np.ndarray, order: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Index of each id in a node list (given its argsort); -1 stays -1."""
    out = np.full(ids.shape, -1, dtype=np.int64)
    valid = ids >= 0
    out[valid] = order[np.searchsorted(sorted_nodes, ids[valid])]
    return out


def expand_blocks(outputs: np.ndarray, num_layers: int,
                  neighbors_of: Callable[[np.ndarray], Neighborhood]) -> tuple[np.ndarray,
                                                                            list[Block]]:
    """K-hop computation graph of ``outputs`` (Algorithm 2's sampling loop).

    Layer K's nodes are ``outputs``; each lower layer appends the neighbours of the layer above
    that it does not hold yet, so every layer's node list starts with the next layer's nodes.

    Returns:
        ``(nodes0, blocks)``: item ids of the layer-0 nodes and the K blocks (bottom first).
    """
    layer = np.asarray(outputs, dtype=np.int64)
    blocks: list[Block] = []
    for _ in range(num_layers):
        nb = neighbors_of(layer)
        new = np.setdiff1d(np.unique(nb.ids[nb.ids >= 0]), layer, assume_unique=False)
        src = np.concatenate([layer, new])
        order = np.argsort(src)
        idx = _positions(src[order], order, nb.ids)
        blocks.append(Block(torch.from_numpy(idx), torch.from_numpy(
            np.ascontiguousarray(nb.weights, dtype=np.float32)), len(src)))
        layer = src
    return layer, blocks[::-1]


class BatchBuilder:
    """Builds :class:`TrainBatch` es from positive pairs (plain class; producers wrap it).

    Args:
        walker: walk service for hard negatives (and neighbourhoods in 'batch' mode).
        features: float32 (num_items, F) or None (a memory-mapped array is read per batch).
        degree: item degrees: an int array, or :class:`~pinsage_ray.training.negatives.ItemDegrees`
            (read per batch from the item CSR; the producers use it, holding no per-item
            array). ``log1p`` of it is the degree feature.
        config: training configuration.
        neighbor_mode: see :class:`NeighborSource`; None: ``'epoch'`` up to
            ``config.neighbor_table_max_items`` items (and always in whole-graph training,
            which embeds every item from the table), ``'batch'`` past it.
        negatives: the shared-negative sampler; None: ``config.negative_sampling`` over
            ``degree`` (:class:`~pinsage_ray.training.negatives.NegativeSampler`).
    """

    def __init__(self, walker: WalkService, features: np.ndarray | None,
                 degree: np.ndarray | ItemDegrees, config: TrainConfig,
                 neighbor_mode: str | None = None,
                 negatives: NegativeSampler | None = None) -> None:
        self.walker, self.config = walker, config
        self.features = None if features is None else np.asarray(features, dtype=np.float32)
        self.degree = degree if isinstance(degree, ItemDegrees) else np.asarray(degree)
        self.num_items = len(degree)
        self.negatives = negatives or NegativeSampler(config.negative_sampling, self.degree)
        self.whole_graph = uses_whole_graph(config, self.num_items)
        if neighbor_mode is None:
            neighbor_mode = ("epoch" if self.whole_graph
                             or self.num_items <= config.neighbor_table_max_items else "batch")
        self.neighbors = NeighborSource(walker, config, neighbor_mode)

    def log_degree(self, nodes: np.ndarray) -> np.ndarray:
        """float32 ``log1p(degree)`` of ``nodes``: the encoder's degree input."""
        return np.log1p(np.asarray(self.degree[nodes]).astype(np.float32))

    def sample_shared(self, rng: np.random.Generator) -> np.ndarray:
        return self.negatives.sample(rng, self.config.num_shared_negatives)

    def build(self, q: np.ndarray, p: np.ndarray, hard_k: int, epoch: int,
              batch_seed: int, query_sets: np.ndarray | None = None) -> TrainBatch:
        """Pack pairs ``(q, p)`` with ``hard_k`` hard negatives per query.

        ``query_sets`` (B, L) item ids (-1 pads), if given, are the queries' item sets (group
        context; ``q`` is then each set's first item, used for hard negatives). Every set
        item loses its link to the positive, and the positive its links to the set.
        """
        cfg = self.config
        rng = np.random.default_rng([batch_seed, 1])
        shared = self.sample_shared(rng)
        if hard_k > 0:
            hard = self.walker.ppr_rank_sample(
                q, cfg.hard_band[0], cfg.hard_band[1], hard_k, num_walks=cfg.hard_num_walks,
                walk_length=cfg.neighbors.walk_length, restart_prob=cfg.neighbors.restart_prob,
                seed=batch_seed, avoid=p[:, None])
        else:
            hard = np.zeros((len(q), 0), dtype=np.int64)
        if query_sets is None:
            members, member_pos = q, p
        else:
            row, _ = np.nonzero(query_sets >= 0)
            members, member_pos = query_sets[query_sets >= 0], p[row]
        if self.whole_graph:  # the trainer embeds every item: indices are item ids
            ids = lambda x: torch.from_numpy(np.asarray(x, dtype=np.int64))  # noqa: E731
            return TrainBatch(None, ids(q), ids(p), ids(shared), ids(hard),
                              None if query_sets is None else ids(query_sets))
        outputs = np.unique(np.concatenate([members, p, shared, hard[hard >= 0]]))
        pair_nodes = np.concatenate([members, member_pos])
        pair_banned = np.concatenate([member_pos, members])

        def neighbors_without_pair_links(dst: np.ndarray) -> Neighborhood:
            nb = self.neighbors(dst, epoch, batch_seed)
            nb = Neighborhood(nb.ids.copy(), nb.weights.copy(), nb.counts.copy())
            order = np.argsort(dst)
            remove_links(nb, _positions(dst[order], order, pair_nodes), pair_banned)
            return nb

        nodes0, blocks = expand_blocks(outputs, cfg.num_layers, neighbors_without_pair_links)
        order = np.argsort(outputs)

        def out_index(ids: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(_positions(outputs[order], order, ids))

        # Items without edges get no id vector, by the rule inference uses; with id_dropout a
        # random share of the rest trains from features and neighbours alone.
        ids = inference_ids(nodes0, self.degree[nodes0])
        if cfg.id_dropout > 0:
            ids = np.where(rng.random(len(nodes0)) < cfg.id_dropout, -1, ids)
        inp = EncoderInput(
            node_ids=torch.from_numpy(ids),
            features=None if self.features is None else torch.from_numpy(self.features[nodes0]),
            log_degree=torch.from_numpy(self.log_degree(nodes0)),
            blocks=blocks)
        return TrainBatch(inp, out_index(q), out_index(p), out_index(shared), out_index(hard),
                          None if query_sets is None else out_index(query_sets))
