"""Same-label precision@k: does an embedding recover a planted community structure?

On a planted graph (:mod:`pinsage_ray.data.synthetic`) every item has a known label, so an
item embedding can be scored without any held-out interactions: for each query item, the
fraction of its ``k`` nearest neighbours by cosine (the item itself excluded) that share
its label. With the two-level generator (``num_fine_per_coarse > 0``, preset
:func:`pinsage_ray.data.synthetic.fine_coarse_config`) item features reveal only the COARSE
category, while FINE communities exist only in the co-occurrence graph. So:

* features alone (:func:`features_embedding`) score high coarse precision but about chance
  (``1 / num_fine_per_coarse`` within a coarse category) on fine precision;
* a purely structural embedding (e.g. a truncated SVD of the degree-normalised item-group
  matrix, ``pinsage_ray.evaluation.linear.svd_item_embedding``) scores high fine precision;
* a GCN that learns the graph should beat features on fine precision, and one that only
  memorises features will not. That comparison is the point of this module.

Pure numpy; queries are processed in chunks so memory stays ``O(chunk * N)`` (about 64 MB of
float32 scores per chunk), fine for 50k+ items on a laptop.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["features_embedding", "label_precision_at_k", "planted_precision"]

_SCORES_PER_CHUNK = 1 << 24  # float32 query x item scores held at once (64 MB)


def _normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, np.float32(1.0))


def features_embedding(features: np.ndarray) -> np.ndarray:
    """The "features alone" reference embedding: L2-normalised item features ``(N, D)`` float32.

    From a synthetic dataset: ``np.stack(ds.item_features["features"].to_numpy(zero_copy_only=False))``
    (rows are in item-id order 0..N-1, like ``ds.item_labels``).
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"features has shape {features.shape}; pass a 2-D (num_items, dim) array.")
    return _normalise(features)


def _check(embeddings, labels: Mapping[str, np.ndarray], k, sample, seed) -> tuple[np.ndarray, dict, np.ndarray]:
    """Validated ``(normalised embeddings, labels, query ids)``."""
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise ValueError(f"embeddings has shape {emb.shape}; pass a 2-D (num_items, dim) array.")
    n = emb.shape[0]
    out = {}
    for name, values in labels.items():
        values = np.asarray(values)
        if values.shape != (n,):
            raise ValueError(
                f"{name} has shape {values.shape}; pass one label per embedding row, shape ({n},)."
            )
        out[name] = values
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k < n:
        raise ValueError(f"k={k!r} is invalid: pass an int in [1, num_items - 1 = {n - 1}].")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, (int, np.integer)) or sample < 1):
        raise ValueError(f"sample={sample!r} is invalid: pass None or an int >= 1.")
    if sample is None or sample >= n:
        queries = np.arange(n)
    else:
        queries = np.sort(np.random.default_rng(seed).choice(n, size=int(sample), replace=False))
    return _normalise(emb), out, queries


def _neighbours(emb: np.ndarray, k: int, queries: np.ndarray):
    """Yield ``(query ids (B,), their k nearest other items (B, k))`` chunk by chunk."""
    n = emb.shape[0]
    chunk = max(1, _SCORES_PER_CHUNK // n)
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk]
        scores = emb[q] @ emb.T  # (B, N) cosine
        scores[np.arange(len(q)), q] = -np.inf  # exclude self
        yield q, np.argpartition(-scores, k - 1, axis=1)[:, :k]  # unordered top k


def label_precision_at_k(
    embeddings: np.ndarray,
    labels: np.ndarray,
    k: int = 10,
    *,
    sample: int | None = None,
    seed: int = 0,
) -> float:
    """Mean fraction of each query item's ``k`` cosine nearest neighbours sharing its label.

    Args:
        embeddings: ``(N, D)`` item vectors (any scale; rows are L2-normalised here, an
            all-zero row has cosine 0 with everything).
        labels: ``(N,)`` labels compared by equality (e.g. planted fine or coarse community).
        k: neighbours per query; the query item itself is never counted. Needs ``k < N``.
        sample: score only this many query items, drawn without replacement with ``seed``
            (neighbours are still searched among all ``N``); ``None`` or ``>= N`` = all items.
        seed: seed of the query sample.

    Returns:
        Precision in ``[0, 1]``. Ties at the k-th score are broken arbitrarily (by
        ``argpartition``). A random embedding scores about the chance that two items share a
        label, ``sum_c (n_c / N) ** 2`` (``1 / C`` for ``C`` equal-sized labels).
    """
    return planted_precision(embeddings, {"labels": labels}, k, sample=sample, seed=seed)["labels"]


def planted_precision(
    embeddings: np.ndarray,
    labels: Mapping[str, np.ndarray],
    k: int = 10,
    *,
    sample: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """``{name: precision@k}`` for several label sets (e.g. ``{"fine": ..., "coarse": ...}``).

    Same definition as :func:`label_precision_at_k`; the neighbour search runs once and the
    same seeded query sample is scored against every label set.
    """
    emb, labels, queries = _check(embeddings, labels, k, sample, seed)
    hits = dict.fromkeys(labels, 0)
    for q, top in _neighbours(emb, k, queries):
        for name, values in labels.items():
            hits[name] += int((values[top] == values[q, None]).sum())
    return {name: h / (len(queries) * k) for name, h in hits.items()}
