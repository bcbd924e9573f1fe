"""Ranking losses: PinSage's max-margin loss (paper section 3.3) and a sampled softmax.

For a positive pair ``(q, i)`` and negatives ``n_k`` the paper minimises::

    J(z_q, z_i) = E_{n_k ~ P_n(q)} max{0, z_q . z_nk - z_q . z_i + Delta}

Negatives come in two kinds (section 3.3, "Sampling negative items" / "hard negatives"):
``M`` *shared* negatives sampled once per mini-batch and used against every query, and up to
``H`` per-query *hard* negatives (the curriculum of :mod:`pinsage_ray.model.schedule`).

Averaging, exactly: every (query, negative) pair contributes one hinge term. Query ``b``
has ``M`` shared terms and ``sum_h hard_mask[b, h]`` hard terms. The loss is the sum of all
terms divided by their count, ``B * M + hard_mask.sum()``: a plain mean over every
constraint in the batch, so a hard negative weighs as much as a shared one and padded
(masked) hard negatives count for nothing.

Scores are dot products; on the encoder's L2-normalised embeddings that is cosine
similarity, so ``margin`` lives on the ``[-2, 2]`` scale of score differences.

:func:`sampled_softmax_loss` is an alternative objective, not the paper's: the same positive
and the same negatives, but a cross-entropy over ``[s(q,p), s(q,n_1), ...] / temperature``
with the positive as the target. Every negative pulls in proportion to its softmax weight
instead of only while it violates the margin, so the loss keeps ranking the positive above
*all* sampled items rather than stopping at "margin above each". On MovieLens it measured
better than the hinge (``docs/quality.md``). ``shared_mask`` removes shared negatives that
happen to be a query's own positive (an accidental hit: the same logit as the target), so the
loss never pushes a positive away from its query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["score", "max_margin_loss", "sampled_softmax_loss", "contrastive_loss",
           "margin_stats"]


def score(query: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Dot-product scores of queries against a shared set of items.

    Args:
        query: ``(B, D)`` or ``(D,)``.
        items: ``(M, D)``.

    Returns:
        ``(B, M)`` (or ``(M,)`` for a single query).
    """
    if items.dim() != 2 or query.shape[-1] != items.shape[-1]:
        raise ValueError(
            f"score: query {tuple(query.shape)} and items {tuple(items.shape)} must end in the "
            f"same dimension D, with items of shape (M, D)."
        )
    return query @ items.T


