"""Baselines checked against hand computations and direct dense numpy re-implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pinsage_ray.evaluation import ItemKNN, Popularity, PPRBaseline, RP3beta, topk_excluding
from pinsage_ray.evaluation.linear import EASE, SVDEmbedding, svd_item_embedding

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


# ----------------------------------------------------------------- linear: EASE and SVD
def _ease_closed_form(x: np.ndarray, l2: float) -> np.ndarray:
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p @ np.diag(1.0 / np.diag(p))  # Steck 2019, eq. 8


@pytest.mark.parametrize("l2", [0.5, 10.0])
def test_ease_matches_numpy_closed_form_with_zero_diagonal(l2):
    x, u, i = _random_interactions(4, n_users=11, n_items=7)
    b = _ease_closed_form(x, l2)
    # duplicate pairs collapse to one binary interaction
    m = EASE(l2=l2).fit(np.append(u, u[:3]), np.append(i, i[:3]), *x.shape)
    got = m.item_scores(np.arange(7))
    assert got.dtype == np.float32 and got.shape == (7, 7)
    np.testing.assert_allclose(got, b, atol=1e-5)
    np.testing.assert_array_equal(np.diag(got), 0.0)
    np.testing.assert_allclose(m.item_scores(np.array([5, 2])), b[[5, 2]], atol=1e-5)
    np.testing.assert_allclose(m.user_scores(np.array([3, 0, 3])), x[[3, 0, 3]] @ b, atol=1e-5)


def test_ease_tiny_blocks_and_item_without_users():
    x, u, i = _random_interactions(5, n_users=10, n_items=6)
    b = _ease_closed_form(np.hstack([x, np.zeros((10, 1))]), 2.0)  # item 6 has no users
    m = EASE(l2=2.0, max_triples=3, max_dense_bytes=8 * 7).fit(u, i, 10, 7)
    np.testing.assert_allclose(m.item_scores(np.arange(7)), b, atol=1e-5)
    np.testing.assert_array_equal(m.item_scores(np.array([6]))[0], 0.0)


def test_ease_refuses_large_catalogues_and_bad_arguments():
    assert EASE().max_items == 50_000
    with pytest.raises(ValueError, match=r"num_items=6 exceeds max_items=5.*rp3beta"):
        EASE(max_items=5).fit(USERS, ITEMS, 3, 6)
    EASE(max_items=4).fit(USERS, ITEMS, 3, 4)  # at the limit: fine
    with pytest.raises(ValueError, match="l2"):
        EASE(l2=0.0)
    with pytest.raises(RuntimeError, match="fit"):
        EASE().user_scores(np.array([0]))
    with pytest.raises(ValueError, match="user_ids"):
        EASE().fit(USERS, ITEMS, 3, 4).user_scores(np.array([3]))


def _normalised(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(x.sum(1, keepdims=True)) / np.sqrt(np.maximum(x.sum(0, keepdims=True), 1))


def test_svd_embedding_matches_dense_svd():
    x, u, i = _random_interactions(6, n_users=9, n_items=8, density=0.5)
    _, s, vt = np.linalg.svd(_normalised(x))
    ref = vt[:3].T * s[:3]  # V_k S_k, defined up to the sign of each column
    emb = svd_item_embedding(u, i, 9, 8, dim=3)
    assert emb.shape == (8, 3) and emb.dtype == np.float32
    np.testing.assert_allclose(np.abs(emb), np.abs(ref), atol=1e-5)
    np.testing.assert_allclose(emb @ emb.T, ref @ ref.T, atol=1e-5)
    # dimensions beyond the rank are zero, so dim larger than the matrix is allowed
    assert np.all(svd_item_embedding(u, i, 9, 8, dim=12)[:, 8:] == 0)


def _planted_blocks(seed: int = 0, blocks: int = 4, users_per: int = 30, items_per: int = 12):
    """Users of block b engage mostly with items of block b, plus a few random items."""
    rng = np.random.default_rng(seed)
    n_u, n_i = blocks * users_per, blocks * items_per
    x = np.zeros((n_u, n_i))
    for b in range(blocks):
        x[b * users_per:(b + 1) * users_per, b * items_per:(b + 1) * items_per] = (
            rng.random((users_per, items_per)) < 0.5)
    x[rng.integers(0, n_u, 2 * n_u), rng.integers(0, n_i, 2 * n_u)] = 1.0  # noise
    u, i = np.nonzero(x)
    return u, i, n_u, n_i, np.arange(n_i) // items_per


def test_svd_recovers_planted_blocks_and_scores_like_pinsage():
    u, i, n_u, n_i, block = _planted_blocks()
    m = SVDEmbedding(dim=4).fit(u, i, n_u, n_i)
    sims = m.item_scores(np.arange(n_i))
    assert sims.shape == (n_i, n_i) and sims.dtype == np.float32
    np.testing.assert_allclose(np.diag(sims), 1.0, atol=1e-5)  # cosine: unit rows
    top5 = topk_excluding(sims, 5, exclude=[[q] for q in range(n_i)])
    assert (block[top5] == block[:, None]).all()
    # user vector = normalised mean of the user's training-item vectors (PinSage's scorer)
    emb = m.embedding.numpy()
    users = np.array([0, 45, 0, 119])
    got = m.user_scores(users)
    assert got.shape == (4, n_i) and got.dtype == np.float32
    for row, user in zip(got, users):
        mean = emb[i[u == user]].mean(0)
        np.testing.assert_allclose(row, emb @ (mean / np.linalg.norm(mean)), atol=1e-5)
    assert (block[np.argmax(got, 1)] == users // 30).all()  # users of block b: items of block b


def test_svd_is_deterministic_per_seed_and_leaves_global_rng_alone():
    import torch

    u, i, n_u, n_i, _ = _planted_blocks(seed=1, users_per=60, items_per=40)  # q < rank: random
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = svd_item_embedding(u, i, n_u, n_i, dim=8, seed=7)
    np.testing.assert_array_equal(torch.rand(3), expected)
    np.testing.assert_array_equal(a, svd_item_embedding(u, i, n_u, n_i, dim=8, seed=7))
    b = svd_item_embedding(u, i, n_u, n_i, dim=8, seed=8)
    assert not np.array_equal(a, b)  # the seed is used...
    # ...and both runs converged to the same leading singular values (column norms of V S)
    np.testing.assert_allclose(np.linalg.norm(a, axis=0)[:4], np.linalg.norm(b, axis=0)[:4], rtol=1e-3)


def test_svd_user_without_items_and_argument_checks():
    m = SVDEmbedding(dim=2).fit(USERS, ITEMS, 4, 5)  # user 3 and item 4 have no interactions
    np.testing.assert_array_equal(m.user_scores(np.array([3])), np.zeros((1, 5)))
    np.testing.assert_array_equal(m.item_scores(np.array([4])), np.zeros((1, 5)))
    assert m.user_scores(np.array([], dtype=np.int64)).shape == (0, 5)
    with pytest.raises(ValueError, match="dim"):
        SVDEmbedding(dim=0)
    with pytest.raises(ValueError, match="query_items"):
        m.item_scores(np.array([5]))
    with pytest.raises(ValueError, match="num_users"):
        svd_item_embedding(USERS, ITEMS, 2, 4)


def test_svd_and_ease_are_registered_for_the_harness_and_cli(capsys):
    from pinsage_ray.cli import main
    from pinsage_ray.evaluation.harness import BASELINES, ProtocolData, fit_baseline

    assert BASELINES["svd"] is SVDEmbedding and BASELINES["ease"] is EASE
    data = ProtocolData("t", "", 4, 3, np.arange(4), USERS, ITEMS)
    assert fit_baseline("ease", data).item_scores(np.array([0])).shape == (1, 4)
    assert main(["evaluate", "--baselines", "svd", "ease"]) == 2  # names accepted ...
    assert "RUN_DIR" in capsys.readouterr().err  # ... it stops at the missing run directory
    assert main(["evaluate", "--baselines", "svd", "easy"]) == 2
    assert "'easy'" in capsys.readouterr().err
