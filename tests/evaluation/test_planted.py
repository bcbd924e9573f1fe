"""Tests for pinsage_ray.evaluation.planted: same-label precision@k of item embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from pinsage_ray.evaluation import planted
from pinsage_ray.evaluation.planted import features_embedding, label_precision_at_k, planted_precision


def _brute_force(emb: np.ndarray, labels: np.ndarray, k: int, queries=None) -> float:
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    scores = []
    for i in range(len(emb)) if queries is None else queries:
        sims = [(float(unit[i] @ unit[j]), j) for j in range(len(emb)) if j != i]
        top = [j for _, j in sorted(sims, reverse=True)[:k]]
        scores.append(np.mean([labels[j] == labels[i] for j in top]))
    return float(np.mean(scores))


def test_one_hot_labels_score_one():
    labels = np.repeat(np.arange(5), 30)[np.random.default_rng(0).permutation(150)]
    emb = np.eye(5)[labels] * np.random.default_rng(1).uniform(0.5, 3.0, (150, 1))  # scale is ignored
    assert label_precision_at_k(emb, labels, k=10) == 1.0


def test_random_vectors_score_chance():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 3000)
    p = label_precision_at_k(rng.standard_normal((3000, 16)), labels, k=10)
    chance = (np.bincount(labels) / len(labels)) @ (np.bincount(labels) / len(labels))
    assert abs(p - chance) < 0.02, (p, chance)


def test_self_is_excluded():
    # Every item is alone in its label except for a far-away twin: with self counted, p@1 = 1.
    emb = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    labels = np.array([0, 1, 0, 1])  # nearest other item always has the other label
    assert label_precision_at_k(emb, labels, k=1) == 0.0
    assert label_precision_at_k(emb, labels, k=3) == pytest.approx(1 / 3)


def test_matches_brute_force_and_chunking(monkeypatch):
    rng = np.random.default_rng(3)
    emb, labels = rng.standard_normal((120, 6)), rng.integers(0, 4, 120)
    expected = _brute_force(emb, labels, 7)
    assert label_precision_at_k(emb, labels, k=7) == pytest.approx(expected)
    monkeypatch.setattr(planted, "_SCORES_PER_CHUNK", 120 * 7)  # 7 queries per chunk, last one short
    assert label_precision_at_k(emb, labels, k=7) == pytest.approx(expected)


def test_sample_is_seeded_subset():
    rng = np.random.default_rng(4)
    emb, labels = rng.standard_normal((200, 5)), rng.integers(0, 3, 200)
    a = label_precision_at_k(emb, labels, k=5, sample=50, seed=1)
    assert a == label_precision_at_k(emb, labels, k=5, sample=50, seed=1)
    queries = np.sort(np.random.default_rng(1).choice(200, size=50, replace=False))
    assert a == pytest.approx(_brute_force(emb, labels, 5, queries))
    assert label_precision_at_k(emb, labels, k=5, sample=10_000) == label_precision_at_k(emb, labels, k=5)


def test_planted_precision_and_features_embedding():
    rng = np.random.default_rng(5)
    coarse = np.repeat(np.arange(4), 50)
    fine = coarse * 5 + np.tile(np.arange(5), 40)
    feats = np.eye(4)[coarse] * 3 + rng.standard_normal((200, 4)) * 0.1  # coarse-only features
    emb = features_embedding(feats)
    assert emb.dtype == np.float32 and np.allclose(np.linalg.norm(emb, axis=1), 1.0)
    out = planted_precision(emb * 7.0, {"fine": fine, "coarse": coarse}, k=10, sample=100, seed=2)
    assert out["coarse"] == 1.0
    assert 0.1 < out["fine"] < 0.35  # ~ 9/49 within the coarse category
    assert out["fine"] == label_precision_at_k(emb, fine, k=10, sample=100, seed=2)
    zero = features_embedding(np.zeros((3, 2)))
    assert np.array_equal(zero, np.zeros((3, 2), dtype=np.float32))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(k=0), r"k=0 is invalid"),
        (dict(k=20), r"k=20 is invalid: pass an int in \[1, num_items - 1 = 19\]"),
        (dict(labels=np.zeros(5)), r"labels has shape \(5,\)"),
        (dict(embeddings=np.zeros(20)), r"embeddings has shape \(20,\)"),
        (dict(sample=0), r"sample=0 is invalid"),
    ],
)
def test_validation(kwargs, message):
    args = {"embeddings": np.ones((20, 3)), "labels": np.zeros(20), "k": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        label_precision_at_k(args.pop("embeddings"), args.pop("labels"), **args)


def test_quickstart_baselines_on_a_graph_with_a_known_answer(tmp_path):
    """The quickstart's baseline row (features alone, popularity, ItemKNN on the same query
    items): noiseless features put every community at one point (precision 1); groups drawn
    only from their home community make ItemKNN's neighbours (shared groups) same-community;
    popularity ranks one list for every query, so it scores the share of that list's
    communities, near chance (1/4)."""
    from pinsage_ray.data import SyntheticConfig, generate_synthetic
    from pinsage_ray.graph import prepare
    from pinsage_ray.quickstart import QUICKSTART_BASELINES, baseline_same_community

    store = prepare(generate_synthetic(SyntheticConfig(
        num_items=200, num_groups=400, num_communities=4, p_in=1.0, feature_noise=0.0,
        seed=3)), tmp_path / "g")
    probes = store.item_ids.to_pylist()[::5]
    got = baseline_same_community(store, probes, k=5)
    assert tuple(got) == QUICKSTART_BASELINES
    assert got["features"] == 1.0
    assert got["itemknn"] == 1.0
    assert 0.05 < got["popularity"] < 0.6, got
