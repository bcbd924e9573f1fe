import json

import numpy as np
import pytest

from pinsage_ray.evaluation.diagnostics import cosine_pair_stats, embedding_diagnostics


def test_identical_vectors_have_similarity_one():
    s = cosine_pair_stats(np.tile([[3.0, 4.0]], (10, 1)), num_pairs=500)
    assert s["mean"] == pytest.approx(1.0)
    assert s["std"] == pytest.approx(0.0, abs=1e-12)
    assert sum(s["hist_counts"]) == 500


def test_two_opposite_clusters():
    # half the rows are e1, half -e1: a random distinct pair is equal with prob 4/9 (5 rows per
    # side, 9 partners each), else opposite -> mean = 4/9 - 5/9 = -1/9.
    x = np.vstack([np.tile([1.0, 0.0], (5, 1)), np.tile([-2.0, 0.0], (5, 1))])
    s = cosine_pair_stats(x, num_pairs=200_000, seed=1)
    assert s["mean"] == pytest.approx(-1 / 9, abs=0.01)
    assert set(np.unique(np.round(s["sims"], 9))) <= {-1.0, 1.0}


def test_random_gaussian_vectors_are_near_orthogonal():
    d = 64
    x = np.random.default_rng(0).normal(size=(2000, d))
    s = cosine_pair_stats(x, num_pairs=50_000)
    assert abs(s["mean"]) < 0.01
    assert s["std"] == pytest.approx(1 / np.sqrt(d), rel=0.05)  # var of cos = 1/d
    assert abs(s["kurtosis"]) < 0.3  # close to Gaussian in high dimension


def test_pairs_never_pair_an_item_with_itself():
    x = np.eye(3)  # distinct rows are orthogonal; a self-pair would give 1
    s = cosine_pair_stats(x, num_pairs=1000)
    assert s["max"] == pytest.approx(0.0)


def test_embedding_diagnostics_writes_files(tmp_path, monkeypatch):
    import pyarrow as pa

    from pinsage_ray.inference import pipeline

    x = np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32)
    monkeypatch.setattr(pipeline, "load_embeddings", lambda run_dir: (pa.array(range(100)), x))
    s = embedding_diagnostics(tmp_path, num_pairs=1000)
    saved = json.loads((tmp_path / "diagnostics" / "cosine_pairs.json").read_text())
    assert saved["mean"] == pytest.approx(s["mean"])
    assert saved["num_items"] == 100 and saved["dim"] == 8
    if s["plot"] is not None:
        assert (tmp_path / "diagnostics" / "cosine_pairs.png").stat().st_size > 0