def _hinge_terms(
    query: torch.Tensor,
    positive: torch.Tensor,
    shared_negatives: torch.Tensor,
    hard_negatives: torch.Tensor | None,
    hard_mask: torch.Tensor | None,
    margin: float,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Return ``(shared (B, M), hard (B, H) or None, hard_mask (B, H) or None)``.

    Entries are the un-clamped ``s(q, n) - s(q, p) + margin``; hard entries at masked
    positions are set to ``-inf`` so they can never count as violated.
    """
    if query.dim() != 2:
        raise ValueError(f"query has shape {tuple(query.shape)}; expected (B, D).")
    b, d = query.shape
    if tuple(positive.shape) != (b, d):
        raise ValueError(
            f"positive has shape {tuple(positive.shape)}; expected ({b}, {d}) like query."
        )
    if shared_negatives.dim() != 2 or shared_negatives.shape[1] != d:
        raise ValueError(
            f"shared_negatives has shape {tuple(shared_negatives.shape)}; expected (M, {d})."
        )
    pos = (query * positive).sum(-1, keepdim=True)  # (B, 1)
    shared = score(query, shared_negatives) - pos + margin  # (B, M)
    if hard_negatives is None:
        if hard_mask is not None:
            raise ValueError("hard_mask was given without hard_negatives; pass both or neither.")
        return shared, None, None
    if hard_negatives.dim() != 3 or hard_negatives.shape[0] != b or hard_negatives.shape[2] != d:
        raise ValueError(
            f"hard_negatives has shape {tuple(hard_negatives.shape)}; expected ({b}, H, {d})."
        )
    h = hard_negatives.shape[1]
    if hard_mask is None:
        hard_mask = torch.ones(b, h, dtype=torch.bool, device=query.device)
    elif tuple(hard_mask.shape) != (b, h) or hard_mask.dtype != torch.bool:
        raise ValueError(
            f"hard_mask has shape {tuple(hard_mask.shape)} and dtype {hard_mask.dtype}; "
            f"expected a bool tensor of shape ({b}, {h})."
        )
    # Zero padded rows first so garbage (even NaN) there cannot leak into values or grads.
    hard_negatives = hard_negatives.masked_fill(~hard_mask.unsqueeze(-1), 0.0)
    hard_scores = torch.bmm(hard_negatives, query.unsqueeze(-1)).squeeze(-1)  # (B, H)
    hard = (hard_scores - pos + margin).masked_fill(~hard_mask, float("-inf"))
    return shared, hard, hard_mask


def _check_shared_mask(shared_mask: torch.Tensor, shared: torch.Tensor) -> None:
    if tuple(shared_mask.shape) != tuple(shared.shape) or shared_mask.dtype != torch.bool:
        raise ValueError(
            f"shared_mask has shape {tuple(shared_mask.shape)} and dtype {shared_mask.dtype}; "
            f"expected a bool tensor of shape {tuple(shared.shape)}."
        )


def max_margin_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    shared_negatives: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    hard_mask: torch.Tensor | None = None,
    margin: float = 0.1,
) -> torch.Tensor:
    """Mean hinge loss over every (query, negative) pair; see the module docstring.

    Args:
        query: ``(B, D)`` query embeddings ``z_q``.
        positive: ``(B, D)`` embeddings of each query's positive item ``z_i``.
        shared_negatives: ``(M, D)`` negatives shared by all queries (``M`` may be 0 if
            hard negatives are given).
        hard_negatives: ``(B, H, D)`` per-query hard negatives, or ``None``.
        hard_mask: ``(B, H)`` bool, true for real hard negatives (``None``: all real).
        margin: the margin ``Delta``.

    Returns:
        Scalar tensor: ``sum(max(0, s(q,n) - s(q,p) + margin)) / (B*M + hard_mask.sum())``.

    Raises:
        ValueError: on shape mismatches, or when the batch has no (query, negative) pair.
    """
    shared, hard, mask = _hinge_terms(
        query, positive, shared_negatives, hard_negatives, hard_mask, margin
    )
    total = F.relu(shared).sum()
    count = shared.numel()
    if hard is not None:
        # relu(-inf) = 0 with zero gradient, so masked entries add nothing.
        total = total + F.relu(hard).sum()
        count_hard = mask.sum()
        if shared.numel() == 0 and not bool(mask.any()):
            raise ValueError("max_margin_loss: no shared negatives and every hard negative is masked.")
        return total / (count + count_hard)
    if count == 0:
        raise ValueError(
            "max_margin_loss: no (query, negative) pairs (B = 0 or M = 0 and no hard "
            "negatives); sample at least one negative."
        )
    return total / count


def sampled_softmax_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    shared_negatives: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    hard_mask: torch.Tensor | None = None,
    temperature: float = 0.05,
    shared_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of each positive against its negatives; see the module docstring.

    Args:
        query, positive, shared_negatives, hard_negatives, hard_mask: as for
            :func:`max_margin_loss`.
        temperature: logits are scores divided by this (> 0); smaller is sharper.
        shared_mask: ``(B, M)`` bool, false where shared negative ``m`` must not count for
            query ``b`` (e.g. it is ``b``'s positive); ``None``: all count.

    Returns:
        Scalar tensor: ``mean_b -log softmax([s(q,p), s(q,n)...] / temperature)[0]``.

    Raises:
        ValueError: on shape mismatches or a temperature that is not > 0.
    """
    if not temperature > 0:
        raise ValueError(f"sampled_softmax_loss: temperature={temperature!r}; must be > 0")
    # margin 0 makes the hinge terms exactly s(q, n) - s(q, p): the logits relative to the
    # positive, which is all a softmax with the positive as target depends on.
    shared, hard, _ = _hinge_terms(query, positive, shared_negatives, hard_negatives,
                                   hard_mask, 0.0)
    if shared_mask is not None:
        _check_shared_mask(shared_mask, shared)
        shared = shared.masked_fill(~shared_mask, float("-inf"))
    parts = [torch.zeros_like(shared[:, :1]), shared]  # the positive's logit relative to itself
    if hard is not None:
        parts.append(hard)  # masked hard negatives are -inf: weight 0
    logits = torch.cat(parts, dim=1) / temperature
    # -log softmax(logits)[0] = logsumexp(logits) - logits[0], and logits[0] = 0.
    return torch.logsumexp(logits, dim=1).mean()


def contrastive_loss(
    query: torch.Tensor,
    positive: torch.Tensor,
    shared_negatives: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    hard_mask: torch.Tensor | None = None,
    margin: float = 0.4,
    negative_weight: float = 1.0,
    shared_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cosine contrastive loss (SimpleX, Mao et al., CIKM 2021), not the paper's.

    ``mean_b [(1 - s(q,p)) + negative_weight * mean_n max(0, s(q,n) - margin)]``: the positive
    is pulled to cosine 1 on its own, and a negative costs only while its cosine to the query
    is above ``margin``, so the many easy negatives of a large shared set add nothing. The mean
    over negatives is over the unmasked ones (shared and hard alike).

    Args:
        query, positive, shared_negatives, hard_negatives, hard_mask, shared_mask: as for
            :func:`sampled_softmax_loss`.
        margin: cosine above which a negative is penalised.
        negative_weight: weight of the negative term.

    Raises:
        ValueError: on shape mismatches or a negative ``negative_weight``.
    """
    if not negative_weight >= 0:
        raise ValueError(f"contrastive_loss: negative_weight={negative_weight!r}; must be >= 0")
    # hinge terms at margin 0 are s(q, n) - s(q, p): add s(q, p) back for the raw cosines
    shared, hard, mask = _hinge_terms(query, positive, shared_negatives, hard_negatives,
                                      hard_mask, 0.0)
    pos = (query * positive).sum(-1, keepdim=True)
    if shared_mask is None:
        shared_mask = torch.ones_like(shared, dtype=torch.bool)
    _check_shared_mask(shared_mask, shared)
    cost = (F.relu(shared + pos - margin) * shared_mask).sum(1)
    count = shared_mask.sum(1)
    if hard is not None:  # masked hard entries are -inf: relu gives 0 with zero gradient
        cost = cost + F.relu(hard + pos - margin).sum(1)
        count = count + mask.sum(1)
    neg = cost / count.clamp(min=1)
    return ((1 - pos.squeeze(1)) + negative_weight * neg).mean()


@torch.no_grad()
def margin_stats(
    query: torch.Tensor,
    positive: torch.Tensor,
    shared_negatives: torch.Tensor,
    hard_negatives: torch.Tensor | None = None,
    hard_mask: torch.Tensor | None = None,
    margin: float = 0.1,
) -> dict[str, float]:
    """Logging statistics for the same inputs as :func:`max_margin_loss`.

    Returns:
        ``{"violated_fraction", "violated_fraction_shared", "violated_fraction_hard",
        "mean_pos_score", "mean_shared_neg_score", "mean_hard_neg_score"}``; a constraint
        is violated when ``s(q,n) - s(q,p) + margin > 0`` (it contributes to the loss).
        Fractions and means over empty sets are ``nan``.
    """
    shared, hard, mask = _hinge_terms(
        query, positive, shared_negatives, hard_negatives, hard_mask, margin
    )
    nan = float("nan")
    pos = (query * positive).sum(-1)
    n_shared = shared.numel()
    v_shared = int((shared > 0).sum())
    stats = {
        "mean_pos_score": float(pos.mean()) if pos.numel() else nan,
        "mean_shared_neg_score": float(score(query, shared_negatives).mean()) if n_shared else nan,
        "violated_fraction_shared": v_shared / n_shared if n_shared else nan,
        "violated_fraction_hard": nan,
        "mean_hard_neg_score": nan,
    }
    n_hard = v_hard = 0
    if hard is not None:
        n_hard = int(mask.sum())
        v_hard = int((hard > 0).sum())
        if n_hard:
            stats["violated_fraction_hard"] = v_hard / n_hard
            hard_scores = torch.bmm(hard_negatives, query.unsqueeze(-1)).squeeze(-1)
            stats["mean_hard_neg_score"] = float(hard_scores[mask].mean())
    n_all = n_shared + n_hard
    stats["violated_fraction"] = (v_shared + v_hard) / n_all if n_all else nan
    return stats
