"""Evaluation protocols: how held-out data is carved out and how a model is scored on it.

Three protocols, all deterministic and model-agnostic (a model is just a scoring function):

* **P1 - item-to-item, leave-last-out** (MovieLens-100K; the DGL PinSAGE example protocol made
  deterministic). :func:`leave_last_split` holds out each user's last interaction (test) and
  second-to-last (validation); :func:`evaluate_p1` queries with the user's latest *training*
  item and ranks the held-out item among all items the user has not trained on.
* **P2 - user-to-item, full ranking** (Gowalla; the LightGCN protocol, He et al., SIGIR 2020):
  :func:`evaluate_p2` ranks every item not in the user's training set and reports Recall@k and
  NDCG@k averaged over users with at least one test item. :func:`carve_validation` makes a
  seeded validation split out of the training interactions.
* **P3 - related-item pairs** (PinSage paper, Ying et al., KDD 2018, Sec. 4.2): for labelled
  (query, target) pairs, :func:`evaluate_pairs` reports hit-rate@K among all items (query
  excluded; the paper uses K = 500) and the paper's scaled MRR (:func:`.metrics.paper_mrr`).

All results are plain ``dict[str, float]``; :func:`format_markdown_table` renders several.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Union

import numpy as np
import torch

from .metrics import (
    hit_rate_at_k,
    mrr,
    ndcg_at_k_single,
    paper_mrr,
    rank_of_targets,
    recall_ndcg_at_k,
    topk_excluding,
)

logger = logging.getLogger(__name__)

ScoresFn = Callable[[np.ndarray], Union[np.ndarray, torch.Tensor]]


def _ints(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer array; got dtype {a.dtype}, shape {a.shape}.")
    return a.astype(np.int64)


def _group(keys: np.ndarray, values: np.ndarray, num_keys: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR grouping: ``values[indptr[k]:indptr[k+1]]`` are the values of key k (input order kept)."""
    order = np.argsort(keys, kind="stable")
    indptr = np.zeros(num_keys + 1, dtype=np.int64)
    np.cumsum(np.bincount(keys, minlength=num_keys), out=indptr[1:])
    return indptr, values[order]


def _check_scores(scores, q: int, n: int | None, fn_name: str):
    shape = tuple(scores.shape)
    if len(shape) != 2 or shape[0] != q or (n is not None and shape[1] != n):
        raise ValueError(
            f"{fn_name} returned shape {shape}, expected ({q}, {n if n is not None else 'N'}); it must "
            "return one row of scores over all items per query."
        )
    return scores


@dataclass(frozen=True)
class LeaveLastSplit:
    """Result of :func:`leave_last_split`. Per-user arrays are aligned with ``users``.

    Attributes:
        users: (M,) ids of the kept users (>= 3 interactions), ascending.
        query_items: (M,) latest training item per user (the P1 query).
        val_items: (M,) second-to-last item per user.
        test_items: (M,) last item per user.
        train_users: (E,) user of each training interaction, input order.
        train_items: (E,) item of each training interaction, input order.
        num_items: N, the item-id space (``max(item) + 1`` unless given).
        dropped_users: (D,) ids of users with fewer than 3 interactions (all their rows dropped).
        train_rows: (E,) positions of the training interactions in the input arrays (so a
            caller can keep their timestamps, weights or other columns).
    """

    users: np.ndarray
    query_items: np.ndarray
    val_items: np.ndarray
    test_items: np.ndarray
    train_users: np.ndarray
    train_items: np.ndarray
    num_items: int
    dropped_users: np.ndarray
    train_rows: np.ndarray

    def train_items_per_user(self) -> list[np.ndarray]:
        """Training items of each kept user (aligned with ``users``), in input order."""
        row = np.searchsorted(self.users, self.train_users)
        indptr, vals = _group(row, self.train_items, self.users.size)
        return [vals[indptr[j]:indptr[j + 1]] for j in range(self.users.size)]


def leave_last_split(users: np.ndarray, items: np.ndarray, timestamps: np.ndarray,
                     num_items: int | None = None) -> LeaveLastSplit:
    """Per-user temporal leave-last-out split (protocol P1).

    Each user's interactions are stably sorted by timestamp (equal timestamps keep input
    order); the last one becomes the test item, the second-to-last the validation item and the
    rest training. Users with fewer than 3 interactions are dropped entirely.

    Args:
        users: (E,) int user ids.
        items: (E,) int item ids.
        timestamps: (E,) int or float timestamps (any monotone unit).
        num_items: size of the item-id space; default ``max(items) + 1``.

    Returns:
        A :class:`LeaveLastSplit`.
    """
    u, i = _ints(users, "users"), _ints(items, "items")
    ts = np.asarray(timestamps).ravel()
    if not (u.size == i.size == ts.size):
        raise ValueError(f"users, items, timestamps must have equal length; got {u.size}, {i.size}, {ts.size}.")
    n_items = int(i.max()) + 1 if num_items is None else int(num_items)
    if i.size and i.max() >= n_items:
        raise ValueError(f"num_items={n_items} but items contain id {int(i.max())}; pass num_items > max item id.")
    order = np.lexsort((np.arange(u.size), ts, u))  # user, then time, then input position
    su = u[order]
    uniq, start, count = np.unique(su, return_index=True, return_counts=True)
    from_end = np.repeat(start + count, count) - np.arange(su.size) - 1  # 0 = last interaction
    kept = np.repeat(count >= 3, count)
    last = order[kept & (from_end == 0)]
    second = order[kept & (from_end == 1)]
    query = order[kept & (from_end == 2)]
    train_pos = np.sort(order[kept & (from_end >= 2)])
    split = LeaveLastSplit(
        users=uniq[count >= 3], query_items=i[query], val_items=i[second], test_items=i[last],
        train_users=u[train_pos], train_items=i[train_pos], num_items=n_items,
        dropped_users=uniq[count < 3], train_rows=train_pos,
    )
    logger.info("leave_last_split: %d users kept, %d dropped (< 3 interactions), %d train rows",
                split.users.size, split.dropped_users.size, train_pos.size)
    return split


