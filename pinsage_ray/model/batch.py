"""Data contract between the neighbourhood sampler and the PinSage encoder.

A PinSage mini-batch is a K-hop computation graph (paper section 3.2, Algorithm 2, and the
importance-based neighbourhoods of section 3.1). It is stored DGL-style, one
:class:`Block` per hop, with the destination nodes of every block being a *prefix* of its
source nodes::

    layer-0 nodes (N0)  --blocks[0]-->  layer-1 nodes (N1)  -- ... -->  layer-K nodes (NK)

``blocks[k].num_src == N_k`` and ``blocks[k].num_dst == N_{k+1}``; node ``j`` of layer
``k + 1`` is node ``j`` of layer ``k``, so a node's own previous-layer vector is simply
``h_src[j]``. The K-th layer nodes are the ones the encoder returns embeddings for.

:class:`WholeGraph` is the other input the encoder takes: every item at once, with one sparse
propagation matrix for all hops (no per-batch blocks), for graphs whose item table fits in
memory; training then computes all embeddings per step with one sparse product per hop.

This module holds only plain dataclasses of tensors (no Ray, no sampling logic), so the
sampler, the trainer and layer-wise inference can all share it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch

__all__ = ["Block", "EncoderInput", "WholeGraph"]


def _is_float(t: torch.Tensor) -> bool:
    return t.dtype.is_floating_point


@dataclass
class Block:
    """One hop of a K-hop computation graph.

    Attributes:
        neighbors: ``(num_dst, T)`` int64; indices into this block's *source* node list,
            ``-1`` marks padding (nodes with fewer than ``T`` neighbours).
        weights: ``(num_dst, T)`` float; importance weights (normalised random-walk visit
            counts, paper section 3.1). Expected to be 0 at padding; padded entries are
            ignored by the layers whatever their value.
        num_src: number of source nodes. The destination nodes are the first ``num_dst``
            source nodes, so ``num_src >= num_dst``.
    """

    neighbors: torch.Tensor
    weights: torch.Tensor
    num_src: int

    @property
    def num_dst(self) -> int:
        """Number of destination nodes (rows of ``neighbors``)."""
        return int(self.neighbors.shape[0])

    @property
    def fanout(self) -> int:
        """Padded neighbourhood size ``T`` (columns of ``neighbors``)."""
        return int(self.neighbors.shape[1]) if self.neighbors.dim() == 2 else 0

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Block":
        """Return a copy with both tensors on ``device``."""
        return Block(
            neighbors=self.neighbors.to(device, non_blocking=non_blocking),
            weights=self.weights.to(device, non_blocking=non_blocking),
            num_src=self.num_src,
        )

    def validate(self, name: str = "Block") -> None:
        """Check dtypes, shapes and value ranges; raise ``ValueError`` on the first problem.

        Checks: ``neighbors`` is a 2-D int64 tensor; ``weights`` is a floating tensor of the
        same shape on the same device; ``num_src`` is an int ``>= num_dst``; every
        neighbour index is ``-1`` or in ``[0, num_src)``; weights at non-padded positions
        are finite and ``>= 0``. (Weights at padded positions are not checked: they are
        ignored.) This reads tensor values, so it synchronises with the device; call it in
        tests and debugging, not in the training hot loop.

        Args:
            name: how the block is called in error messages (e.g. ``"blocks[1]"``).
        """
        nb, w = self.neighbors, self.weights
        if not isinstance(nb, torch.Tensor) or nb.dim() != 2 or nb.dtype != torch.int64:
            desc = f"{tuple(nb.shape)} {nb.dtype}" if isinstance(nb, torch.Tensor) else type(nb).__name__
            raise ValueError(
                f"{name}.neighbors must be a 2-D int64 tensor (num_dst, T); got {desc}."
            )
        if not isinstance(w, torch.Tensor) or not _is_float(w):
            desc = str(w.dtype) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ValueError(f"{name}.weights must be a floating-point tensor; got {desc}.")
        if tuple(w.shape) != tuple(nb.shape):
            raise ValueError(
                f"{name}.weights has shape {tuple(w.shape)}; expected the shape of "
                f"{name}.neighbors, {tuple(nb.shape)}."
            )
        if w.device != nb.device:
            raise ValueError(
                f"{name}.weights is on {w.device} but {name}.neighbors is on {nb.device}; "
                f"move the block with .to(device)."
            )
        if isinstance(self.num_src, bool) or not isinstance(self.num_src, int):
            raise ValueError(f"{name}.num_src must be an int; got {self.num_src!r}.")
        if self.num_src < self.num_dst:
            raise ValueError(
                f"{name}.num_src = {self.num_src} is smaller than num_dst = {self.num_dst}; "
                f"destination nodes must be a prefix of the source nodes, so expected "
                f"num_src >= num_dst."
            )
        if nb.numel() == 0:
            return
        lo, hi = int(nb.min()), int(nb.max())
        if lo < -1 or hi >= self.num_src:
            raise ValueError(
                f"{name}.neighbors has values in [{lo}, {hi}]; expected -1 (padding) or "
                f"indices in [0, {self.num_src}) (num_src = {self.num_src})."
            )
        valid_w = w[nb >= 0]
        if valid_w.numel() > 0:
            if not bool(torch.isfinite(valid_w).all()):
                raise ValueError(f"{name}.weights contains NaN/inf at non-padded positions.")
            if float(valid_w.min()) < 0:
                raise ValueError(
                    f"{name}.weights has a negative value ({float(valid_w.min()):.4g}) at a "
                    f"non-padded position; importance weights must be >= 0."
                )


@dataclass
class EncoderInput:
    """Everything :class:`~pinsage_ray.model.encoder.PinSageEncoder` needs for one batch.

    Attributes:
        node_ids: ``(N0,)`` int64 global item ids of the layer-0 (input) nodes.
        features: ``(N0, F)`` item features (dense or multi-hot), or ``None`` when the model
            has no features (``feature_dim == 0``).
        log_degree: ``(N0,)`` float, ``log1p(item degree)``.
        blocks: ``K`` blocks; ``blocks[0].num_src == N0``,
            ``blocks[k].num_src == blocks[k-1].num_dst``. The encoder returns embeddings for
            the ``blocks[K-1].num_dst`` output nodes, which are the first nodes of
            ``node_ids``.
    """

    node_ids: torch.Tensor
    features: torch.Tensor | None
    log_degree: torch.Tensor
    blocks: list[Block]

    @property
    def num_input_nodes(self) -> int:
        """``N0``, the number of layer-0 nodes."""
        return int(self.node_ids.shape[0])

    @property
    def num_output_nodes(self) -> int:
        """``N_K``, the number of nodes the encoder returns embeddings for."""
        return self.blocks[-1].num_dst if self.blocks else self.num_input_nodes

    @property
    def output_node_ids(self) -> torch.Tensor:
        """``(N_K,)`` global ids of the output nodes (a prefix of ``node_ids``)."""
        return self.node_ids[: self.num_output_nodes]

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "EncoderInput":
        """Return a copy with every tensor (blocks included) on ``device``."""
        return EncoderInput(
            node_ids=self.node_ids.to(device, non_blocking=non_blocking),
            features=None
            if self.features is None
            else self.features.to(device, non_blocking=non_blocking),
            log_degree=self.log_degree.to(device, non_blocking=non_blocking),
            blocks=[b.to(device, non_blocking=non_blocking) for b in self.blocks],
        )

    def validate(self, num_items: int | None = None, feature_dim: int | None = None) -> None:
        """Check shapes and the block chain; raise ``ValueError`` on the first problem.

        Args:
            num_items: if given, every ``node_ids`` value must lie in ``[0, num_items)``.
            feature_dim: if given, ``features`` must have that many columns (``None`` or a
                zero-column tensor when it is 0).
        """
        ids = self.node_ids
        if not isinstance(ids, torch.Tensor) or ids.dim() != 1 or ids.dtype != torch.int64:
            desc = f"{tuple(ids.shape)} {ids.dtype}" if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"EncoderInput.node_ids must be a 1-D int64 tensor; got {desc}.")
        n0 = self.num_input_nodes
        ld = self.log_degree
        if not isinstance(ld, torch.Tensor) or not _is_float(ld) or tuple(ld.shape) != (n0,):
            desc = f"{tuple(ld.shape)} {ld.dtype}" if isinstance(ld, torch.Tensor) else type(ld).__name__
            raise ValueError(
                f"EncoderInput.log_degree must be a float tensor of shape ({n0},) (one per "
                f"node id); got {desc}."
            )
        feats = self.features
        if feats is not None:
            if feats.dim() != 2 or feats.shape[0] != n0:
                raise ValueError(
                    f"EncoderInput.features has shape {tuple(feats.shape)}; expected "
                    f"({n0}, F), one row per node id."
                )
        if feature_dim is not None:
            got = 0 if feats is None else int(feats.shape[1])
            if got != feature_dim:
                raise ValueError(
                    f"EncoderInput.features has {got} columns; the model expects "
                    f"feature_dim = {feature_dim}."
                )
        if num_items is not None and n0 > 0:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= num_items:
                raise ValueError(
                    f"EncoderInput.node_ids has values in [{lo}, {hi}]; expected item ids in "
                    f"[0, {num_items}) (num_items = {num_items})."
                )
        expected_src = n0
        for k, block in enumerate(self.blocks):
            if block.num_src != expected_src:
                where = "len(node_ids)" if k == 0 else f"blocks[{k - 1}].num_dst"
                raise ValueError(
                    f"blocks[{k}].num_src = {block.num_src}; expected {expected_src} "
                    f"(= {where})."
                )
            block.validate(name=f"blocks[{k}]")
            expected_src = block.num_dst


def pooling_weights(weights: torch.Tensor, mask: torch.Tensor, pooling: str,
                    dtype: torch.dtype) -> torch.Tensor:
    """``(B, T)`` pooling weights: importance (``weights``) or uniform (``"mean"``) over the
    real entries (``mask``), summing to 1 per row; 0 at padding, and all 0 for a row without
    real weight. The layers' pooling and :class:`WholeGraph`'s matrix both use it."""
    if pooling == "importance":
        w = weights.to(dtype).masked_fill(~mask, 0.0)
    else:
        w = mask.to(dtype)
    total = w.sum(dim=1, keepdim=True)
    # Where total == 0 every weight is 0 too; dividing by 1 keeps them (and their gradient)
    # finite.
    return w / torch.where(total > 0, total, torch.ones_like(total))


class _Propagate(torch.autograd.Function):
    """``P @ h`` whose backward is ``P^T @ grad`` with a precomputed CSR transpose (torch's
    own sparse backward transposes ``P`` on every call: about 2x slower per step)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, matrix: torch.Tensor,  # type: ignore[override]
                matrix_t: torch.Tensor) -> torch.Tensor:
        ctx.matrix_t = matrix_t
        return matrix @ h

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return ctx.matrix_t @ grad, None, None


