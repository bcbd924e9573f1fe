"""Minibatch construction without Ray: pairs, leakage rule, hard negatives, curriculum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest
import torch

from pinsage_ray.data.types import RawDataset
from pinsage_ray.graph import GraphStore, prepare
from pinsage_ray.sampling.aggregate import Neighborhood
from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.training import BatchProducer, TrainConfig, make_pairs
from pinsage_ray.training.batches import remove_links
from pinsage_ray.training.pairs import sequence_pairs
from pinsage_ray.training.producer import batch_seed


@pytest.fixture(scope="module")
def setup(planted_graph):
    store = GraphStore(planted_graph)
    walker = LocalWalker(planted_graph)
    cfg = TrainConfig.preset("paper", batch_size=32, num_shared_negatives=40, max_hard_negatives=3,
                      hard_band=(10, 100), seed=3)
    pairs = make_pairs(store, walker, positives="walks", val_fraction=0.1, seed=3)
    return store, walker, cfg, pairs


def test_sequence_pairs_follow_time_order(tmp_path):
    ds = RawDataset("s", pa.table({"item": [1, 2, 3, 4, 2], "group": [0, 0, 0, 1, 1],
                                   "timestamp": [3, 1, 2, 5, 4]}))
    store = prepare(ds, tmp_path / "g")
    q, p = sequence_pairs(store)
    ids = np.asarray(store.item_ids)
    # group 0 in time order: 2, 3, 1 ; group 1: 2, 4
    assert sorted(zip(ids[q].tolist(), ids[p].tolist())) == [(2, 3), (2, 4), (3, 1)]


def test_sequence_window_by_hand(tmp_path):
    # group 0 in time order: 2, 3, 1, 5 ; group 1: 2, 4
    ds = RawDataset("s", pa.table({"item": [1, 2, 3, 4, 2, 5], "group": [0, 0, 0, 1, 1, 0],
                                   "timestamp": [3, 1, 2, 5, 4, 9]}))
    store = prepare(ds, tmp_path / "g")
    ids = np.asarray(store.item_ids)
    q, p = sequence_pairs(store, window=2)
    assert sorted(zip(ids[q].tolist(), ids[p].tolist())) == [
        (1, 5), (2, 1), (2, 3), (2, 4), (3, 1), (3, 5)]
    q1, _ = sequence_pairs(store, window=1)
    assert len(q1) == 4
    with pytest.raises(ValueError, match="window=0"):
        sequence_pairs(store, window=0)
    walker = LocalWalker(tmp_path / "g")
    counted = make_pairs(store, walker, positives="sequence", window=2, val_fraction=0.0)
    distinct = make_pairs(store, walker, positives="sequence", window=2, val_fraction=0.0,
                          weighting="distinct")
    both = make_pairs(store, walker, positives="sequence", window=2, val_fraction=0.0,
                      symmetric=True)
    assert len(counted.train_q) == len(distinct.train_q) == 6
    assert len(both.train_q) == 12
    assert sorted(zip(both.train_q.tolist(), both.train_p.tolist())) == sorted(
        list(zip(q.tolist(), p.tolist())) + list(zip(p.tolist(), q.tolist())))


def test_pair_counts_weight_training_and_never_cross_the_split(tmp_path):
    # (a, b) in sequence for 6 users, (c, d) for 1: counting keeps 6 occurrences.
    rows = [(u, it, t) for u in range(6) for t, it in enumerate([10, 11])] + [(9, 12, 0),
                                                                           (9, 13, 1)]
    ds = RawDataset("c", pa.table({"group": [r[0] for r in rows], "item": [r[1] for r in rows],
                                   "timestamp": [r[2] for r in rows]}))
    store = prepare(ds, tmp_path / "g")
    walker = LocalWalker(tmp_path / "g")
    ids = np.asarray(store.item_ids)
    counted = make_pairs(store, walker, positives="sequence", val_fraction=0.0)
    pairs = list(zip(ids[counted.train_q].tolist(), ids[counted.train_p].tolist()))
    assert pairs.count((10, 11)) == 6 and pairs.count((12, 13)) == 1
    distinct = make_pairs(store, walker, positives="sequence", val_fraction=0.0,
                          weighting="distinct")
    assert len(distinct.train_q) == 2
    for seed in range(4):  # the validation pair never appears among the training occurrences
        sp = make_pairs(store, walker, positives="sequence", val_fraction=0.5, seed=seed)
        assert len(sp.val_q) == 1
        train = set(zip(sp.train_q.tolist(), sp.train_p.tolist()))
        assert (int(sp.val_q[0]), int(sp.val_p[0])) not in train
    with pytest.raises(ValueError, match="weighting='often'"):
        make_pairs(store, walker, positives="sequence", weighting="often")
    with pytest.raises(ValueError, match="pair_weighting"):
        TrainConfig(pair_weighting="often")


def test_pairs_split_disjoint_and_valid(setup):
    store, _, _, pairs = setup
    assert (pairs.train_q != pairs.train_p).all()
    train = set(zip(pairs.train_q.tolist(), pairs.train_p.tolist()))
    val = set(zip(pairs.val_q.tolist(), pairs.val_p.tolist()))
    assert not train & val and len(val) > 0
    assert pairs.source == "walks"


def test_remove_links_by_hand():
    nb = Neighborhood(np.array([[5, 6, 7], [1, -1, -1]]), np.array([[.5, .3, .2], [1, 0, 0]],
                                                                     np.float32),
                      np.array([[5, 3, 2], [4, 0, 0]]))
    assert remove_links(nb, np.array([0, 1]), np.array([6, 9])) == 1
    assert nb.ids.tolist() == [[5, -1, 7], [1, -1, -1]]
    assert np.allclose(nb.weights[0], [5 / 7, 0, 2 / 7])




def test_batch_structure_leakage_and_hard_negatives(setup):
    store, walker, cfg, pairs = setup
    producer = BatchProducer(store.uri, cfg, pairs)
    batch = producer.batch(epoch=3, index=0)  # epoch 3: 2 hard negatives per query
    inp = batch.inp
    assert len(inp.blocks) == cfg.num_layers
    assert inp.blocks[0].num_src == len(inp.node_ids)
    for lower, upper in zip(inp.blocks, inp.blocks[1:]):
        assert upper.num_src == lower.num_dst
    out_nodes = inp.node_ids[: inp.blocks[-1].num_dst].numpy()
    q = out_nodes[batch.query.numpy()]
    p = out_nodes[batch.positive.numpy()]
    assert batch.num_examples == cfg.batch_size and (q != p).all()
    # leakage: at every layer, the positive is not a neighbour of its query and vice versa
    for block in inp.blocks:
        nbrs = block.neighbors.numpy()
        src_ids = inp.node_ids[: block.num_src].numpy()
        pos_in_dst = {int(n): i for i, n in enumerate(src_ids[: block.num_dst])}
        for a, b in zip(q, p):
            for x, y in ((a, b), (b, a)):
                row = nbrs[pos_in_dst[int(x)]]
                assert int(y) not in set(src_ids[row[row >= 0]].tolist())
    # hard negatives: 2 per query (curriculum), never the query or its positive, in the band
    hard = batch.hard.numpy()
    assert hard.shape == (cfg.batch_size, 2)
    hard_ids = np.where(hard >= 0, out_nodes[np.maximum(hard, 0)], -1)
    assert (hard_ids >= 0).all()
    assert (hard_ids != q[:, None]).all() and (hard_ids != p[:, None]).all()
    # ... and inside the PPR rank band [10, 100): the ranks recomputed here from the same walks
    # (the batch's seed), every visited item ranked by visit count (ties: smaller id first)
    ranks = _ppr_ranks(walker, producer.config, q, batch_seed(cfg.seed, 0, 3, 0))
    lo, hi = cfg.hard_band
    visited = 0
    for row, ids in zip(ranks, hard_ids):
        for h in ids:
            if h in row:  # a visited item: its rank
                assert lo <= row[h] < hi, (h, row[h])
                visited += 1
            else:  # unvisited items share the ranks after the visited ones
                assert len(row) < hi, (h, len(row))
    assert visited > len(q) // 4  # measured 24 of 64: many samples are ranked items
    # the padded neighbour slots carry zero weight, real rows sum to one
    w = inp.blocks[-1].weights.numpy()
    real = inp.blocks[-1].neighbors.numpy() >= 0
    assert np.all(w[~real] == 0)
    assert np.allclose(w.sum(1)[real.any(1)], 1.0, atol=1e-5)


def _ppr_ranks(walker, cfg: TrainConfig, queries: np.ndarray, seed: int) -> list[dict]:
    """Per query, ``{item: PPR rank}`` of every item its rank-band walks visited."""
    nb = walker.importance_neighbors(queries, num_walks=cfg.hard_num_walks,
                                     walk_length=cfg.neighbors.walk_length,
                                     restart_prob=cfg.neighbors.restart_prob,
                                     top_t=walker.num_items, seed=seed)
    return [{int(i): r for r, i in enumerate(row[row >= 0])} for row in nb.ids]


def test_curriculum_changes_what_batches_hold(setup):
    """Epoch 1 batches hold no hard negatives, epoch n holds min(n - 1, cap) real ones per
    query (output nodes of the batch); without the curriculum every epoch holds the cap."""
    store, _, cfg, pairs = setup
    producer = BatchProducer(store.uri, cfg, pairs)
    for epoch in range(1, 6):
        batch = producer.batch(epoch, 1)
        want = min(epoch - 1, cfg.max_hard_negatives)
        real = (batch.hard >= 0).sum(dim=1).numpy()
        assert (real == want).all(), (epoch, real)
        out_ids = batch.inp.output_node_ids.numpy()
        hard_ids = out_ids[batch.hard.numpy()]  # every slot is real: no -1 left to index
        assert (hard_ids != out_ids[batch.query.numpy()][:, None]).all()
    flat = BatchProducer(store.uri, dataclasses.replace(cfg, curriculum=False), pairs)
    assert ((flat.batch(1, 1).hard >= 0).sum(dim=1) == cfg.max_hard_negatives).all()


def test_batch_loss_with_hard_negatives_by_hand():
    """``batch_loss`` on a 2-query batch with shared and hard negatives (one padded), both
    losses computed here from the dot products written out."""
    import math

    from pinsage_ray.training.loop import batch_loss
    from pinsage_ray.training.batches import TrainBatch

    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6], [-1.0, 0.0],
                        [0.28, 0.96]])
    # queries 0, 1 with positives 2, 3; shared negatives 4 and 3 (3 is query 1's positive);
    # hard negatives: query 0 has item 5 and a padded slot, query 1 has items 2 and 5
    batch = TrainBatch(None, torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 3]),
                       torch.tensor([[5, -1], [2, 5]]))
    # scores s(q, x) = e_q . e_x
    pos = [0.6, 0.6]                          # s(0, 2), s(1, 3)
    shared = [[-1.0, 0.8], [0.0, 0.6]]        # s(q, 4), s(q, 3)
    hard = [[0.28], [0.8, 0.96]]              # real hard negatives only
    margin = 0.1
    terms = [max(0.0, s - pos[b] + margin) for b in range(2) for s in shared[b] + hard[b]]
    want = sum(terms) / 7  # 2 queries x 2 shared + 3 real hard negatives
    cfg = TrainConfig.preset("paper", margin=margin)
    assert cfg.loss == "max_margin"
    assert batch_loss(emb, batch, cfg).item() == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx((0.3 + 0.1 + 0.3 + 0.46) / 7)
    # softmax: the positive against every negative; shared 3 is query 1's positive: dropped
    t = 0.5
    logits = [[pos[0], *shared[0], *hard[0]], [pos[1], shared[1][0], *hard[1]]]
    want = sum(math.log(sum(math.exp(x / t) for x in row)) - row[0] / t for row in logits) / 2
    soft = dataclasses.replace(cfg, loss="softmax", temperature=t)
    assert batch_loss(emb, batch, soft).item() == pytest.approx(want, abs=1e-5)


def test_curriculum_and_determinism(setup):
    store, _, cfg, pairs = setup
    producer = BatchProducer(store.uri, cfg, pairs)
    assert producer.batch(1, 0).hard.shape[1] == 0
    assert producer.batch(2, 0).hard.shape[1] == 1
    assert producer.batch(9, 0).hard.shape[1] == cfg.max_hard_negatives
    a, b = producer.batch(2, 1), BatchProducer(store.uri, cfg, pairs).batch(2, 1)
    assert np.array_equal(a.inp.node_ids.numpy(), b.inp.node_ids.numpy())
    assert np.array_equal(a.hard.numpy(), b.hard.numpy())
    other = producer.batch(2, 2)
    assert not np.array_equal(a.query.numpy(), other.query.numpy()) or \
        not np.array_equal(a.inp.node_ids.numpy(), other.inp.node_ids.numpy())


def test_ranks_split_the_training_occurrences(setup):
    """Every training occurrence goes to exactly one rank (a pair seen twice may feed both)."""
    store, _, cfg, pairs = setup
    r0 = BatchProducer(store.uri, cfg, pairs, rank=0, world=2)
    r1 = BatchProducer(store.uri, cfg, pairs, rank=1, world=2)
    assert abs(len(r0.q) - len(r1.q)) <= 1
    ranks = np.sort(np.concatenate([r0.q * 10_000 + r0.p, r1.q * 10_000 + r1.p]))
    assert np.array_equal(ranks, np.sort(pairs.train_q * 10_000 + pairs.train_p))
    assert r0.num_batches == r1.num_batches


def test_config_validation():
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig.preset("paper", batch_size=0)
    with pytest.raises(ValueError, match="positives"):
        TrainConfig(positives="clicks")
    with pytest.raises(ValueError, match="unknown TrainConfig"):
        TrainConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="bpr")
    with pytest.raises(ValueError, match="temperature"):
        TrainConfig(loss="softmax", temperature=-1.0)
    with pytest.raises(ValueError, match="conv='gat'"):
        TrainConfig(conv="gat")
    with pytest.raises(ValueError, match="num_layers=-1"):
        TrainConfig(num_layers=-1)
    with pytest.raises(ValueError, match="whole_graph_max_items=-5"):
        TrainConfig(whole_graph_max_items=-5)
    assert TrainConfig(num_layers=0).num_layers == 0  # the no-graph ablation
    cfg = TrainConfig(neighbors={"top_t": 5}, conv="propagate")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_batch_loss_masks_shared_negatives_that_are_the_positive(setup):
    """Softmax: a shared negative equal to a query's positive is dropped for that query only;
    one equal to the query itself stays (its constant logit is kept on purpose)."""
    from pinsage_ray.model import max_margin_loss, sampled_softmax_loss
    from pinsage_ray.training.loop import batch_loss

    store, _, cfg, pairs = setup
    cfg = dataclasses.replace(cfg, loss="softmax", temperature=0.2, max_hard_negatives=0)
    batch = BatchProducer(store.uri, cfg, pairs).batch(epoch=1, index=0)
    # plant collisions: shared negative 0 is query 0's positive, 1 is query 1 itself
    batch.shared[0], batch.shared[1] = batch.positive[0], batch.query[1]
    emb = torch.nn.functional.normalize(torch.randn(batch.inp.blocks[-1].num_dst, 8), dim=1)
    q, p, s = emb[batch.query], emb[batch.positive], emb[batch.shared]
    keep = torch.ones(cfg.batch_size, len(batch.shared), dtype=torch.bool)
    for b in range(cfg.batch_size):
        for m in range(len(batch.shared)):
            keep[b, m] = bool(batch.shared[m] != batch.positive[b])
    assert not keep[0, 0] and keep[1, 1]
    want = sampled_softmax_loss(q, p, s, temperature=0.2, shared_mask=keep)
    got = batch_loss(emb, batch, cfg).item()
    assert got == pytest.approx(want.item(), abs=1e-6)
    assert got != pytest.approx(sampled_softmax_loss(q, p, s, temperature=0.2).item(), abs=1e-6)
    # the max-margin loss ignores collisions and uses the margin
    hinge = dataclasses.replace(cfg, loss="max_margin", margin=0.3)
    assert batch_loss(emb, batch, hinge).item() == pytest.approx(
        max_margin_loss(q, p, s, margin=0.3).item(), abs=1e-6)


def test_id_skip_follows_the_id_embedding(setup):
    from pinsage_ray.training.trainer import model_config_for

    store = setup[0]  # the planted graph has features: no id embedding when auto (None)
    assert model_config_for(store, TrainConfig(use_id_embedding=None)).id_skip is False
    assert model_config_for(store, TrainConfig()).id_skip is True  # ids on by default
    assert model_config_for(store, TrainConfig(use_id_embedding=True,
                                               id_skip=False)).id_skip is False
    with pytest.raises(ValueError, match="id_skip"):
        model_config_for(store, TrainConfig(use_id_embedding=None, id_skip=True))
    with pytest.raises(ValueError, match="id_skip"):
        TrainConfig(id_skip="yes")


def test_runs_from_before_a_new_field_resume_with_its_default(tmp_path):
    """run.json without 'loss'/'temperature' (older runs) resumes under the defaults of the
    time only (the paper's, kept by the 'paper' preset)."""
    import json

    import pyarrow.fs as pafs

    from pinsage_ray.training.trainer import _check_same_config

    fs = pafs.LocalFileSystem()
    paper = TrainConfig.preset("paper")
    old = paper.to_dict()
    del old["loss"], old["temperature"]
    (tmp_path / "run.json").write_text(json.dumps({"train_config": old, "graph_dir": "g"}))
    _check_same_config(fs, str(tmp_path), paper, "g")  # same as before: resumes
    with pytest.raises(ValueError, match="loss"):
        _check_same_config(fs, str(tmp_path),
                           dataclasses.replace(paper, loss="softmax"), "g")


@pytest.mark.parametrize("conv", ["propagate", "paper"])
def test_whole_graph_training_equals_layerwise_embeddings(setup, conv):
    """Whole-graph training (``whole_graph_max_items``): batches carry item ids and no blocks;
    the encoder's forward over the epoch's WholeGraph equals layer-wise inference over the
    same neighbourhood table, and the loss equals the loss on those embeddings."""
    from pinsage_ray.inference.layerwise import embed_all
    from pinsage_ray.model import ModelConfig, PinSageEncoder
    from pinsage_ray.training.batches import uses_whole_graph
    from pinsage_ray.training.loop import batch_loss, epoch_graph

    store, walker, cfg, pairs = setup
    base = dataclasses.replace(cfg, group_queries=0.5, max_hard_negatives=2, conv=conv,
                               whole_graph_max_items=store.num_items)
    assert uses_whole_graph(base, store.num_items)
    assert not uses_whole_graph(base, store.num_items + 1)
    prod = BatchProducer(store.uri, base, pairs)
    batch = prod.batch(2, 3)
    sampled = BatchProducer(store.uri, dataclasses.replace(base, whole_graph_max_items=0),
                            pairs).batch(2, 3)
    assert batch.inp is None and sampled.inp is not None
    # the same examples, as item ids instead of output-node indices
    out_ids = sampled.inp.output_node_ids
    assert torch.equal(batch.positive, out_ids[sampled.positive])
    assert torch.equal(batch.shared, out_ids[sampled.shared])
    real = sampled.query_set >= 0
    assert torch.equal(batch.query_set[real], out_ids[sampled.query_set[real]])
    assert torch.equal(batch.hard >= 0, sampled.hard >= 0)
    inputs = prod.whole_graph(2)
    torch.manual_seed(0)
    enc = PinSageEncoder(ModelConfig(num_items=store.num_items, feature_dim=store.feature_dim,
                                     num_layers=2, conv=conv, use_id_embedding=True,
                                     id_skip=conv == "paper")).eval()
    with torch.no_grad():
        enc.input_proj.id_embedding.weight.normal_()
        whole = enc(epoch_graph(inputs, base.pooling))
    layerwise = embed_all(enc, inputs["features"], store.degrees("item"), inputs["nb_ids"],
                          inputs["nb_weights"])
    assert np.abs(whole.numpy() - layerwise).max() < 1e-5
    loss = batch_loss(whole, batch, base)
    assert abs(float(loss) - float(batch_loss(torch.from_numpy(layerwise), batch, base))) < 1e-4
