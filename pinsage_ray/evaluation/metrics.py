"""Ranking metrics shared by every evaluation protocol in :mod:`pinsage_ray.evaluation`.

Everything here is pure numpy/torch and works on one chunk of queries at a time, so callers
can stream ``(Q, N)`` score blocks through it and never hold the full query x item matrix.

Conventions used throughout (and tested by hand in ``tests/evaluation/test_metrics.py``):

* Higher score = better. Ranks are **1-based**.
* **Ties** are broken deterministically by item index: among items with equal scores the one
  with the lower index ranks first. This is exactly the order of a *stable* descending sort.
* **Excluded** items (e.g. a user's training items) are removed from the candidate list before
  ranking. For :func:`rank_of_targets` a target that is itself excluded is *kept*: it is still
  ranked, only the other excluded items are ignored.
* NaN scores are rejected with a ``ValueError`` (they have no place in a total order).

Single-relevant metrics (:func:`hit_rate_at_k`, :func:`mrr`, :func:`ndcg_at_k_single`,
:func:`paper_mrr`) take the ranks returned by :func:`rank_of_targets`. Multi-relevant metrics
(:func:`recall_ndcg_at_k`) follow the LightGCN (He et al., SIGIR 2020) evaluation code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]
ExcludeLike = Union[None, np.ndarray, torch.Tensor, Sequence[np.ndarray]]


def _as_scores(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a 2-D floating numpy array (no copy when already one)."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    if not isinstance(scores, np.ndarray):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(scores).__name__}.")
    if scores.ndim != 2:
        raise ValueError(f"{name} must have shape (Q, N); got shape {scores.shape}. Reshape it.")
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float32)
    if np.isnan(scores).any():
        raise ValueError(f"{name} contains NaN; replace NaN scores (e.g. with -inf) before ranking.")
    return scores


def _exclude_entries(exclude: ExcludeLike, q: int, n: int) -> tuple[np.ndarray, np.ndarray] | np.ndarray | None:
    """Normalise ``exclude``: None, a (Q, N) bool numpy mask, or unique (rows, cols) index pairs."""
    if exclude is None:
        return None
    if isinstance(exclude, (np.ndarray, torch.Tensor)) and exclude.ndim == 2:
        m = exclude.detach().cpu().numpy() if isinstance(exclude, torch.Tensor) else exclude
        if m.shape != (q, n) or m.dtype != np.bool_:
            raise ValueError(
                f"exclude mask must be bool with shape {(q, n)}; got dtype {m.dtype}, "
                f"shape {m.shape}. Pass a matching bool mask or a list of index arrays."
            )
        return m
    if len(exclude) != q:
        raise ValueError(
            f"exclude has {len(exclude)} index arrays but scores have {q} rows; pass one "
            "(possibly empty) index array per query row."
        )
    lens = np.fromiter((np.size(e) for e in exclude), dtype=np.int64, count=q)
    if lens.sum() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    cols = np.concatenate([np.asarray(e, dtype=np.int64).ravel() for e in exclude])
    if cols.min() < 0 or cols.max() >= n:
        raise ValueError(f"exclude holds item index {int(cols.min())}..{int(cols.max())}, outside [0, {n}).")
    keys = np.unique(np.repeat(np.arange(q, dtype=np.int64), lens) * n + cols)  # duplicates count once
    return keys // n, keys % n


def rank_of_targets(scores: ArrayLike, targets: ArrayLike, exclude: ExcludeLike = None) -> np.ndarray:
    """1-based rank of one target item per query row.

    ``rank[q] = 1 + #{j : j != t, j not excluded, s[q, j] > s[q, t] or (s[q, j] == s[q, t] and
    j < t)}`` with ``t = targets[q]``: an item with an equal score ranks ahead of the target iff
    its index is lower (the order of a stable descending sort). Excluded items never count; a
    target that is itself in ``exclude`` is kept and ranked normally.

    Args:
        scores: (Q, N) float scores, numpy or torch; one row per query.
        targets: (Q,) int item index of the held-out item per row.
        exclude: None, a (Q, N) bool mask, or a list of Q integer index arrays of items to drop.

    Returns:
        (Q,) int64 numpy array of ranks in ``[1, N]``.
    """
    s = _as_scores(scores)
    q, n = s.shape
    t = (targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets))
    t = t.astype(np.int64).reshape(-1)
    if t.size != q:
        raise ValueError(f"targets has {t.size} entries but scores has {q} rows; pass one target per row.")
    if q and (t.min() < 0 or t.max() >= n):
        raise ValueError(f"targets must lie in [0, {n}); got range {int(t.min())}..{int(t.max())}.")
    rows = np.arange(q)
    st = s[rows, t][:, None]
    ahead = s > st
    ahead |= (s == st) & (np.arange(n)[None, :] < t[:, None])
    ex = _exclude_entries(exclude, q, n)
    if isinstance(ex, np.ndarray):
        ahead &= ~ex
    count = np.count_nonzero(ahead, axis=1)
    if isinstance(ex, tuple) and ex[0].size:
        er, ec = ex
        count -= np.bincount(er[ahead[er, ec]], minlength=q)
    return (count + 1).astype(np.int64)


def topk_excluding(scores: ArrayLike, k: int, exclude: ExcludeLike = None) -> np.ndarray:
    """Indices of the ``k`` best items per row, excluded items masked to ``-inf``.

    Order: descending score, ties broken by lower index (identical to the first ``k`` entries
    of a stable descending argsort of the masked scores). If a row has fewer than ``k``
    non-excluded items, the tail is filled with ``-inf`` items (excluded ones included) in
    index order; items whose original score is ``-inf`` are indistinguishable from excluded ones.

    Args:
        scores: (Q, N) float scores, numpy or torch (not modified).
        k: number of items to return, ``1 <= k <= N``.
        exclude: None, a (Q, N) bool mask, or a list of Q integer index arrays.

    Returns:
        (Q, k) int64 numpy array of item indices.
    """
    s = _as_scores(scores)
    q, n = s.shape
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}] (number of items); got k={k}.")
    ex = _exclude_entries(exclude, q, n)
    if ex is not None:
        s = s.copy()
        if isinstance(ex, tuple):
            s[ex[0], ex[1]] = -np.inf
        else:
            s[ex] = -np.inf
    if q == 0:
        return np.zeros((0, k), dtype=np.int64)
    if not (s.flags.writeable and s.flags.c_contiguous):
        s = np.ascontiguousarray(s).copy()
    vals, idx = torch.topk(torch.from_numpy(s), k, dim=1)  # exact set up to ties at the k-th value
    vals, idx = vals.numpy(), idx.numpy().astype(np.int64)
    thr = vals[:, -1:]
    need = k - np.count_nonzero(vals > thr, axis=1)  # slots left for items equal to the threshold
    n_equal = np.count_nonzero(s == thr, axis=1)
    for r in np.flatnonzero(n_equal > need):  # more tied items than slots: lowest indices win
        tied = np.flatnonzero(s[r] == thr[r, 0])[: need[r]]
        idx[r] = np.concatenate([idx[r][vals[r] > thr[r, 0]], tied])
    idx.sort(axis=1)  # ascending index, then a stable sort by descending score
    order = np.argsort(-np.take_along_axis(s, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1)


def _ranks(ranks: ArrayLike) -> np.ndarray:
    r = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise ValueError("ranks is empty; a metric over zero queries is undefined.")
    if r.min() < 1:
        raise ValueError(f"ranks must be 1-based (>= 1); got minimum {r.min()}.")
    return r


def hit_rate_at_k(ranks: ArrayLike, k: int) -> float:
    """Fraction of queries whose target rank is ``<= k``.

    Args:
        ranks: (Q,) 1-based ranks.
        k: cut-off.
    """
    return float(np.mean(_ranks(ranks) <= k))


def mrr(ranks: ArrayLike) -> float:
    """Mean reciprocal rank over the full ranking: ``mean(1 / rank)`` (no cut-off).

    Args:
        ranks: (Q,) 1-based ranks.
    """
    return float(np.mean(1.0 / _ranks(ranks)))


def ndcg_at_k_single(ranks: ArrayLike, k: int) -> float:
    """NDCG@k with exactly one relevant item per query.

    Per query ``1 / log2(rank + 1)`` if ``rank <= k`` else 0 (IDCG = 1), averaged.

    Args:
        ranks: (Q,) 1-based ranks.
        k: cut-off.
    """
    r = _ranks(ranks)
    return float(np.mean(np.where(r <= k, 1.0 / np.log2(r + 1.0), 0.0)))


def paper_mrr(ranks: ArrayLike, scale: float = 100.0, rounding: str = "ceil") -> float:
    """PinSage's scaled MRR (Ying et al., KDD 2018, Sec. 4.2, Eq. 2).

    The paper defines ``MRR = 1/n * sum 1 / ceil(R / 100)``: ranks are bucketed in blocks of
    ``scale``, so every rank in ``1..100`` scores 1, ``101..200`` scores 1/2, and so on
    (``rounding="ceil"``, the default). ``rounding="none"`` gives the un-bucketed variant
    ``mean(1 / max(1, R / scale))`` with ``R / scale`` as a float.

    Args:
        ranks: (Q,) 1-based ranks.
        scale: rank scaling factor (100 in the paper).
        rounding: ``"ceil"`` (paper) or ``"none"``.
    """
    if scale <= 0:
        raise ValueError(f"scale must be > 0; got {scale}.")
    r = _ranks(ranks) / scale
    if rounding == "ceil":
        denom = np.ceil(r - 1e-12 * r)  # guard against 200/100 -> 2.0000000001
    elif rounding == "none":
        denom = np.maximum(1.0, r)
    else:
        raise ValueError(f"rounding must be 'ceil' or 'none'; got {rounding!r}.")
    return float(np.mean(1.0 / np.maximum(denom, 1.0)))


def recall_ndcg_at_k(
    topk_indices: ArrayLike, relevant: Sequence[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-user Recall@k and NDCG@k with several relevant items (LightGCN definitions).

    With ``hit_p = 1`` if the item at 0-based position ``p`` of the top-k list is relevant:
    ``recall = sum_p hit_p / |relevant|``, ``DCG = sum_p hit_p / log2(p + 2)``,
    ``IDCG = sum_{p < min(|relevant|, k)} 1 / log2(p + 2)``, ``ndcg = DCG / IDCG``.
    Duplicate entries in a relevant array count once.

    Args:
        topk_indices: (U, k) int item indices, best first (e.g. from :func:`topk_excluding`).
        relevant: U integer arrays, the relevant (held-out) items of each user; none may be empty.

    Returns:
        ``(recall, ndcg)``, two (U,) float64 numpy arrays.
    """
    top = np.asarray(topk_indices, dtype=np.int64)
    if top.ndim != 2:
        raise ValueError(f"topk_indices must have shape (U, k); got shape {top.shape}.")
    u, k = top.shape
    if len(relevant) != u:
        raise ValueError(f"relevant has {len(relevant)} arrays but topk_indices has {u} rows; pass one per row.")
    rel = [np.unique(np.asarray(r, dtype=np.int64)) for r in relevant]
    n_rel = np.fromiter((len(r) for r in rel), dtype=np.int64, count=u)
    if u and n_rel.min() == 0:
        bad = int(np.argmin(n_rel))
        raise ValueError(f"relevant[{bad}] is empty; drop users without held-out items before scoring.")
    if u == 0:
        return np.zeros(0), np.zeros(0)
    width = int(max(top.max(), max(int(r.max()) for r in rel))) + 1
    rel_keys = np.repeat(np.arange(u, dtype=np.int64), n_rel) * width + np.concatenate(rel)
    hits = np.isin(np.arange(u, dtype=np.int64)[:, None] * width + top, rel_keys)
    discount = 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)
    dcg = (hits * discount).sum(axis=1)
    idcg = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
    return hits.sum(axis=1) / n_rel, dcg / idcg