@dataclass
class WholeGraph:
    """Every item's encoder input and one propagation matrix shared by all hops.

    Attributes:
        node_ids: ``(N,)`` int64 item ids, ``-1`` for items without a trained id.
        features: ``(N, F)`` or ``None``.
        log_degree: ``(N,)`` float ``log1p(degree)``.
        matrix: ``(N, N)`` sparse CSR; row ``u`` holds ``u``'s pooling weights (summing to 1
            over its real neighbours, empty for an item without neighbours).
        matrix_t: its transpose (CSR), for the backward pass.
    """

    node_ids: torch.Tensor
    features: torch.Tensor | None
    log_degree: torch.Tensor
    matrix: torch.Tensor
    matrix_t: torch.Tensor

    @property
    def num_output_nodes(self) -> int:
        return int(self.node_ids.shape[0])

    @classmethod
    def from_neighbors(cls, node_ids: torch.Tensor, features: torch.Tensor | None,
                       log_degree: torch.Tensor, nb_ids: torch.Tensor, nb_weights: torch.Tensor,
                       pooling: str = "importance") -> "WholeGraph":
        """Build from an ``(N, T)`` neighbour table (``-1`` pads) and its importance weights;
        ``pooling="mean"`` weighs real neighbours equally, as the layers' pooling does."""
        mask = nb_ids >= 0
        w = pooling_weights(nb_weights, mask, pooling, torch.float32)
        keep = mask & (w > 0)
        n = int(nb_ids.shape[0])
        crow = torch.zeros(n + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(keep.sum(dim=1), 0)
        with warnings.catch_warnings():  # "sparse CSR support is in beta": it is used as is
            warnings.simplefilter("ignore", UserWarning)
            matrix = torch.sparse_csr_tensor(crow, nb_ids[keep], w[keep], (n, n),
                                             check_invariants=False)
            matrix_t = matrix.to_sparse_coo().t().coalesce().to_sparse_csr()
        return cls(node_ids, features, log_degree, matrix, matrix_t)

    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        """``matrix @ h`` (``(N, D)``), differentiable in ``h``."""
        return _Propagate.apply(h, self.matrix, self.matrix_t)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "WholeGraph":
        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=non_blocking)
        return WholeGraph(mv(self.node_ids), mv(self.features), mv(self.log_degree),
                          mv(self.matrix), mv(self.matrix_t))
