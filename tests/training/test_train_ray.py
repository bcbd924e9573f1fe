"""Ray Train end to end on the planted graph: 2 workers learn, and a rerun resumes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pinsage_ray.training import TrainConfig, train

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_two_workers_learn_and_resume(ray_session, planted_graph, tmp_path):
    cfg = TrainConfig.preset("paper", num_epochs=2, num_workers=2, batch_size=64, batches_per_epoch=12,
                      num_shared_negatives=64, max_hard_negatives=2, hard_band=(0.05, 0.4),
                      lr=3e-3, val_fraction=0.1, prefetch=2, seed=1,
                      neighbors={"num_walks": 30, "top_t": 8})
    run = tmp_path / "run"
    first = train(planted_graph, run, cfg)
    assert [m["epoch"] for m in first.history] == [1, 2]
    assert [m["hard_negatives"] for m in first.history] == [0, 1]  # curriculum
    # 400 items: a random ranking hits the target in the top 10 with probability 0.025
    assert first.best["val_hit_at_10"] > 0.1
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    meta = json.loads((run / "model" / "model.json").read_text())
    assert meta["epoch"] == first.best["epoch"]

    # same run_dir, one more epoch: restores epoch 2's checkpoint and trains only epoch 3
    cfg.num_epochs = 3
    second = train(planted_graph, run, cfg)
    assert [m["epoch"] for m in second.history] == [1, 2, 3]
    assert second.history[:2] == first.history  # carried over, not retrained
    assert second.history[2]["hard_negatives"] == 2
    assert np.isfinite(second.history[2]["loss"])

    cfg.lr = 1.0  # a different run must not silently resume this one
    with pytest.raises(ValueError, match="lr"):
        train(planted_graph, run, cfg)


def test_softmax_loss_learns_through_ray_train(ray_session, planted_graph, tmp_path):
    """The sampled-softmax path end to end: it trains, logs, and ranks planted neighbours."""
    cfg = TrainConfig.preset("paper", num_epochs=2, num_workers=1, batch_size=64, batches_per_epoch=12,
                      num_shared_negatives=64, max_hard_negatives=1, hard_band=(0.05, 0.4),
                      lr=3e-3, val_fraction=0.1, seed=1, loss="softmax", temperature=0.1,
                      neighbors={"num_walks": 30, "top_t": 8})
    result = train(planted_graph, tmp_path / "run", cfg)
    losses = [m["loss"] for m in result.history]
    # a softmax over 1 positive + up to 66 negatives starts near log(67) = 4.2
    assert 1.0 < losses[0] < 5.0 and losses[1] < losses[0]
    assert 0.0 <= result.history[-1]["violated_fraction"] <= 1.0
    assert result.best["val_hit_at_10"] > 0.1  # chance: 0.025
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["epoch"] == result.best["epoch"]


@pytest.mark.parametrize("model", [
    {},  # the preset: linear propagation, every item per step (whole graph)
    {"conv": "paper", "num_layers": 2, "whole_graph_max_items": 0}])  # sampled K-hop blocks
def test_group_context_preset_learns_the_served_task(ray_session, planted_graph, tmp_path,
                                                     model):
    """The 'groups' preset through Ray Train: group-context batches, the group metric, and
    model selection on it; with sampled blocks and with whole-graph propagation."""
    cfg = TrainConfig.preset("groups", num_epochs=2, batch_size=64, batches_per_epoch=12,
                             num_shared_negatives=64, group_query_size=5, val_fraction=0.1,
                             seed=1, neighbors={"num_walks": 30, "top_t": 8}, **model)
    result = train(planted_graph, tmp_path / "run", cfg)
    last = result.history[-1]
    # 400 items in 8 planted communities: a random ranking hits the top 10 with p ~ 0.025
    assert last["val_group_hit_at_10"] > 0.1 and 0 < last["val_group_mrr"] <= 1
    assert result.best["val_group_hit_at_10"] == max(m["val_group_hit_at_10"]
                                                     for m in result.history)
    meta = json.loads((tmp_path / "run" / "model" / "model.json").read_text())
    assert meta["train_config"]["group_queries"] == 1.0
