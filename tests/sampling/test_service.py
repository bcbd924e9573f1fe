"""The sharded Ray service: identical answers to the in-process walker, and crash recovery.

Node loss (a shard's process and object store gone) is tested on a multi-node cluster in
``tests/multinode/test_faults.py``; here, what that recovery relies on.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.sampling.service import (ShardedGraph, ShardUnavailableError, _is_lost,
                                          default_shard_resources)

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
    """A shard killed while a request is running restarts (a new process, one restart in
    Ray's actor table) and the interrupted request completes with the unfaulted answer."""
    import ray

    from pinsage_ray.sampling.api import Reducer, assemble
    from pinsage_ray.sampling.shard import WalkSpec

    # a request long enough (~1 s of hops) that the kill lands while it runs
    spec = WalkSpec(2000, 5, 0.3, 5)
    unfaulted = LocalWalker(planted_graph).importance_neighbors(
        QUERIES, num_walks=2000, walk_length=5, restart_prob=0.3, top_t=8, seed=5)
    service = ShardedGraph(planted_graph, 2, max_restarts=2)
    try:
        before = ray.get(service.actors[1].info.remote())
        refs = service.submit(QUERIES, np.arange(len(QUERIES)), spec, Reducer("top_t", top_t=8))
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        ray.kill(service.actors[1], no_restart=False)  # crash mid-request
        assert not ready, "the request finished before the kill: make it longer"
        parts = ray.get(refs, timeout=120)
        got = assemble(parts, len(QUERIES), spec)
        assert np.array_equal(got["ids"], unfaulted.ids)
        assert np.array_equal(got["counts"], unfaulted.counts)
        after = ray.get(service.actors[1].info.remote())
        assert after["pid"] != before["pid"] and after["actor_id"] == before["actor_id"]
        assert service._states()[1]["NumRestarts"] == 1
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


def test_watched_gcs_fields_and_a_restart_seen(ray_session, planted_graph, reference):
    """The actor-table fields the service watches exist in this Ray, and count a restart;
    a request after a restart returns the same answer."""
    import ray

    service = ShardedGraph(planted_graph, 2, max_walkers=500)
    try:
        assert [s["State"] for s in service._states()] == ["ALIVE", "ALIVE"]
        assert service._restarts_seen == [0, 0]
        ray.kill(service.actors[0], no_restart=False)
        t0 = time.monotonic()
        while service._states()[0]["NumRestarts"] != 1:
            assert time.monotonic() - t0 < 60, service._states()[0]
            time.sleep(0.1)
        got = service.random_walks(QUERIES, num_walks=3, walk_length=5, restart_prob=0.3,
                                   seed=5)
        assert np.array_equal(got, reference["walks"])
    finally:
        service.shutdown()


def test_dead_shard_fails_fast_naming_it(ray_session, planted_graph):
    import ray

    service = ShardedGraph(planted_graph, 2, recovery_timeout_s=60)
    try:
        ray.kill(service.actors[1], no_restart=True)
        t0 = time.monotonic()
        with pytest.raises(ShardUnavailableError,
                           match=r"shard 1 of 2 \(items \[\d+, 400\), actor pinsage-shard-.*"
                                 r"DEAD\).*start a new ShardedGraph"):
            service.random_walks(QUERIES, num_walks=2, walk_length=3)
        assert time.monotonic() - t0 < 30  # dead is final: no wait for recovery_timeout_s
    finally:
        service.shutdown()


def test_default_shard_resources_follow_the_cluster(monkeypatch):
    import ray

    for units, shards, want in [(0, 4, {}), (2, 2, {"pinsage_shard": 1.0}),
                                (2, 3, {"pinsage_shard": 0.5}),
                                (3, 8, {"pinsage_shard": 1 / 3})]:
        monkeypatch.setattr(ray, "cluster_resources",
                            lambda u=units: {"CPU": 4.0, "pinsage_shard": float(u)})
        assert default_shard_resources(shards) == want


def test_lost_actor_or_object_errors_are_recognised():
    import ray

    assert _is_lost(ray.exceptions.ActorDiedError())
    assert _is_lost(ray.exceptions.ActorUnavailableError("restarting", None))
    try:
        try:
            raise ray.exceptions.ActorUnavailableError("restarting", None)
        except ray.exceptions.RayError as inner:
            raise RuntimeError("could not be computed") from inner
    except RuntimeError as outer:
        assert _is_lost(outer)
    assert not _is_lost(ValueError("a bug in a reducer"))
