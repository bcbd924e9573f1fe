"""The sharded Ray service: identical answers to the in-process walker, and crash recovery."""

from __future__ import annotations

import numpy as np
import pytest

from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.sampling.service import ShardedGraph

pytestmark = pytest.mark.ray

QUERIES = np.arange(0, 400, 3)


def _answers(service):
    nb = service.importance_neighbors(QUERIES, num_walks=30, walk_length=3, restart_prob=0.5,
                                      top_t=8, seed=2)
    return {
        "walks": service.random_walks(QUERIES, num_walks=3, walk_length=5, restart_prob=0.3,
                                      seed=5),
        "nb_ids": nb.ids, "nb_weights": nb.weights,
        "pairs": np.stack(service.cooccurrence_pairs(QUERIES, num_walks=2, seed=8)),
        "ppr": service.ppr_rank_sample(QUERIES, 0.05, 0.5, 6, num_walks=40, seed=3,
                                       avoid=(QUERIES[:, None] + 1) % 400),
    }


@pytest.fixture(scope="module")
def reference(planted_graph):
    return _answers(LocalWalker(planted_graph))


@pytest.mark.parametrize("num_shards", [1, 2, 4])
def test_sharded_equals_in_process(ray_session, planted_graph, reference, num_shards):
    with ShardedGraph(planted_graph, num_shards, max_walkers=500) as service:
        assert len({info["item_range"] for info in service.shard_info}) == num_shards
        got = _answers(service)  # max_walkers=500 also exercises request chunking
    for key, value in reference.items():
        assert np.array_equal(got[key], value), key


def test_killed_shard_restarts_and_request_completes(ray_session, planted_graph, reference):
    import ray

    from pinsage_ray.sampling.api import Reducer
    from pinsage_ray.sampling.shard import WalkSpec

    service = ShardedGraph(planted_graph, 2, max_restarts=2)
    try:
        pid_before = ray.get(service.actors[1].info.remote())["pid"]
        spec = WalkSpec(3, 5, 0.3, 5)
        refs = service.submit(QUERIES, np.arange(len(QUERIES)), spec, Reducer("paths"))
        ray.kill(service.actors[1], no_restart=False)  # crash mid-request
        parts = ray.get(refs, timeout=120)
        from pinsage_ray.sampling.api import assemble

        assert np.array_equal(assemble(parts, len(QUERIES), spec)["paths"], reference["walks"])
        assert ray.get(service.actors[1].info.remote())["pid"] != pid_before
        # and the service keeps answering afterwards
        again = service.random_walks(QUERIES, num_walks=3, walk_length=5, restart_prob=0.3,
                                     seed=5)
        assert np.array_equal(again, reference["walks"])
    finally:
        service.shutdown()


def test_needs_ray_initialised(planted_graph, monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    with pytest.raises(RuntimeError, match="ray.init"):
        ShardedGraph(planted_graph, 2)
