"""Group-context examples and batches without Ray: sets, held-out items, leakage, pooling."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
import torch

from pinsage_ray.data.types import RawDataset
from pinsage_ray.graph import GraphStore, prepare
from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.training import BatchProducer, TrainConfig, make_pairs
from pinsage_ray.training.groups import GroupExamples
from pinsage_ray.training.loop import batch_loss, evaluate_group_queries, pool_sets


def _group_items(store: GraphStore) -> list[set[int]]:
    indptr, items = store.array("group_indptr"), store.array("group_indices")
    return [set(items[indptr[g]:indptr[g + 1]].tolist()) for g in range(store.num_groups)]


def test_sets_hold_other_items_of_the_positives_group(planted_graph):
    store = GraphStore(planted_graph)
    ex = GroupExamples(store, val_fraction=0.2, seed=1)
    members = _group_items(store)
    held = set(zip(ex.val_groups.tolist(), ex.val_items.tolist()))
    q = ex.sample(np.random.default_rng(0), 500, set_size=4)
    assert q.query_sets.shape == (500, 4) and len(q) == 500
    for row, p in zip(q.query_sets, q.positives):
        s = row[row >= 0]
        assert len(s) >= 1 and p not in s and len(set(s.tolist())) == len(s)
        # every set item shares one group with the positive, and none of them is held out
        owners = [g for g, m in enumerate(members) if p in m and set(s.tolist()) <= m]
        assert owners
        assert any(all((g, int(i)) not in held for i in s) for g in owners)
    # deterministic for a seed, different for another
    again = ex.sample(np.random.default_rng(0), 500, set_size=4)
    assert np.array_equal(again.query_sets, q.query_sets)
    assert not np.array_equal(ex.sample(np.random.default_rng(1), 500, 4).query_sets,
                              q.query_sets)


def test_small_groups_by_hand(tmp_path):
    ds = RawDataset("g", pa.table({"item": [1, 2, 3, 1, 4, 5], "group": [0, 0, 0, 1, 1, 2]}))
    store = prepare(ds, tmp_path / "g")
    ex = GroupExamples(store)
    ids = np.asarray(store.item_ids)
    # group 2 has one item: never a positive; groups 0 and 1 give 3 + 2 examples
    assert len(ex) == 5
    q = ex.sample(np.random.default_rng(0), 200, set_size=5)
    for row, p in zip(q.query_sets, q.positives):
        s = sorted(ids[row[row >= 0]].tolist())
        expect = {1: [[2, 3], [4]], 2: [[1, 3]], 3: [[1, 2]], 4: [[1]]}[int(ids[p])]
        assert s in expect
    sets, pos = ex.validation(10)
    assert len(sets) == len(pos) == 0
    with pytest.raises(ValueError, match="no group has two or more items"):
        GroupExamples(prepare(RawDataset("h", pa.table({"item": [1, 2], "group": [0, 1]})),
                              tmp_path / "h"))


def test_held_out_interactions_never_train(planted_graph):
    store = GraphStore(planted_graph)
    ex = GroupExamples(store, val_fraction=0.3, seed=2)
    train = set(zip(ex.owner.tolist(), ex.items.tolist()))
    held = set(zip(ex.val_groups.tolist(), ex.val_items.tolist()))
    assert held and not train & held
    sets, pos = ex.validation(50, seed=0)
    assert len(sets) == len(pos) <= 50
    members = _group_items(store)
    for s, p in zip(sets, pos):
        g = next(g for g in range(store.num_groups) if set(s.tolist()) == set(
            ex.items[ex.indptr[g]:ex.indptr[g + 1]].tolist()) and p in members[g])
        assert p not in set(s.tolist()) and (g, int(p)) in held


def test_group_batch_pools_and_removes_the_positives_links(planted_graph):
    store = GraphStore(planted_graph)
    cfg = TrainConfig.preset("paper", batch_size=24, num_shared_negatives=30, max_hard_negatives=0, seed=4,
                      group_queries=0.5, group_query_size=3, loss="softmax",
                      use_id_embedding=True, id_dropout=0.3)
    pairs = make_pairs(store, LocalWalker(planted_graph), positives="walks", seed=4)
    batch = BatchProducer(planted_graph, cfg, pairs).batch(epoch=1, index=0)
    sets = batch.query_set.numpy()
    assert sets.shape == (24, 3)
    # the first 12 rows are item pairs (a set of one), the last 12 group-context examples
    assert (sets[:12, 1:] == -1).all() and (sets[12:, 0] >= 0).all()
    assert np.array_equal(sets[:, 0], batch.query.numpy())
    inp = batch.inp
    dropped = (inp.node_ids.numpy() < 0).mean()  # id dropout: these train without ids
    assert 0.15 < dropped < 0.45
    # leakage: no set item has the positive as a neighbour (at the last hop), and back
    blocks = inp.blocks
    first = batch.inp.num_output_nodes
    assert first == blocks[-1].num_dst
    nbrs = blocks[-1].neighbors.numpy()
    for row, p in zip(sets, batch.positive.numpy()):
        for s in row[row >= 0]:
            assert p not in set(nbrs[s][nbrs[s] >= 0].tolist())
            assert s not in set(nbrs[p][nbrs[p] >= 0].tolist())
    emb = torch.nn.functional.normalize(torch.randn(first, 8), dim=1)
    loss = batch_loss(emb, batch, cfg)
    single = batch_loss(emb, dataclasses.replace(batch, query_set=None), cfg)
    assert torch.isfinite(loss) and not torch.isclose(loss, single)


def test_pool_sets_and_group_evaluation_by_hand():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    pooled = pool_sets(emb, torch.tensor([[0, 1, -1], [2, -1, -1]]))
    s = 2 ** -0.5
    assert torch.allclose(pooled, torch.tensor([[s, s], [0.6, 0.8]]))
    # group {0, 1}: pooled (s, s) scores item 2 at 0.99, item 3 at -0.71 (0, 1 excluded)
    out = evaluate_group_queries(emb.numpy(), [np.array([0, 1]), np.array([2])],
                                 np.array([3, 1]), k=1)
    # query 1: the positive 3 ranks 2nd; query 2: from (0.6, 0.8) item 1 (0.8) ranks 1st
    assert out == {"val_group_hit_at_1": 0.5, "val_group_mrr": 0.75}
