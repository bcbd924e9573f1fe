"""Producers without per-item arrays: degrees read from the CSR, shared negatives without a
CDF past ``cdf_max_items`` (their distribution checked against the target), and the
per-batch neighbourhood walks past ``neighbor_table_max_items``."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from pinsage_ray.graph import GraphStore
from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.training import BatchProducer, TrainConfig, make_pairs
from pinsage_ray.training.negatives import ItemDegrees, NegativeSampler
from pinsage_ray.training.producer import batch_seed


def _skewed_graph(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(item indptr, the item of every edge) for 300 items with degrees 0..~400."""
    rng = np.random.default_rng(seed)
    degree = np.minimum(rng.zipf(1.6, 300), 400)
    degree[:5] = 0  # items without edges: never a degree-sampled negative
    indptr = np.concatenate([[0], np.cumsum(degree)])
    edge_items = rng.permutation(np.repeat(np.arange(300), degree))  # any group order
    return indptr, edge_items


def _tv(draws: np.ndarray, p: np.ndarray) -> float:
    """Total-variation distance between the draws' frequencies and ``p``."""
    freq = np.bincount(draws, minlength=len(p)) / len(draws)
    return 0.5 * float(np.abs(freq - p / p.sum()).sum())


def test_item_degrees_read_from_the_csr():
    indptr, _ = _skewed_graph()
    deg = ItemDegrees(indptr)
    nodes = np.array([3, 0, 299, 3, 17])
    assert len(deg) == 300
    np.testing.assert_array_equal(deg[nodes], np.diff(indptr)[nodes])
    np.testing.assert_array_equal(deg.log1p(nodes),
                                  np.log1p(np.diff(indptr).astype(np.float32))[nodes])


def test_degree_negatives_by_rejection_follow_degree_to_the_three_quarters():
    indptr, edge_items = _skewed_graph()
    deg = np.diff(indptr).astype(np.float64)
    sampler = NegativeSampler("degree", ItemDegrees(indptr), edge_items, cdf_max_items=0)
    assert sampler.method == "rejection" and sampler.cdf is None
    draws = sampler.sample(np.random.default_rng(1), 400_000)
    assert draws.shape == (400_000,) and draws.dtype == np.int64
    assert not np.isin(draws, np.arange(5)).any()  # degree-0 items never drawn
    assert _tv(draws, deg ** 0.75) < 0.01
    assert _tv(draws, deg) > 0.05  # not the edge distribution it starts from
    exact = NegativeSampler("degree", ItemDegrees(indptr)).sample(np.random.default_rng(1),
                                                                  400_000)
    assert _tv(exact, deg ** 0.75) < 0.01  # the CDF sampler: the same target
    again = sampler.sample(np.random.default_rng(1), 400_000)
    np.testing.assert_array_equal(draws, again)  # seeded


def test_uniform_negatives_without_a_cdf_draw_what_the_cdf_drew():
    indptr, _ = _skewed_graph()
    with_cdf = NegativeSampler("uniform", ItemDegrees(indptr))
    without = NegativeSampler("uniform", ItemDegrees(indptr), cdf_max_items=0)
    assert (with_cdf.method, without.method) == ("cdf", "index") and without.cdf is None
    a = with_cdf.sample(np.random.default_rng(4), 100_000)
    b = without.sample(np.random.default_rng(4), 100_000)
    np.testing.assert_array_equal(a, b)


def test_sampler_input_errors():
    indptr, _ = _skewed_graph()
    with pytest.raises(ValueError, match="negative_sampling='popular'"):
        NegativeSampler("popular", ItemDegrees(indptr))
    with pytest.raises(ValueError, match="need edge_items"):
        NegativeSampler("degree", ItemDegrees(indptr), None, cdf_max_items=0)


def test_big_graph_producer_walks_each_batch_and_holds_no_item_arrays(planted_graph):
    """With the thresholds below the graph's size, a producer keeps no per-item array (its
    degrees are an ItemDegrees view, no CDF, no epoch table) and its batches hold exactly
    the neighbourhoods the walk service gives the batch's nodes for the batch's seed."""
    store = GraphStore(planted_graph)
    walker = LocalWalker(planted_graph)
    cfg = TrainConfig.preset("paper", batch_size=16, num_shared_negatives=30, seed=2,
                             num_layers=1, neighbor_table_max_items=0)
    pairs = make_pairs(store, walker, positives="walks", val_fraction=0.1, seed=2)
    big = BatchProducer(store.uri, cfg, pairs)
    assert big.builder.neighbors.mode == "batch"
    small = BatchProducer(store.uri, dataclasses.replace(cfg, neighbor_table_max_items=10**9),
                          pairs)
    assert small.builder.neighbors.mode == "epoch"
    assert isinstance(big.builder.degree, ItemDegrees)
    sampler = NegativeSampler.for_graph("degree", store, ItemDegrees.of(store), 0)
    assert sampler.method == "rejection" and len(sampler.edge_items) == store.num_edges
    batch = big.batch(epoch=2, index=1)
    out = batch.inp.node_ids[: batch.inp.blocks[-1].num_dst].numpy()
    seed = batch_seed(cfg.seed, 0, 2, 1)
    # every output node's neighbours in the block are among its walked neighbourhood for
    # the batch's seed (the pair links removed), and the epoch table's differ
    nc = big.config.neighbors
    walked = walker.importance_neighbors(out, num_walks=nc.num_walks,
                                         walk_length=nc.walk_length,
                                         restart_prob=nc.restart_prob, top_t=nc.top_t,
                                         seed=seed)
    block = batch.inp.blocks[-1]
    src = batch.inp.node_ids[: block.num_src].numpy()
    for row, want in zip(block.neighbors.numpy(), walked.ids):
        assert set(src[row[row >= 0]].tolist()) <= set(want[want >= 0].tolist())
    table = small.builder.neighbors(out, 2, seed)
    assert (table.ids != walked.ids).any()
