"""Linear-algebra baselines: a truncated-SVD item embedding and EASE.

They answer two questions a PinSage result has to face (issue 11):

* :class:`SVDEmbedding`: is a learned GNN embedding better than the *spectral* embedding of
  the same graph? Items get the top singular vectors of the degree-normalised item-user
  matrix (the embedding a one-layer linear graph model converges to) and are scored by
  cosine exactly like PinSage's embeddings (the user vector is the normalised mean of the
  user's training-item vectors), so the two are compared through one scorer and one
  dimension. :func:`svd_item_embedding` is also the reference embedding for planted graphs.
* :class:`EASE` (Steck, WWW 2019): the strongest simple item-item model on most implicit
  feedback benchmarks, a closed-form ridge regression of every item on all the others. It is
  exact and dense (an N x N inverse), so it refuses catalogues above ``max_items``.

Both reuse :class:`~.baselines.Baseline` (input validation, binary de-duplicated
interactions) and need only numpy and torch (no scipy).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch

from pinsage_ray.evaluation.baselines import (_MAX_DENSE_BYTES, _MAX_TRIPLES, _CSR, Baseline,
                                              _interactions, _product_rows, _ranges)

logger = logging.getLogger(__name__)

__all__ = ["EASE", "SVDEmbedding", "svd_item_embedding"]


def _normalised_svd_embedding(x: _CSR, dim: int, seed: int, oversample: int = 16,
                              niter: int = 6) -> np.ndarray:
    """(N, dim) float32 ``V_k S_k`` of ``D_u^-1/2 X D_i^-1/2`` for a binary user x item CSR."""
    if dim < 1:
        raise ValueError(f"dim must be >= 1; got {dim}.")
    n_users, n_items = x.shape
    pop = np.bincount(x.indices, minlength=n_items).astype(np.float64)
    deg = x.lengths().astype(np.float64)
    rows = np.repeat(np.arange(n_users, dtype=np.int64), x.lengths())
    vals = 1.0 / np.sqrt(deg[rows] * pop[x.indices])  # every stored entry has deg, pop >= 1
    k = min(dim, n_users, n_items)
    q = min(k + oversample, n_users, n_items)
    out = np.zeros((n_items, dim), dtype=np.float32)
    if k == 0 or x.indices.size == 0:
        return out
    with warnings.catch_warnings():  # "Sparse CSR tensor support is in beta state"
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*", category=UserWarning)
        a = torch.sparse_coo_tensor(torch.from_numpy(np.stack([rows, x.indices.astype(np.int64)])),
                                    torch.from_numpy(vals), size=(n_users, n_items)).coalesce()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            _, s, v = torch.svd_lowrank(a, q=q, niter=niter)
    # Singular vectors are defined up to sign: fix it (largest-|.| entry positive) so that the
    # embedding itself, not only the cosine scores, is reproducible.
    v = v[:, :k]
    flip = torch.sign(v.gather(0, v.abs().argmax(0, keepdim=True)))
    v = v * torch.where(flip == 0, torch.ones_like(flip), flip)
    # V_k S_k rather than V_k: on ML-100K P1 *validation* (dim 64, cosine) HitRate@10 is 0.156
    # for V_k S_k, 0.148 for V_k S_k^1/2 and 0.138 for V_k: weighting by the singular values
    # keeps the weak, mostly-noise directions from dominating the cosine.
    out[:, :k] = (v * s[:k]).numpy().astype(np.float32)
    return out


def svd_item_embedding(users: np.ndarray, items: np.ndarray, num_users: int, num_items: int,
                       dim: int = 64, seed: int = 0) -> np.ndarray:
    """Truncated-SVD item embedding of an implicit interaction list.

    With ``X[u, i] = 1 / sqrt(deg_u * deg_i)`` for every distinct training pair (binary,
    duplicates counted once; degrees count distinct partners) and ``X ~ U_k S_k V_k^T`` its
    rank-k truncated SVD (randomised subspace iteration, ``torch.svd_lowrank``, seeded by
    ``seed`` without touching the global RNG), the embedding of item i is row i of
    ``V_k S_k`` (un-normalised; columns beyond the rank of X, and items without users, are 0).

    Args:
        users: (E,) int user id per interaction, in ``[0, num_users)``.
        items: (E,) int item id per interaction, in ``[0, num_items)``.
        num_users: number of users U.
        num_items: number of items N.
        dim: embedding dimension k.
        seed: seed of the randomised SVD.

    Returns:
        (num_items, dim) float32.
    """
    return _normalised_svd_embedding(_interactions(users, items, int(num_users), int(num_items)),
                                     int(dim), int(seed))


class SVDEmbedding(Baseline):
    """Cosine similarity between truncated-SVD item embeddings (:func:`svd_item_embedding`).

    ``item_scores(q)`` = cosine of every item to item q; ``user_scores(u)`` = cosine of every
    item to the normalised mean of u's training-item vectors (PinSage's own user scorer).
    Items (and users) without training interactions have a zero vector and score 0.

    Args:
        dim: embedding dimension.
        seed: seed of the randomised SVD.
    """

    name = "svd"

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be >= 1; got {dim}.")
        self.dim, self.seed = int(dim), int(seed)

    def _fit(self) -> None:
        emb = torch.from_numpy(_normalised_svd_embedding(self._x, self.dim, self.seed))
        self.embedding = torch.nn.functional.normalize(emb, dim=1)  # (N, dim), unit rows

    def item_scores(self, query_items: np.ndarray) -> np.ndarray:
        q = self._check(query_items, self.num_items, "query_items")
        return (self.embedding[torch.from_numpy(q)] @ self.embedding.T).numpy()

    def user_scores(self, user_ids: np.ndarray) -> np.ndarray:
        u, x = self._check(user_ids, self.num_users, "user_ids"), self._x
        lens = x.lengths()[u]
        pos = _ranges(x.indptr[u], lens)
        owner = torch.from_numpy(np.repeat(np.arange(u.size, dtype=np.int64), lens))
        sums = torch.zeros((u.size, self.dim), dtype=torch.float32)
        sums.index_add_(0, owner, self.embedding[torch.from_numpy(x.indices[pos].astype(np.int64))])
        return (torch.nn.functional.normalize(sums, dim=1) @ self.embedding.T).numpy()


class EASE(Baseline):
    """EASE^R (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019).

    ``P = (X^T X + l2 I)^-1`` and ``B = I - P diag(1 / diag(P))``, i.e.
    ``B[i, j] = -P[i, j] / P[j, j]`` off the diagonal and ``diag(B) = 0``: column j of B is the
    ridge regression of item j on all other items. ``item_scores(q) = B[q]`` (the score a user
    with the single item q gives every item), ``user_scores(u) = x_u B``.

    The inverse is exact and dense: fitting takes about ``3 * N^2 * 4`` bytes at peak
    (N = 41k items: ~20 GB) and O(N^3) time, hence ``max_items``.

    Args:
        l2: ridge strength lambda. The default 500 is the value Steck reports for
            MovieLens-20M and the one commonly used on MovieLens-sized data; it was not tuned
            on any test set here. Larger datasets (more users) usually want a larger lambda.
        max_items: refuse catalogues larger than this (memory ~ 12 N^2 bytes).
    """

    name = "ease"

    def __init__(self, l2: float = 500.0, max_items: int = 50_000,
                 max_dense_bytes: int = _MAX_DENSE_BYTES, max_triples: int = _MAX_TRIPLES) -> None:
        super().__init__()
        if not l2 > 0:
            raise ValueError(f"l2 must be > 0 (it makes X^T X + l2 I invertible); got {l2}.")
        self.l2, self.max_items = float(l2), int(max_items)
        self.max_dense_bytes, self.max_triples = max_dense_bytes, max_triples

    def fit(self, users: np.ndarray, items: np.ndarray, num_users: int, num_items: int) -> EASE:
        if int(num_items) > self.max_items:  # before any allocation
            raise ValueError(
                f"EASE inverts a dense num_items x num_items matrix; num_items={int(num_items)} "
                f"exceeds max_items={self.max_items} (~{12 * int(num_items) ** 2 / 2**30:.0f} GiB). "
                "Use the sparse 'rp3beta' or 'itemknn' baselines instead, or raise max_items "
                "if the machine has the memory.")
        return super().fit(users, items, num_users, num_items)

    def _fit(self) -> None:
        n, x = self.num_items, self._x
        g = torch.zeros((n, n), dtype=torch.float32)  # Gram X^T X, row block by row block
        for b0, b1, dense in _product_rows(x.transpose(), np.arange(n), x, self.max_triples,
                                           self.max_dense_bytes):
            g[b0:b1] = torch.from_numpy(dense)
        g.diagonal().add_(self.l2)
        chol, info = torch.linalg.cholesky_ex(g)
        del g
        if int(info) != 0:  # cannot happen for l2 > 0 unless float32 overflows
            raise RuntimeError(f"EASE: X^T X + l2 I is not positive definite in float32 (l2={self.l2}).")
        p = torch.cholesky_inverse(chol)
        del chol
        p.div_(-p.diagonal().clone())  # B[i, j] = -P[i, j] / P[j, j] (column scaling)
        p.diagonal().zero_()
        self.weights = p  # (N, N) float32 B

    def item_scores(self, query_items: np.ndarray) -> np.ndarray:
        q = self._check(query_items, self.num_items, "query_items")
        return self.weights[torch.from_numpy(q)].numpy()

    def user_scores(self, user_ids: np.ndarray) -> np.ndarray:
        u = self._check(user_ids, self.num_users, "user_ids")
        return (torch.from_numpy(self._x.dense_rows(u)) @ self.weights).numpy()
