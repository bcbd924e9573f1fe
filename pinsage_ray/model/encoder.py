"""The PinSage encoder: input projection, K stacked CONVOLVE layers and the output MLP.

Implements the forward pass of paper section 3.1-3.2 (Ying et al., KDD 2018, arXiv
1806.01973): Algorithm 2 (MINIBATCH) applies K :class:`~pinsage_ray.model.layers.PinSageConv`
layers, each with its own parameters, over a sampled K-hop computation graph and then the
final dense layers ``z_u = G2 ReLU(G1 h_u^(K) + g)``; the embedding is L2-normalised.

``id_skip`` (not in the paper) adds the item's learnable id vector to ``z_u`` before the
normalisation: ``z_u = G2 ReLU(G1 h_u^(K) + g) + S E[id_u]`` (``S`` the identity when the
widths match). Without it an id vector reaches the embedding only through K + 2 ReLU layers,
each followed by a normalisation, and trains far worse than a free embedding (docs/quality.md
measures it); DGL's PinSAGE example has a similar shortcut. With ``balanced_skip`` the two
terms are each L2-normalised before they are added, ``z_u = n(G2 ReLU(G1 h_u^(K) + g)) +
w n(S E[id_u])`` (``w = id_weight``): the cosine of two items is then about a weighted mean of
their convolution cosine (features and neighbours) and their id cosine, so the id vectors
add what co-occurrence says without drowning what the features say (a free id term grows
until it does: the planted fine/coarse oracle in docs/quality.md measures both). An id-less
item keeps only the first term. Features and degrees still reach
the output only through the convolutions, and an item without a trained id (cold start) gets
no id term, exactly as in the input layer.

``conv="propagate"`` (not in the paper) replaces the K CONVOLVE layers and the final dense
layers with LightGCN's linear propagation (He et al., SIGIR 2020) over the same importance
neighbourhoods: ``h^(0)`` is a linear projection of features, log degree and id vector;
``h^(k+1)`` is the importance-weighted mean of the neighbours' ``h^(k)``; the embedding is
``normalize(S mean_k h^(k))`` over ``k = 0..K`` (``S`` the identity when the widths match),
so the item itself is the ``k = 0`` term and its neighbours' id and feature vectors reach
its embedding without a dense layer or ReLU in between. With the paper's layer and a plain
id skip the id vector alone can carry the embedding and the convolution adds nothing
(docs/quality.md measures it on Gowalla); here an item's embedding is its neighbourhood's
average, so the graph always counts. ``id_skip`` does not apply (the id is the ``k = 0``
term). ``num_layers = 0`` is the no-graph ablation of either mode.

The encoder only produces embeddings. The max-margin loss lives in
:mod:`pinsage_ray.model.loss`, scoring and retrieval elsewhere. The public layer-wise
methods (:meth:`PinSageEncoder.input_layer`, :meth:`PinSageEncoder.conv_layer`,
:meth:`PinSageEncoder.output_layer`) let inference compute one layer for all items at a time
(paper section 3.4, avoiding the repeated computation of overlapping neighbourhoods) with the
very same parameters and code as :meth:`PinSageEncoder.forward`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pinsage_ray.model.batch import Block, EncoderInput, WholeGraph
from pinsage_ray.model.layers import (POOLING_MODES, InputProjection, PinSageConv,
                                      PropagationLayer)

__all__ = ["ModelConfig", "PinSageEncoder", "Block", "EncoderInput", "WholeGraph", "CONV_MODES"]

#: ``ModelConfig.conv``: the paper's CONVOLVE layer, or linear propagation (module docstring).
CONV_MODES = ("paper", "propagate")


def _check_int(name: str, value: Any, minimum: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"ModelConfig.{name} = {value!r}; expected an int >= {minimum}. {fix}")


@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`PinSageEncoder`.

    Attributes:
        num_items: size of the item id space (ids are ``0 .. num_items - 1``).
        feature_dim: number of item feature columns; 0 for a features-free model.
        hidden_dim: width of the input projection and of every convolution layer.
        embedding_dim: width of the final (L2-normalised) embedding.
        num_layers: K, the number of convolution layers (= hops of the sampled graph); 0 is
            the no-graph ablation (input projection and output only).
        conv: ``"paper"`` (CONVOLVE, Algorithm 1, and the final dense layers) or
            ``"propagate"`` (linear propagation, layer outputs averaged; module docstring).
        pooling: ``"importance"`` (paper) or ``"mean"`` (ablation).
        use_id_embedding: learn a per-item id embedding. ``None`` means auto: true iff
            ``feature_dim == 0``. Resolved to a bool in ``__post_init__``.
        dropout: dropout probability on the convolution inputs during training.
        id_skip: add the id embedding to the output (see the module docstring); needs
            ``use_id_embedding``. False = the paper's architecture.
        balanced_skip: normalise the convolution output and the id term separately before
            adding them, so neither can drown the other (see the module docstring); needs
            ``id_skip``.
        id_weight: with ``balanced_skip``, the weight of the normalised id term against the
            normalised convolution output (1 = equal say).
    """

    num_items: int
    feature_dim: int
    hidden_dim: int = 64
    embedding_dim: int = 64
    num_layers: int = 2
    conv: str = "paper"
    pooling: str = "importance"
    use_id_embedding: bool | None = None
    dropout: float = 0.0
    id_skip: bool = False
    balanced_skip: bool = False
    id_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_int("num_items", self.num_items, 1, "Pass the number of distinct items.")
        _check_int(
            "feature_dim", self.feature_dim, 0, "Use 0 when items have no features."
        )
        _check_int("hidden_dim", self.hidden_dim, 1, "Typical values are 64-512.")
        _check_int("embedding_dim", self.embedding_dim, 1, "Typical values are 64-256.")
        _check_int("num_layers", self.num_layers, 0,
                   "The paper uses num_layers=2; 0 is the no-graph ablation.")
        if self.conv not in CONV_MODES:
            raise ValueError(f"ModelConfig.conv = {self.conv!r}; expected one of {CONV_MODES} "
                             "('propagate': linear propagation, 'paper': CONVOLVE).")
        if self.pooling not in POOLING_MODES:
            raise ValueError(
                f"ModelConfig.pooling = {self.pooling!r}; expected one of {POOLING_MODES}."
            )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not (
            0.0 <= float(self.dropout) < 1.0
        ):
            raise ValueError(
                f"ModelConfig.dropout = {self.dropout!r}; expected a float in [0, 1)."
            )
        self.dropout = float(self.dropout)
        if not isinstance(self.id_skip, bool):
            raise ValueError(f"ModelConfig.id_skip = {self.id_skip!r}; expected True or False.")
        if not isinstance(self.balanced_skip, bool):
            raise ValueError(f"ModelConfig.balanced_skip = {self.balanced_skip!r}; expected True "
                             "or False.")
        if self.balanced_skip and not self.id_skip:
            raise ValueError("ModelConfig.balanced_skip = True needs id_skip = True (it balances "
                             "the id term against the convolution output).")
        if isinstance(self.id_weight, bool) or not isinstance(self.id_weight, (int, float)) \
                or not 0.0 < float(self.id_weight) < float("inf"):
            raise ValueError(f"ModelConfig.id_weight = {self.id_weight!r}; expected a finite "
                             "float > 0 (1 = the id term as strong as the convolution output).")
        self.id_weight = float(self.id_weight)
        if self.use_id_embedding is None:
            self.use_id_embedding = self.feature_dim == 0
        elif not isinstance(self.use_id_embedding, bool):
            raise ValueError(
                f"ModelConfig.use_id_embedding = {self.use_id_embedding!r}; expected True, "
                f"False or None (auto)."
            )
        if self.feature_dim == 0 and not self.use_id_embedding:
            raise ValueError(
                "ModelConfig.use_id_embedding = False with feature_dim = 0 leaves the model "
                "only the log degree as input; set use_id_embedding=True (or None) or provide "
                "item features."
            )
        if self.id_skip and self.conv == "propagate":
            raise ValueError(
                "ModelConfig.id_skip = True with conv = 'propagate': the id vector is already "
                "the k = 0 term of the propagated mean; set id_skip=False (or conv='paper')."
            )
        if self.id_skip and not self.use_id_embedding:
            raise ValueError(
                "ModelConfig.id_skip = True needs an id embedding; set use_id_embedding=True "
                "or id_skip=False."
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (``use_id_embedding`` already resolved)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError``."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"ModelConfig.from_dict got unknown key(s) {unknown}; known keys are "
                f"{sorted(known)}."
            )
        return cls(**data)