def evaluate_p1(item_scores_fn: ScoresFn, split: LeaveLastSplit, which: str = "val",
                ks: Sequence[int] = (10, 50), ndcg_ks: Sequence[int] = (10,),
                batch_size: int = 1024) -> dict[str, float]:
    """Protocol P1: rank each user's held-out item given the user's latest training item.

    For every kept user, ``item_scores_fn([query_item])`` scores all N items; the user's
    training items (which include the query itself) are excluded, the held-out item is kept
    even if it also occurs in training, and its 1-based rank (ties: lower index first) feeds
    hit-rate@k, MRR and single-relevant NDCG@k.

    Args:
        item_scores_fn: maps (Q,) query item ids to (Q, N) scores (numpy or torch).
        split: output of :func:`leave_last_split`.
        which: ``"val"`` (second-to-last item) or ``"test"`` (last item).
        ks: cut-offs for ``hit@k``.
        ndcg_ks: cut-offs for ``ndcg@k``.
        batch_size: users scored per call of ``item_scores_fn``.

    Returns:
        ``{"hit@k": ..., "mrr": ..., "ndcg@k": ...}``.
    """
    if which not in ("val", "test"):
        raise ValueError(f"which must be 'val' or 'test'; got {which!r}.")
    targets = split.val_items if which == "val" else split.test_items
    excl = split.train_items_per_user()
    t0 = time.perf_counter()
    ranks = []
    for b0 in range(0, split.users.size, batch_size):
        b1 = min(b0 + batch_size, split.users.size)
        scores = _check_scores(item_scores_fn(split.query_items[b0:b1]), b1 - b0, split.num_items,
                               "item_scores_fn")
        ranks.append(rank_of_targets(scores, targets[b0:b1], excl[b0:b1]))
    r = np.concatenate(ranks)
    out = {f"hit@{k}": hit_rate_at_k(r, k) for k in ks}
    out["mrr"] = mrr(r)
    out.update({f"ndcg@{k}": ndcg_at_k_single(r, k) for k in ndcg_ks})
    logger.info("evaluate_p1(%s): %d queries in %.1fs: %s", which, r.size, time.perf_counter() - t0, out)
    return out


def evaluate_p2(user_scores_fn: ScoresFn, train_users: np.ndarray, train_items: np.ndarray,
                test_users: np.ndarray, test_items: np.ndarray, num_items: int, k: int = 20,
                batch_size: int = 1024) -> dict[str, float]:
    """Protocol P2 (LightGCN): full ranking of all items not in the user's training set.

    For each user with at least one test item, ``user_scores_fn`` scores all N items, training
    items are masked to ``-inf``, the top k are taken (ties: lower index first) and Recall@k /
    NDCG@k are computed against the user's distinct test items
    (:func:`.metrics.recall_ndcg_at_k`), then averaged over these users. A test item that is
    also a training item is masked and can never be hit.

    Args:
        user_scores_fn: maps (U,) user ids to (U, N) scores (numpy or torch).
        train_users, train_items: (E,) training interactions.
        test_users, test_items: (T,) held-out interactions.
        num_items: N.
        k: cut-off.
        batch_size: users scored per call of ``user_scores_fn``.

    Returns:
        ``{"recall@k": ..., "ndcg@k": ...}``.
    """
    tru, tri = _ints(train_users, "train_users"), _ints(train_items, "train_items")
    teu, tei = _ints(test_users, "test_users"), _ints(test_items, "test_items")
    if tru.size != tri.size or teu.size != tei.size:
        raise ValueError(f"train ({tru.size} vs {tri.size}) / test ({teu.size} vs {tei.size}) user and "
                         "item arrays must have equal lengths.")
    if teu.size == 0:
        raise ValueError("test_users is empty; P2 needs at least one test interaction.")
    n_users = int(max(tru.max(initial=-1), teu.max())) + 1
    tr_ptr, tr_items = _group(tru, tri, n_users)
    te_ptr, te_items = _group(teu, tei, n_users)
    eval_users = np.flatnonzero(np.diff(te_ptr) > 0)
    t0 = time.perf_counter()
    recalls, ndcgs = [], []
    for b0 in range(0, eval_users.size, batch_size):
        batch = eval_users[b0:b0 + batch_size]
        scores = _check_scores(user_scores_fn(batch), batch.size, num_items, "user_scores_fn")
        top = topk_excluding(scores, k, [tr_items[tr_ptr[x]:tr_ptr[x + 1]] for x in batch])
        rec, nd = recall_ndcg_at_k(top, [te_items[te_ptr[x]:te_ptr[x + 1]] for x in batch])
        recalls.append(rec)
        ndcgs.append(nd)
    out = {f"recall@{k}": float(np.concatenate(recalls).mean()), f"ndcg@{k}": float(np.concatenate(ndcgs).mean())}
    logger.info("evaluate_p2: %d users in %.1fs: %s", eval_users.size, time.perf_counter() - t0, out)
    return out


