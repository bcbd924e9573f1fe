"""PinSage building blocks: the input projection and the CONVOLVE layer.

Implements paper section 3.1 of Ying et al., "Graph Convolutional Neural Networks for
Web-Scale Recommender Systems" (KDD 2018, arXiv 1806.01973):

* :class:`InputProjection` turns raw item inputs (features, log degree, optionally a
  learnable id embedding) into the layer-0 vectors ``h^(0)``.
* :class:`PinSageConv` is Algorithm 1 (CONVOLVE) with *importance pooling*:

  1. ``n_v = ReLU(Q h_v + q)`` for every neighbour ``v`` of ``u``;
  2. ``n_u = sum_v alpha_v n_v / sum_v alpha_v`` (importance-weighted mean over the
     non-padded neighbours, ``alpha`` = normalised random-walk visit counts);
  3. ``z_u = ReLU(W [h_u ; n_u] + w)``;
  4. ``h_u^new = z_u / ||z_u||_2``.

* :class:`PropagationLayer` (not in the paper; LightGCN's propagation, He et al., SIGIR 2020,
  over PinSage's importance neighbourhoods): the importance-weighted mean of the neighbours'
  vectors with no dense layer, no non-linearity and no normalisation, so what an item's
  neighbours are reaches its embedding unchanged; the encoder averages all layer outputs
  (layer 0 being the item itself). Its state is ``[h_k ; s_k]``, the current layer and the
  running sum of layers ``0..k``, so layer-wise inference carries the sum through the same
  per-layer calls as the paper's layer.

Both layers expose a batched *primitive* on gathered neighbour vectors (``forward``) so that
layer-wise full-graph inference can call exactly the same code as training, which goes
through ``forward_block``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pinsage_ray.model.batch import Block, WholeGraph, pooling_weights

__all__ = ["InputProjection", "PinSageConv", "PropagationLayer", "POOLING_MODES"]

#: Supported neighbour aggregations: the paper's importance pooling and the uniform-mean
#: ablation (paper section 4.2 compares the two).
POOLING_MODES = ("importance", "mean")


class InputProjection(nn.Module):
    """Layer-0 item representation ``h^(0) = ReLU(L [x ; log_degree] + b + E[id])``.

    ``x`` are the item features (dense or multi-hot, ``feature_dim`` columns) and ``E`` an
    optional learnable id embedding. With ``feature_dim == 0`` the id embedding plus the
    log degree stand in for features; such a model cannot embed items whose ids were not
    trained (cold start): give cold-start items features instead. With both, the id
    embedding is added to the feature projection before the ReLU.

    Args:
        num_items: size of the item id space (rows of the id embedding).
        feature_dim: number of feature columns; 0 for none.
        hidden_dim: output width.
        use_id_embedding: whether to learn an ``nn.Embedding(num_items, hidden_dim)``.
        id_init_std: initial standard deviation of the id vectors; None = zeros when there
            are features (start as the features model), else ``hidden_dim ** -0.5``.
        activation: apply the ReLU (the paper's layer); False = a linear projection, for
            :class:`PropagationLayer`, whose propagation is linear throughout.

    Raises:
        ValueError: if there would be no input besides the log degree
            (``feature_dim == 0`` and ``use_id_embedding`` false) or a size is invalid.
    """

    def __init__(
        self, num_items: int, feature_dim: int, hidden_dim: int, use_id_embedding: bool,
        id_init_std: float | None = None, activation: bool = True,
    ) -> None:
        super().__init__()
        if feature_dim < 0 or hidden_dim < 1 or num_items < 1:
            raise ValueError(
                f"InputProjection got num_items={num_items}, feature_dim={feature_dim}, "
                f"hidden_dim={hidden_dim}; expected num_items >= 1, feature_dim >= 0, "
                f"hidden_dim >= 1."
            )
        if feature_dim == 0 and not use_id_embedding:
            raise ValueError(
                "InputProjection with feature_dim=0 and use_id_embedding=False would see only "
                "the log degree; pass use_id_embedding=True or provide item features."
            )
        self.num_items = num_items
        self.feature_dim = feature_dim
        self.hidden_dim = hidden_dim
        self.activation = activation
        self.linear = nn.Linear(feature_dim + 1, hidden_dim)
        self.id_embedding: nn.Embedding | None = None
        if use_id_embedding:
            self.id_embedding = nn.Embedding(num_items, hidden_dim)
            if id_init_std is not None:
                nn.init.normal_(self.id_embedding.weight, std=id_init_std)
            elif feature_dim > 0:  # start as the features model; ids learn what it misses
                nn.init.zeros_(self.id_embedding.weight)
            else:
                nn.init.normal_(self.id_embedding.weight, std=hidden_dim**-0.5)

    def forward(
        self,
        node_ids: torch.Tensor | None,
        features: torch.Tensor | None,
        log_degree: torch.Tensor,
    ) -> torch.Tensor:
        """Project raw inputs of ``N`` nodes.

        Args:
            node_ids: ``(N,)`` int64 global item ids (used only with the id embedding);
                None for items without a trained id (cold start): no id term is added;
                a negative entry drops the id term of that row only.
            features: ``(N, feature_dim)`` (any numeric dtype; cast to float), or ``None``
                when ``feature_dim == 0``.
            log_degree: ``(N,)`` float ``log1p(degree)``.

        Returns:
            ``(N, hidden_dim)`` layer-0 vectors (non-negative with ``activation``).
        """
        n = log_degree.shape[0]
        dtype = self.linear.weight.dtype
        if log_degree.dim() != 1:
            raise ValueError(f"log_degree must have shape (N,); got {tuple(log_degree.shape)}.")
        parts = []
        if self.feature_dim > 0:
            if features is None:
                raise ValueError(
                    f"features is None but the model was built with feature_dim="
                    f"{self.feature_dim}; pass a ({n}, {self.feature_dim}) tensor."
                )
            if tuple(features.shape) != (n, self.feature_dim):
                raise ValueError(
                    f"features has shape {tuple(features.shape)}; expected "
                    f"({n}, {self.feature_dim}) (N from log_degree, feature_dim from the model)."
                )
            parts.append(features.to(dtype))
        elif features is not None and features.numel() > 0:
            raise ValueError(
                f"features has shape {tuple(features.shape)} but the model was built with "
                f"feature_dim=0; rebuild it with feature_dim={features.shape[-1]} or pass None."
            )
        parts.append(log_degree.to(dtype).unsqueeze(-1))
        z = self.linear(torch.cat(parts, dim=-1))
        if self.id_embedding is not None and node_ids is not None:
            if tuple(node_ids.shape) != (n,):
                raise ValueError(
                    f"node_ids has shape {tuple(node_ids.shape)}; expected ({n},)."
                )
            z = z + self.id_vectors(node_ids)
        return F.relu(z) if self.activation else z

    def id_vectors(self, node_ids: torch.Tensor) -> torch.Tensor:
        """``(N, hidden_dim)`` id vectors; rows with ``node_ids < 0`` (no trained id) are 0.

        A negative id marks an item without a trained id vector (a cold-start item, or one
        whose id is dropped for this training step, see ``ModelConfig.id_dropout``): it is
        represented by its features and neighbours alone.
        """
        if self.id_embedding is None:
            raise ValueError("id_vectors: this projection has no id embedding.")
        known = node_ids >= 0
        vec = self.id_embedding(node_ids.clamp(min=0))
        return vec * known.unsqueeze(-1).to(vec.dtype)


class NeighborPooling(nn.Module):
    """Importance (or uniform) pooling over a node's neighbours, shared by both layer kinds.

    Args:
        pooling: ``"importance"`` (weighted mean with the given weights, the paper's method) or
            ``"mean"`` (uniform mean over non-padded neighbours; weights ignored).
    """

    def __init__(self, pooling: str = "importance") -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise ValueError(
                f"pooling={pooling!r} is not supported; choose one of {POOLING_MODES}."
            )
        self.pooling = pooling

    def transform_neighbors(self, h: torch.Tensor) -> torch.Tensor:
        """What a node sends its neighbours (subclasses: the paper's ``ReLU(Q h + q)``, or the
        current layer for propagation)."""
        raise NotImplementedError

    def combine(self, h_self: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """A node's next vector from its own vector and its pooled neighbours (subclasses)."""
        raise NotImplementedError

    def forward_block(self, h_src: torch.Tensor, block: Block) -> torch.Tensor:
        """The layer for the destination nodes of one sampled :class:`Block`.

        Args:
            h_src: ``(block.num_src, D)`` vectors of the block's source nodes.
            block: the hop; its destination nodes are the first ``num_dst`` source nodes.

        Returns:
            ``(block.num_dst, D_out)``.
        """
        if h_src.shape[0] != block.num_src:
            raise ValueError(
                f"h_src has {h_src.shape[0]} rows; expected block.num_src = {block.num_src}."
            )
        n_src = self.transform_neighbors(h_src)  # once per source node
        return self.combine(h_src[: block.num_dst], self.pooling_matrix(block, n_src.dtype) @ n_src)

    def forward_whole(self, h: torch.Tensor, graph: WholeGraph) -> torch.Tensor:
        """The layer for every item at once: ``combine(h, P @ transform_neighbors(h))``."""
        return self.combine(h, graph.propagate(self.transform_neighbors(h)))

    def pool(self, n: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Importance (or mean) pooling of transformed neighbour vectors (Algorithm 1, line 2).

        Args:
            n: ``(B, T, hidden_dim)`` transformed neighbour vectors.
            weights: ``(B, T)`` non-negative importance weights (ignored for ``"mean"``).
            mask: ``(B, T)`` bool, true for real neighbours.

        Returns:
            ``(B, hidden_dim)``. Padded entries (``mask`` false) are excluded whatever they
            hold (even NaN); weights are renormalised over real entries; a node with no
            neighbours, or whose real weights sum to 0, gets a zero aggregate.
        """
        n = n.masked_fill(~mask.unsqueeze(-1), 0.0)
        w = self.pooling_weights(weights, mask, n.dtype)
        return torch.bmm(w.unsqueeze(1), n).squeeze(1)  # (B, H)

    def pooling_weights(self, weights: torch.Tensor, mask: torch.Tensor,
                        dtype: torch.dtype) -> torch.Tensor:
        """``(B, T)`` pooling weights: importance (or uniform) over real entries, summing to 1
        per row; 0 at padding, and all 0 for a row without real weight."""
        return pooling_weights(weights, mask, self.pooling, dtype)

    def pooling_matrix(self, block: Block, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Sparse ``(num_dst, num_src)`` matrix whose product with the transformed source
        vectors is :meth:`pool` of the gathered ones (rows = normalised pooling weights).

        One sparse product instead of a ``(num_dst, T, hidden)`` gather, mask and ``bmm``:
        about 3x less time for the aggregation, forward and backward (measured on a Gowalla
        batch), and no ``(num_dst, T, hidden)`` tensor in memory.
        """
        neighbors = block.neighbors
        mask = neighbors >= 0
        w = self.pooling_weights(block.weights, mask, dtype)
        keep = mask & (w > 0)
        rows = torch.arange(block.num_dst, device=neighbors.device).unsqueeze(1)
        index = torch.stack([rows.expand_as(neighbors)[keep], neighbors[keep]])
        return torch.sparse_coo_tensor(index, w[keep], (block.num_dst, block.num_src),
                                       check_invariants=False)


class PinSageConv(NeighborPooling):
    """One CONVOLVE layer (paper Algorithm 1) with importance or mean pooling.

    Parameters: ``Q, q`` = :attr:`neighbor_proj` (``in_dim -> hidden_dim``) and
    ``W, w`` = :attr:`update` (``in_dim + hidden_dim -> out_dim``).

    Args:
        in_dim: width of the incoming node vectors ``h``.
        hidden_dim: width of the transformed neighbour vectors and of the aggregate.
        out_dim: output width.
        pooling: ``"importance"`` (weighted mean with the given weights, the paper's
            method) or ``"mean"`` (uniform mean over non-padded neighbours; weights ignored).
        dropout: dropout probability applied to ``h_self`` and ``h_neighbors`` in training.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        pooling: str = "importance",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(pooling)
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.neighbor_proj = nn.Linear(in_dim, hidden_dim)  # Q, q
        self.update = nn.Linear(in_dim + hidden_dim, out_dim)  # W, w
        self.dropout = nn.Dropout(dropout)

    def transform_neighbors(self, h: torch.Tensor) -> torch.Tensor:
        """Neighbour transform ``ReLU(Q h + q)`` (Algorithm 1, line 1) of any node vectors.

        It depends only on the neighbour itself, so callers that hold all source nodes apply
        it once per node and gather the results, instead of once per (node, neighbour slot):
        ``T`` times less work than transforming gathered neighbours.
        """
        return F.relu(self.neighbor_proj(self.dropout(h)))

    def aggregate(
        self, h_neighbors: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Transform and pool gathered neighbour vectors (Algorithm 1, lines 1-2).

        Args:
            h_neighbors: ``(B, T, in_dim)`` neighbour vectors.
            weights: ``(B, T)`` importance weights; mask: ``(B, T)`` bool.

        Returns:
            ``(B, hidden_dim)`` aggregated neighbourhood vectors (see :meth:`pool`).
        """
        return self.pool(self.transform_neighbors(h_neighbors), weights, mask)

    def combine(self, h_self: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """``normalize(ReLU(W [h_self ; agg] + w))`` (Algorithm 1, lines 3-4)."""
        z = F.relu(self.update(torch.cat([self.dropout(h_self), agg], dim=-1)))
        return F.normalize(z, p=2.0, dim=-1, eps=1e-12)

    def forward(
        self,
        h_self: torch.Tensor,
        h_neighbors: torch.Tensor,
        weights: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """CONVOLVE on already-gathered neighbour vectors.

        Args:
            h_self: ``(B, in_dim)`` the nodes' own previous-layer vectors.
            h_neighbors: ``(B, T, in_dim)`` their neighbours' previous-layer vectors.
            weights: ``(B, T)`` importance weights.
            mask: ``(B, T)`` bool, true for real (non-padded) neighbours.

        Returns:
            ``(B, out_dim)`` L2-normalised vectors (exactly zero where ``ReLU`` zeroed the
            whole pre-activation).
        """
        b = h_self.shape[0]
        if h_self.dim() != 2 or h_self.shape[1] != self.in_dim:
            raise ValueError(
                f"h_self has shape {tuple(h_self.shape)}; expected (B, {self.in_dim})."
            )
        if h_neighbors.dim() != 3 or h_neighbors.shape[0] != b or h_neighbors.shape[2] != self.in_dim:
            raise ValueError(
                f"h_neighbors has shape {tuple(h_neighbors.shape)}; expected "
                f"({b}, T, {self.in_dim})."
            )
        t = h_neighbors.shape[1]
        if tuple(weights.shape) != (b, t) or tuple(mask.shape) != (b, t):
            raise ValueError(
                f"weights {tuple(weights.shape)} and mask {tuple(mask.shape)} must both have "
                f"shape ({b}, {t}) to match h_neighbors."
            )
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor; got {mask.dtype}.")
        return self.combine(h_self, self.aggregate(h_neighbors, weights, mask))


class PropagationLayer(NeighborPooling):
    """Linear propagation over importance neighbourhoods (LightGCN's layer, not the paper's).

    The layer's state is ``[h_k ; s_k]`` (width ``2 * dim``): ``h_k`` the layer-``k`` vector
    and ``s_k = h_0 + ... + h_k`` the running sum the encoder averages into the embedding.
    One layer computes ``h_{k+1} = sum_v alpha_v h_k[v]`` (importance-weighted mean over the
    neighbours ``v``, weights renormalised over real neighbours, exactly as
    :meth:`NeighborPooling.pool`) and ``s_{k+1} = s_k + h_{k+1}``. It has no parameters: the
    only learned parts are the input projection (features and id vectors) and the output
    projection, so every gradient of an item's loss reaches its neighbours' id and feature
    vectors undamped (no ReLU to zero it, no per-hop matrix to rotate it). A node without
    neighbours gets ``h_{k+1} = 0``, i.e. its embedding is its own layer-0 vector.

    Args:
        dim: width ``H`` of ``h_k`` (the state is ``2 * H`` wide).
        pooling: ``"importance"`` or ``"mean"`` (see :class:`NeighborPooling`).
    """

    def __init__(self, dim: int, pooling: str = "importance") -> None:
        super().__init__(pooling)
        if dim < 1:
            raise ValueError(f"PropagationLayer dim={dim}; expected >= 1.")
        self.dim = dim

    @staticmethod
    def initial_state(h0: torch.Tensor) -> torch.Tensor:
        """``[h_0 ; h_0]``: the state before the first layer."""
        return torch.cat([h0, h0], dim=-1)

    def transform_neighbors(self, h: torch.Tensor) -> torch.Tensor:
        """The part of a state that neighbours pool: ``h_k`` (the identity on it)."""
        return h[..., : self.dim]

    def combine(self, h_self: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """``[agg ; s_k + agg]`` from the node's state ``[h_k ; s_k]`` and the pooled ``agg``."""
        return torch.cat([agg, h_self[..., self.dim:] + agg], dim=-1)

    def forward(
        self,
        h_self: torch.Tensor,
        h_neighbors: torch.Tensor,
        weights: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """One propagation step on gathered neighbour states.

        Args:
            h_self: ``(B, 2 * dim)`` the nodes' states.
            h_neighbors: ``(B, T, 2 * dim)`` their neighbours' states (or ``(B, T, dim)``
                already transformed).
            weights: ``(B, T)`` importance weights; mask: ``(B, T)`` bool, real neighbours.

        Returns:
            ``(B, 2 * dim)`` next states.
        """
        if h_self.dim() != 2 or h_self.shape[1] != 2 * self.dim:
            raise ValueError(
                f"h_self has shape {tuple(h_self.shape)}; expected (B, {2 * self.dim}) "
                f"(a [h_k ; s_k] state)."
            )
        return self.combine(h_self, self.pool(self.transform_neighbors(h_neighbors), weights,
                                              mask))
