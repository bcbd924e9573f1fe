"""Walk kernels without Ray: RNG, reachability, weighted choice, aggregation by hand."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pinsage_ray.data.types import RawDataset
from pinsage_ray.graph import GraphStore, prepare
from pinsage_ray.sampling import aggregate, rng
from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.sampling.shard import WalkSpec


def test_rng_is_a_pure_function_and_uniform():
    ids = np.arange(200_000)
    a = rng.uniforms(3, ids, 5, 1)
    assert np.array_equal(a, rng.uniforms(3, ids[::-1], 5, 1)[::-1])  # order-free
    assert not np.array_equal(a, rng.uniforms(4, ids, 5, 1))
    assert not np.array_equal(a, rng.uniforms(3, ids, 6, 1))
    hist = np.bincount((a * 10).astype(int), minlength=10) / len(a)
    assert np.abs(hist - 0.1).max() < 0.005
    hi, lo = rng.two_uniforms(3, ids, 5, 1)
    assert abs(np.corrcoef(hi, lo)[0, 1]) < 0.01
    assert 0 <= a.min() and a.max() < 1


def test_every_step_is_one_item_group_item_hop(planted_graph):
    store = GraphStore(planted_graph)
    ip, ix = np.asarray(store.array("item_indptr")), np.asarray(store.array("item_indices"))
    groups_of = [set(ix[ip[i]:ip[i + 1]].tolist()) for i in range(store.num_items)]
    walker = LocalWalker(planted_graph)
    seeds = np.arange(0, store.num_items, 7)
    for restart in (0.0, 0.4):
        paths = walker.random_walks(seeds, num_walks=3, walk_length=6, restart_prob=restart,
                                    seed=1)
        starts = np.repeat(seeds, 3)
        for seed_item, path in zip(starts, paths):
            prev = seed_item
            for item in path:
                ok = groups_of[prev] & groups_of[item]
                if restart == 0.0:
                    assert ok, "consecutive items must share a group"
                else:
                    assert ok or groups_of[seed_item] & groups_of[item]
                prev = item


def _tiny(weights, tmp_path):
    ds = RawDataset("w", pa.table({"item": [0, 1, 2, 3], "group": [0, 0, 0, 0],
                                   "weight": weights}))
    return prepare(ds, tmp_path / "g").uri


def test_weighted_choice_follows_weights(tmp_path):
    walker = LocalWalker(_tiny([1.0, 2.0, 3.0, 4.0], tmp_path))
    p = walker.random_walks(np.zeros(100_000, dtype=np.int64), walk_length=1, seed=3)
    freq = np.bincount(p[:, 0], minlength=4) / len(p)
    assert np.allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.006)
    p = walker.random_walks(np.zeros(100_000, dtype=np.int64), walk_length=1, seed=3,
                            weighted=False)
    assert np.allclose(np.bincount(p[:, 0]) / len(p), 0.25, atol=0.006)


def test_guide_table_choice_equals_binary_search(tmp_path):
    r = np.random.default_rng(0)
    n = 30_000
    ds = RawDataset("w", pa.table({"item": r.integers(0, 300, n),
                                   "group": (r.pareto(1.0, n) * 5).astype(int) % 200,
                                   "weight": r.random(n) ** 4 + 1e-3}))
    walker = LocalWalker(prepare(ds, tmp_path / "g").uri)
    rows = walker.shard.groups
    nodes = r.integers(0, len(rows.indptr) - 1, 50_000)
    u = r.random(50_000)
    s, e = rows.indptr[nodes], rows.indptr[nodes + 1]
    target = rows.cum[s] + (u * (rows.cum[e] - rows.cum[s])).astype(np.int64)
    expected = rows.indices[np.searchsorted(rows.cum, target, side="right") - 1]
    assert np.array_equal(rows.choose(nodes, u, True), expected)


def test_top_t_by_hand():
    visits = np.array([[5, 3, 3, 9, 5, 3, 0, -1],
                       [1, 1, 1, 1, -1, -1, -1, -1]])
    nb = aggregate.top_t(visits, seeds=np.array([0, 1]), t=3)
    assert nb.ids.tolist() == [[3, 5, 9], [-1, -1, -1]]  # seed 0 excluded; 9 beats nothing
    assert nb.counts.tolist() == [[3, 2, 1], [0, 0, 0]]
    assert np.allclose(nb.weights, [[0.5, 1 / 3, 1 / 6], [0, 0, 0]])


def test_top_t_ties_prefer_smaller_ids():
    nb = aggregate.top_t(np.array([[8, 4, 6, 2]]), np.array([0]), t=2)
    assert nb.ids.tolist() == [[2, 4]]


def test_resolve_band():
    assert aggregate.resolve_band(0.1, 0.5, 101) == (10, 50)
    assert aggregate.resolve_band(2, 500, 101) == (2, 100)
    with pytest.raises(ValueError, match="empty"):
        aggregate.resolve_band(0.5, 0.5, 101)
    with pytest.raises(ValueError, match="fraction"):
        aggregate.resolve_band(0.1, 1.5, 101)


def test_rank_band_sample_by_hand():
    # counts for query 0 (seed 0): item 7 x3, item 4 x2, item 9 x1 -> ranks 0, 1, 2
    visits = np.array([[7, 7, 7, 4, 4, 9, 0, 0]])
    seeds, pos = np.array([0]), np.array([0])
    head = aggregate.rank_band_sample(visits, seeds, pos, (1, 3), 200, 20, seed=1)
    assert set(head.ravel().tolist()) == {4, 9}
    tail = aggregate.rank_band_sample(visits, seeds, pos, (3, 19), 300, 20, seed=1)
    assert set(tail.ravel().tolist()) == set(range(20)) - {0, 4, 7, 9}
    avoid = aggregate.rank_band_sample(visits, seeds, pos, (1, 3), 50, 20, seed=1,
                                       avoid=np.array([[4, -1]]))
    assert set(avoid.ravel().tolist()) == {9}
    nothing = aggregate.rank_band_sample(visits, seeds, pos, (1, 2), 5, 20, seed=1,
                                         avoid=np.array([[4]]))
    assert (nothing == -1).all()


def test_walkspec_validation():
    for kwargs, match in [({"num_walks": 0}, "num_walks"), ({"walk_length": 2.5}, "walk_length"),
                          ({"restart_prob": 1.0}, "restart_prob")]:
        args = {"num_walks": 1, "walk_length": 1, **kwargs}
        with pytest.raises(ValueError, match=match):
            WalkSpec(**args)


def test_bad_items_rejected(planted_graph):
    walker = LocalWalker(planted_graph)
    with pytest.raises(ValueError, match="outside"):
        walker.random_walks([0, 10_000])
    with pytest.raises(ValueError, match="item_index"):
        walker.random_walks(["a"])
    with pytest.raises(ValueError, match="top_t"):
        walker.importance_neighbors([0], top_t=0)
