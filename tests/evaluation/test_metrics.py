"""Hand-computed checks of the ranking metrics in :mod:`pinsage_ray.evaluation.metrics`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pinsage_ray.evaluation import (
    hit_rate_at_k,
    mrr,
    ndcg_at_k_single,
    paper_mrr,
    rank_of_targets,
    recall_ndcg_at_k,
    topk_excluding,
)

# Two queries over five items. Row 0: target 2 (0.5) is beaten by item 3 (0.9) and by item 1
# (0.5, tie, lower index); item 4 (0.5, tie, higher index) does not beat it -> rank 3.
# Row 1: target 3 (2.0) is beaten by item 2 (3.0) and item 1 (2.0, tie, lower index) -> rank 3.
SCORES = np.array([[0.1, 0.5, 0.5, 0.9, 0.5], [1.0, 2.0, 3.0, 2.0, 0.0]], dtype=np.float32)
TARGETS = np.array([2, 3])


def test_rank_ties_lower_index_wins():
    assert rank_of_targets(SCORES, TARGETS).tolist() == [3, 3]


def test_rank_exclusions_drop_items_above_target_but_keep_target():
    # Row 0 drops item 3 -> rank 2. Row 1 excludes item 2 and the target 3 itself: the target is
    # kept, item 2 no longer counts -> rank 2. Duplicated exclusions count once.
    exclude = [np.array([3, 3]), np.array([2, 3])]
    assert rank_of_targets(SCORES, TARGETS, exclude).tolist() == [2, 2]
    mask = np.zeros_like(SCORES, dtype=bool)
    mask[0, 3] = mask[1, 2] = mask[1, 3] = True
    assert rank_of_targets(SCORES, TARGETS, mask).tolist() == [2, 2]
    as_torch = [torch.from_numpy(a) for a in (SCORES, TARGETS, mask)]
    assert rank_of_targets(*as_torch).tolist() == [2, 2]


def test_rank_and_topk_match_stable_argsort_on_random_ties():
    rng = np.random.default_rng(0)
    for _ in range(30):
        q, n = 5, 17
        s = rng.integers(0, 4, (q, n)).astype(np.float64)
        excl = [rng.choice(n, int(rng.integers(0, 8)), replace=True) for _ in range(q)]
        tgt = rng.integers(0, n, q)
        k = int(rng.integers(1, n + 1))
        masked = s.copy()
        for r, e in enumerate(excl):
            masked[r, e] = -np.inf
        expected_top = np.argsort(-masked, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(topk_excluding(s, k, excl), expected_top)
        ranks = rank_of_targets(s, tgt, excl)
        for r in range(q):
            keep = np.ones(n, dtype=bool)
            keep[excl[r]] = False
            keep[tgt[r]] = True
            cand = np.flatnonzero(keep)
            order = cand[np.argsort(-s[r, cand], kind="stable")]
            assert ranks[r] == np.flatnonzero(order == tgt[r])[0] + 1


def test_topk_excluding_by_hand():
    s = np.array([[0.5, 0.9, 0.5, 0.5, 0.1]])
    assert topk_excluding(s, 3).tolist() == [[1, 0, 2]]
    assert topk_excluding(s, 3, [np.array([1])]).tolist() == [[0, 2, 3]]
    assert topk_excluding(torch.tensor(s), 2, [np.array([1])]).tolist() == [[0, 2]]
    # Fewer eligible items than k: the tail holds excluded items in index order.
    assert topk_excluding(np.array([[1.0, 2.0, 3.0]]), 2, [np.array([0, 1])]).tolist() == [[2, 0]]


def test_single_relevant_metrics_by_hand():
    ranks = np.array([1, 3, 12])
    assert hit_rate_at_k(ranks, 10) == pytest.approx(2 / 3)
    assert mrr(ranks) == pytest.approx((1 + 1 / 3 + 1 / 12) / 3)  # = 17/36
    assert ndcg_at_k_single(ranks, 10) == pytest.approx((1 + 1 / math.log2(4) + 0) / 3)  # = 0.5


def test_paper_mrr_buckets_ranks_by_scale():
    ranks = np.array([1, 100, 101, 250])
    assert paper_mrr(ranks, scale=100) == pytest.approx((1 + 1 + 1 / 2 + 1 / 3) / 4)
    assert paper_mrr(ranks, scale=100, rounding="none") == pytest.approx((1 + 1 + 1 / 1.01 + 1 / 2.5) / 4)
    assert paper_mrr(ranks, scale=1) == pytest.approx(mrr(ranks))


def test_recall_ndcg_multi_relevant_by_hand():
    top = np.array([[5, 1, 7], [2, 4, 6]])
    relevant = [np.array([1, 9]), np.array([2, 4, 6, 8, 8])]
    recall, ndcg = recall_ndcg_at_k(top, relevant)
    # User 0: one hit at position 1 of 2 relevant; IDCG over min(2, 3) = 2 positions.
    # User 1: hits at all 3 positions, 4 distinct relevant -> recall 3/4, IDCG over 3 positions.
    g = 1 / math.log2(3)
    np.testing.assert_allclose(recall, [1 / 2, 3 / 4])
    np.testing.assert_allclose(ndcg, [g / (1 + g), 1.0])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: rank_of_targets(np.array([[np.nan, 1.0]]), [0]), "NaN"),
        (lambda: rank_of_targets(np.zeros((1, 3)), [3]), "targets"),
        (lambda: rank_of_targets(np.zeros((2, 3)), [0, 1], [np.array([0])]), "one"),
        (lambda: topk_excluding(np.zeros((1, 3)), 4), "k must"),
        (lambda: recall_ndcg_at_k(np.zeros((1, 2), dtype=int), [np.array([], dtype=int)]), "empty"),
        (lambda: paper_mrr([1, 2], rounding="floor"), "rounding"),
        (lambda: mrr([0, 1]), "1-based"),
    ],
)
def test_errors_name_the_problem(call, match):
    with pytest.raises(ValueError, match=match):
        call()
