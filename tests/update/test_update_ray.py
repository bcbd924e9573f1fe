"""The update's walks on Ray walk shards (``num_shards=2``) give the in-process result: the
same neighbourhoods as a full walk over every item, the same embeddings as a full recompute."""

from __future__ import annotations

import numpy as np
import pytest

from pinsage_ray.graph import GraphStore
from pinsage_ray.sampling import LocalWalker
from pinsage_ray.update import update_run

pytestmark = pytest.mark.ray

NEIGHBORS = {"num_walks": 20, "walk_length": 2, "restart_prob": 0.5, "top_t": 6}


def test_sharded_update_equals_full_recompute(ray_session, update_base, recompute):
    day = update_base["day"]
    result = update_run(update_base["run"], day["new"], item_features=day["new_feats"],
                        remove_items=day["remove"], num_shards=2)
    version = update_base["run"] / "updates" / result.version
    n = GraphStore(version / "graph").num_items
    full = LocalWalker(str(version / "graph")).importance_neighbors(np.arange(n), seed=1234567,
                                                                    **NEIGHBORS)
    nb = version / "inference" / "neighbors"
    np.testing.assert_array_equal(np.load(nb / "ids.npy"), full.ids)
    np.testing.assert_array_equal(np.load(nb / "weights.npy"), full.weights)
    out = np.load(version / "inference" / "output.npy")
    assert np.abs(out - recompute(version, update_base["graph"], update_base["enc"])).max() <= 1e-5
