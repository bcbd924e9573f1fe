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


# Measured with planted_recovery on this preset graph, default TrainConfig(), seeds 0-4
# (issue 20; 50-55 s a run on 2 cores):
#   fine p@10   PinSage 0.739 0.737 0.758 0.761 0.726 | SVD 0.697 0.711 0.687 0.703 0.706
#               features 0.085-0.093
#   coarse p@10 PinSage 0.949 0.942 0.968 0.956 0.936 | features 0.880 0.881 0.931 0.929 0.876
# so PinSage - SVD on fine is 0.020-0.071 and PinSage - features on coarse 0.026-0.068; the
# bounds below sit under the smallest margin seen. (Where the fine signal comes from: the same
# recipe with num_layers=0 scores 0.630-0.660 on seeds 0-2, but the recipe with its layers'
# neighbour input zeroed scores 0.735 on seed 0: the learned id vectors and dense layers
# carry it, not the neighbour aggregation, so no bound here credits the convolution.)
FINE_OVER_SVD = 0.01


def test_default_recipe_learns_the_graph_beyond_features_and_svd(ray_session, tmp_path):
    """The product's main claim, guarded: trained with the defaults, PinSage finds the fine
    communities that live only in the graph better than a 64-d SVD of it and far better than
    the features (which carry only the coarse category), and keeps the coarse categories at
    least as well as the features do. A model that learned nothing beyond its features, or
    no more than the SVD, fails here."""
    from pinsage_ray.evaluation.oracle import planted_recovery

    out = planted_recovery(TrainConfig(), tmp_path, seed=0)
    assert out["fine_p10_pinsage"] > out["fine_p10_svd"] + FINE_OVER_SVD, out
    assert out["fine_p10_pinsage"] > 5 * out["fine_p10_features"], out
    assert out["coarse_p10_pinsage"] > out["coarse_p10_features"], out