class PinSageEncoder(nn.Module):
    """PinSage GCN encoder mapping a sampled computation graph to item embeddings.

    Args:
        config: the model hyper-parameters.

    Example::

        enc = PinSageEncoder(ModelConfig(num_items=1000, feature_dim=16))
        emb = enc(batch)  # (batch.num_output_nodes, 64), unit rows
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(
                f"PinSageEncoder expects a ModelConfig; got {type(config).__name__}. "
                f"Use ModelConfig.from_dict(d) for a dict."
            )
        self.config = config
        h = config.hidden_dim
        self.propagate = config.conv == "propagate"
        self.input_proj = InputProjection(
            config.num_items, config.feature_dim, h, bool(config.use_id_embedding),
            id_init_std=0.01 if config.balanced_skip else None, activation=not self.propagate,
        )
        self.convs: nn.ModuleList
        self.output_hidden: nn.Module | None = None  # G1, g
        self.output_proj: nn.Module  # G2 (paper), S (propagate)
        if self.propagate:
            self.convs = nn.ModuleList(PropagationLayer(h, pooling=config.pooling)
                                       for _ in range(config.num_layers))
            self.output_proj = (nn.Identity() if h == config.embedding_dim
                                else nn.Linear(h, config.embedding_dim, bias=False))
        else:
            self.convs = nn.ModuleList(
                PinSageConv(h, h, h, pooling=config.pooling, dropout=config.dropout)
                for _ in range(config.num_layers)
            )
            self.output_hidden = nn.Linear(h, h)
            self.output_proj = nn.Linear(h, config.embedding_dim, bias=False)
        self.skip_proj: nn.Module | None = None  # S
        if config.id_skip:
            self.skip_proj = (nn.Identity() if h == config.embedding_dim
                              else nn.Linear(h, config.embedding_dim, bias=False))

    @property
    def num_layers(self) -> int:
        """K, the number of convolution layers."""
        return len(self.convs)

    @property
    def state_dim(self) -> int:
        """Width of the per-layer vectors passed between layers: ``hidden_dim`` for the
        paper's layer, ``2 * hidden_dim`` for propagation (``[h_k ; s_k]``)."""
        return self.config.hidden_dim * (2 if self.propagate else 1)

    @property
    def embedding_dim(self) -> int:
        """Width of the returned embeddings."""
        return self.config.embedding_dim

    def input_layer(
        self,
        node_ids: torch.Tensor,
        features: torch.Tensor | None,
        log_degree: torch.Tensor,
    ) -> torch.Tensor:
        """Layer-0 vectors ``h^(0)``.

        Args:
            node_ids: ``(N,)`` int64 global item ids (None: items without a trained id).
            features: ``(N, feature_dim)`` or ``None`` when ``feature_dim == 0``.
            log_degree: ``(N,)`` ``log1p(degree)``.

        Returns:
            ``(N, state_dim)``: ``h^(0)``, or ``[h^(0) ; h^(0)]`` for propagation.
        """
        h = self.input_proj(node_ids, features, log_degree)
        return PropagationLayer.initial_state(h) if self.propagate else h

    def conv_layer(
        self,
        k: int,
        h_self: torch.Tensor,
        h_neighbors: torch.Tensor,
        weights: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Apply convolution layer ``k`` (0-based) to gathered neighbour vectors.

        Args:
            k: layer index in ``[0, num_layers)``.
            h_self: ``(B, state_dim)`` the nodes' layer-``k`` vectors.
            h_neighbors: ``(B, T, state_dim)`` their neighbours' layer-``k`` vectors.
            weights: ``(B, T)`` importance weights.
            mask: ``(B, T)`` bool, true for real neighbours.

        Returns:
            ``(B, state_dim)`` layer-``k + 1`` vectors (paper: unit norm or zero).
        """
        if not 0 <= k < self.num_layers:
            raise IndexError(f"conv_layer k = {k}; expected 0 <= k < {self.num_layers}.")
        return self.convs[k](h_self, h_neighbors, weights, mask)

    def output_layer(self, h: torch.Tensor, node_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Final dense layers ``normalize(G2 ReLU(G1 h + g) [+ S E[node_ids]])``; for
        propagation ``normalize(S s_K / (K + 1))``, the mean of the layer outputs.

        Args:
            h: ``(N, state_dim)`` layer-``K`` vectors.
            node_ids: ``(N,)`` the items' ids, for the ``id_skip`` term; None = items without
                a trained id (no id term). Ignored without ``id_skip``.

        Returns:
            ``(N, embedding_dim)`` L2-normalised embeddings.
        """
        if self.output_hidden is None:  # propagation: mean of h^(0..K)
            z = self.output_proj(h[:, self.config.hidden_dim:] / (self.num_layers + 1))
            return F.normalize(z, p=2.0, dim=-1, eps=1e-12)
        z = self.output_proj(F.relu(self.output_hidden(h)))
        if self.skip_proj is not None and node_ids is not None:
            if tuple(node_ids.shape) != (h.shape[0],):
                raise ValueError(f"output_layer: node_ids has shape {tuple(node_ids.shape)}; "
                                 f"expected ({h.shape[0]},), one id per row of h.")
            ids = self.skip_proj(self.input_proj.id_vectors(node_ids))
            if self.config.balanced_skip:
                z = (F.normalize(z, dim=-1, eps=1e-12)
                     + self.config.id_weight * F.normalize(ids, dim=-1, eps=1e-12))
            else:
                z = z + ids
        return F.normalize(z, p=2.0, dim=-1, eps=1e-12)

    def _forward_whole(self, graph: WholeGraph) -> torch.Tensor:
        """Every item's embedding, one sparse product per hop."""
        if not self.propagate:
            h = self.input_layer(graph.node_ids, graph.features, graph.log_degree)
            for conv in self.convs:
                h = conv.forward_whole(h, graph)
            return self.output_layer(h, graph.node_ids)
        # propagation without the [h_k ; s_k] state: the same sum, no per-hop concatenation
        h = total = self.input_proj(graph.node_ids, graph.features, graph.log_degree)
        for _ in self.convs:
            h = graph.propagate(h)
            total = total + h
        z = self.output_proj(total / (self.num_layers + 1))
        return F.normalize(z, p=2.0, dim=-1, eps=1e-12)

    def forward(self, inp: EncoderInput | WholeGraph) -> torch.Tensor:
        """Embed the output nodes of a sampled K-hop computation graph, or every item.

        Only cheap structural checks run here; call ``inp.validate()`` to check values.

        Args:
            inp: the batch; ``len(inp.blocks)`` must equal ``num_layers``. A
                :class:`WholeGraph` embeds every item, one sparse product per hop.

        Returns:
            ``(inp.num_output_nodes, embedding_dim)`` L2-normalised embeddings, row ``i``
            for item ``inp.node_ids[i]``.
        """
        if isinstance(inp, WholeGraph):
            return self._forward_whole(inp)
        if len(inp.blocks) != self.num_layers:
            raise ValueError(
                f"EncoderInput has {len(inp.blocks)} blocks; this encoder has num_layers = "
                f"{self.num_layers}. Sample with num_layers = {self.num_layers} hops."
            )
        h = self.input_layer(inp.node_ids, inp.features, inp.log_degree)
        for k, block in enumerate(inp.blocks):
            if h.shape[0] != block.num_src:
                where = "len(node_ids)" if k == 0 else f"blocks[{k - 1}].num_dst"
                raise ValueError(
                    f"blocks[{k}].num_src = {block.num_src} but {where} = {h.shape[0]}; "
                    f"blocks must chain (dst nodes of one hop are the src nodes of the next)."
                )
            h = self.convs[k].forward_block(h, block)
        # Every layer's node list starts with the next layer's nodes, so the output nodes
        # are the first rows of layer 0.
        return self.output_layer(h, inp.node_ids[: h.shape[0]])
