"""Baselines checked against hand computations and direct dense numpy re-implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pinsage_ray.evaluation import ItemKNN, Popularity, PPRBaseline, RP3beta, topk_excluding

# 3 users x 4 items: u0 {0, 1, 2}, u1 {0, 1}, u2 {1, 3}. Popularity [2, 3, 1, 1];
# co-occurrence (0,1)=2, (0,2)=1, (1,2)=1, (1,3)=1, others 0.
USERS = np.array([0, 0, 0, 1, 1, 2, 2])
ITEMS = np.array([0, 1, 2, 0, 1, 1, 3])


def _random_interactions(seed: int, n_users: int = 9, n_items: int = 8, density: float = 0.4):
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < density).astype(np.float64)
    x[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0  # no user without items
    x[rng.integers(0, n_users, n_items), np.arange(n_items)] = 1.0  # no item without users
    u, i = np.nonzero(x)
    return x, u, i


def test_popularity_counts_distinct_users_and_orders_items():
    m = Popularity().fit(np.append(USERS, 0), np.append(ITEMS, 0), 3, 4)  # duplicate (0, 0) ignored
    np.testing.assert_array_equal(m.item_scores(np.array([2, 3])), [[2, 3, 1, 1]] * 2)
    np.testing.assert_array_equal(m.user_scores(np.array([1])), [[2, 3, 1, 1]])
    assert topk_excluding(m.user_scores(np.array([0])), 4).tolist() == [[1, 0, 2, 3]]  # 2 vs 3 tie: lower index


def test_itemknn_cosine_with_shrink_by_hand():
    m = ItemKNN(shrink=1.0, topk_neighbors=None).fit(USERS, ITEMS, 3, 4)
    s01 = 2 / (math.sqrt(2) * math.sqrt(3) + 1)
    s02 = 1 / (math.sqrt(2) * 1 + 1)
    s12 = s13 = 1 / (math.sqrt(3) * 1 + 1)
    np.testing.assert_allclose(m.item_scores(np.array([0, 1])), [[0, s01, s02, 0], [s01, 0, s12, s13]], rtol=1e-6)
    # u2 = {1, 3}: W[1] + W[3] = [s01, 0, s12, s13] + [0, s13, 0, 0]
    np.testing.assert_allclose(m.user_scores(np.array([2])), [[s01, s13, s12, s13]], rtol=1e-6)


def test_itemknn_shrink_zero_and_topk_pruning_tie_keeps_lower_index():
    m = ItemKNN(shrink=0.0, topk_neighbors=2).fit(USERS, ITEMS, 3, 4)
    # Row 1: sim to 0 = 2/sqrt(6), to 2 and 3 both 1/sqrt(3) (tie) -> keep 0 and 2.
    np.testing.assert_allclose(m.item_scores(np.array([1])), [[2 / math.sqrt(6), 0, 1 / math.sqrt(3), 0]], rtol=1e-6)
    top1 = ItemKNN(shrink=0.0, topk_neighbors=1).fit(USERS, ITEMS, 3, 4)
    np.testing.assert_array_equal(top1.item_scores(np.arange(4)) > 0, np.array(
        [[0, 1, 0, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], dtype=bool))


def test_tiny_blocks_give_the_same_matrices():
    _, u, i = _random_interactions(3)
    for cls, kw in ((ItemKNN, {"shrink": 2.0, "topk_neighbors": 3}), (RP3beta, {"beta": 0.5})):
        big = cls(**kw).fit(u, i, 9, 8)
        small = cls(max_triples=3, max_dense_bytes=8 * 8, **kw).fit(u, i, 9, 8)
        np.testing.assert_array_equal(big.item_scores(np.arange(8)), small.item_scores(np.arange(8)))
        np.testing.assert_allclose(big.user_scores(np.arange(9)), small.user_scores(np.arange(9)), rtol=1e-6)


@pytest.mark.parametrize("alpha, beta, topk", [(1.0, 0.3, None), (0.7, 0.5, None), (1.0, 0.3, 3)])
def test_rp3beta_matches_dense_numpy(alpha, beta, topk):
    x, u, i = _random_interactions(1)
    p_ui = (x / x.sum(1, keepdims=True)) ** alpha
    p_iu = (x.T / x.sum(0)[:, None]) ** alpha
    w = (p_iu @ p_ui) / x.sum(0)[None, :] ** beta
    np.fill_diagonal(w, 0.0)
    if topk is not None:  # keep the k largest per row, ties to the lower index
        keep = np.argsort(-w, axis=1, kind="stable")[:, :topk]
        pruned = np.zeros_like(w)
        np.put_along_axis(pruned, keep, np.take_along_axis(w, keep, 1), 1)
        w = pruned
    m = RP3beta(alpha=alpha, beta=beta, topk_neighbors=topk).fit(u, i, *x.shape)
    np.testing.assert_allclose(m.item_scores(np.arange(x.shape[1])), w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m.user_scores(np.arange(x.shape[0])), x @ w, rtol=1e-5, atol=1e-7)


def _dense_ppr(x: np.ndarray, restart: np.ndarray, r: float, iters: int = 400) -> np.ndarray:
    """Item part of pi = r e + (1 - r) pi P on the (N + U)-node bipartite graph."""
    n_u, n_i = x.shape
    p = np.zeros((n_i + n_u, n_i + n_u))
    p[:n_i, n_i:] = x.T / x.sum(0)[:, None]  # item -> its users
    p[n_i:, :n_i] = x / x.sum(1, keepdims=True)  # user -> its items
    e = np.concatenate([restart, np.zeros(n_u)])
    pi = e.copy()
    for _ in range(iters):
        pi = r * e + (1 - r) * pi @ p
    return pi[:n_i]


@pytest.mark.parametrize("r", [0.5, 0.2])
def test_ppr_matches_dense_power_iteration(r):
    x, u, i = _random_interactions(2)
    m = PPRBaseline(restart_prob=r, tol=1e-10, max_iter=1000, batch_size=3).fit(u, i, *x.shape)
    got = m.item_scores(np.array([0, 5, 7, 0]))
    for row, q in zip(got, [0, 5, 7, 0]):
        np.testing.assert_allclose(row, _dense_ppr(x, np.eye(x.shape[1])[q], r), atol=1e-6)
    got_u = m.user_scores(np.array([4]))
    np.testing.assert_allclose(got_u[0], _dense_ppr(x, x[4] / x[4].sum(), r), atol=1e-6)


def test_errors_name_argument_and_fix():
    with pytest.raises(ValueError, match="num_items"):
        ItemKNN().fit(USERS, ITEMS, 3, 3)
    with pytest.raises(RuntimeError, match="fit"):
        RP3beta().item_scores(np.array([0]))
    with pytest.raises(ValueError, match="query_items"):
        Popularity().fit(USERS, ITEMS, 3, 4).item_scores(np.array([4]))
    with pytest.raises(ValueError, match="restart_prob"):
        PPRBaseline(restart_prob=0.0)
