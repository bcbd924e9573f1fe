"""End-to-end oracles on the two-level planted graph (real prepare, Ray Train and embed).

The cold-start oracle of issue 11: items held out of training entirely, embedded inductively
from features and groups, must beat their features alone and random vectors on held-out pairs.
"""

from __future__ import annotations

import pytest

from pinsage_ray.evaluation.oracle import cold_start
from pinsage_ray.training import TrainConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_cold_items_beat_features_and_random(ray_session, tmp_path):
    cfg = TrainConfig.preset("items", num_epochs=2, batches_per_epoch=40)
    out = cold_start(cfg, tmp_path, seed=0)
    assert out["coldstart_items"] >= 300 and out["coldstart_pairs"] > 1000
    assert out["coldstart_hit10_pinsage"] > 1.5 * out["coldstart_hit10_features"]
    assert out["coldstart_hit10_features"] > out["coldstart_hit10_random"]