class InteractionSplit(NamedTuple):
    """Two interaction lists (each in input order) produced by :func:`carve_validation`."""

    train_users: np.ndarray
    train_items: np.ndarray
    val_users: np.ndarray
    val_items: np.ndarray


def carve_validation(users: np.ndarray, items: np.ndarray, fraction: float = 0.1, seed: int = 0) -> InteractionSplit:
    """Hold out a seeded random fraction of each user's training interactions for validation.

    A user with n interactions gives ``min(n - 1, floor(fraction * n + 0.5))`` of them (chosen
    uniformly at random with ``np.random.default_rng(seed)``) to validation, so every user
    keeps at least one training interaction. Same inputs and seed give the same split.

    Args:
        users: (E,) int user ids.
        items: (E,) int item ids.
        fraction: share of each user's interactions to hold out, in [0, 1).
        seed: random seed.

    Returns:
        An :class:`InteractionSplit` (train and validation rows, each in input order).
    """
    u, i = _ints(users, "users"), _ints(items, "items")
    if u.size != i.size:
        raise ValueError(f"users and items must have equal length; got {u.size} and {i.size}.")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1); got {fraction}.")
    key = np.random.default_rng(seed).random(u.size)
    order = np.lexsort((key, u))
    su = u[order]
    _, start, count = np.unique(su, return_index=True, return_counts=True)
    n_val = np.minimum(count - 1, np.floor(fraction * count + 0.5).astype(np.int64))
    pos_in_user = np.arange(su.size) - np.repeat(start, count)
    is_val = np.zeros(u.size, dtype=bool)
    is_val[order] = pos_in_user < np.repeat(n_val, count)
    return InteractionSplit(u[~is_val], i[~is_val], u[is_val], i[is_val])


def evaluate_pairs(item_scores_fn: ScoresFn, queries: np.ndarray, targets: np.ndarray,
                   ks: Sequence[int] = (10,), scale: float = 100.0, batch_size: int = 1024) -> dict[str, float]:
    """Protocol P3 (PinSage paper Sec. 4.2): related-item pairs ranked among all items.

    For each (query, target) pair all N items are scored for the query, the query itself is
    excluded (unless it is the target), and the target's 1-based rank gives hit-rate@k (the
    paper uses k = 500), the plain MRR and the paper's scaled MRR ``mean(1 / ceil(rank /
    scale))``.

    Args:
        item_scores_fn: maps (Q,) query item ids to (Q, N) scores.
        queries: (P,) query item ids.
        targets: (P,) related item ids.
        ks: cut-offs for ``hit@k``.
        scale: MRR scale (100 in the paper).
        batch_size: pairs scored per call.

    Returns:
        ``{"hit@k": ..., "mrr": ..., "paper_mrr": ...}``.
    """
    q, t = _ints(queries, "queries"), _ints(targets, "targets")
    if q.size != t.size or q.size == 0:
        raise ValueError(f"queries and targets must be non-empty and equally long; got {q.size} and {t.size}.")
    ranks = []
    for b0 in range(0, q.size, batch_size):
        bq, bt = q[b0:b0 + batch_size], t[b0:b0 + batch_size]
        scores = _check_scores(item_scores_fn(bq), bq.size, None, "item_scores_fn")
        ranks.append(rank_of_targets(scores, bt, [np.array([x]) for x in bq]))
    r = np.concatenate(ranks)
    out = {f"hit@{k}": hit_rate_at_k(r, k) for k in ks}
    out["mrr"] = mrr(r)
    out["paper_mrr"] = paper_mrr(r, scale=scale)
    return out


def format_markdown_table(rows: Mapping[str, Mapping[str, float]], precision: int = 4) -> str:
    """Render ``{model: {metric: value}}`` as a GitHub markdown table.

    Columns are the metrics in first-seen order; a model lacking a metric shows ``-``.

    Args:
        rows: model name -> metric name -> value.
        precision: decimals printed.

    Returns:
        The table as one string (no trailing newline).
    """
    metrics: list[str] = []
    for vals in rows.values():
        metrics.extend(m for m in vals if m not in metrics)
    lines = ["| model | " + " | ".join(metrics) + " |", "| --- |" + " ---: |" * len(metrics)]
    for model, vals in rows.items():
        cells = [f"{float(vals[m]):.{precision}f}" if m in vals else "-" for m in metrics]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
