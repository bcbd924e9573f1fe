"""End to end after training: the index, related items, cold start (Ray Data inference equals
local inference: ``test_feature_only.py``, and across nodes ``tests/multinode``)."""

from __future__ import annotations

import numpy as np
import pytest

from pinsage_ray.graph import GraphStore
from pinsage_ray.inference.pipeline import load_embeddings
from pinsage_ray.recommender import Recommender

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _labels(store: GraphStore) -> dict:
    return dict(zip(store.item_ids.to_pylist(), np.asarray(store.labels()).tolist()))


def test_related_items_follow_planted_communities(trained_run):
    rec = Recommender.load(trained_run["run"])
    assert rec.index.recall_at_k >= 0.95
    labels = _labels(GraphStore(trained_run["graph"]))
    items = list(labels)[:80]
    results = rec.similar_items_batch(items, k=10)
    same = [labels[j] == labels[i] for i, row in zip(items, results) for j, _ in row]
    assert np.mean(same) > 0.5  # 8 communities: chance is 0.125
    assert all(i not in [j for j, _ in row] for i, row in zip(items, results))
    scores = [s for row in results for _, s in row]
    assert all(a >= b - 1e-6 for row in results for (_, a), (_, b) in zip(row, row[1:]))
    assert max(scores) <= 1.0 + 1e-5


def test_recommend_for_group(trained_run):
    rec = Recommender.load(trained_run["run"])
    labels = _labels(GraphStore(trained_run["graph"]))
    community = [i for i, c in labels.items() if c == 3][:6]
    out = rec.recommend_for_group(community, k=10)
    assert not set(community) & {i for i, _ in out}
    assert np.mean([labels[i] == 3 for i, _ in out]) >= 0.5
    recent = rec.recommend_for_group(community, k=5, timestamps=list(range(6)), half_life=0.5)
    # the same answers computed here: exact search over the stored embeddings
    ids, emb = load_embeddings(trained_run["run"])
    ids = ids.to_pylist()
    rows = np.array([ids.index(i) for i in community])
    for got, weights, k in ((out, np.ones(6), 10), (recent, 0.5 ** ((5 - np.arange(6)) / 0.5), 5)):
        query = (weights[:, None] * emb[rows]).sum(axis=0)
        scores = emb @ (query / np.linalg.norm(query))
        scores[rows] = -np.inf  # the group's own items are left out
        top = np.argsort(-scores, kind="stable")[:k]
        assert [i for i, _ in got] == [ids[j] for j in top]
        assert np.abs(np.array([s for _, s in got]) - scores[top]).max() < 1e-5
    assert [i for i, _ in recent] != [i for i, _ in out][:5]  # the weights changed the query
    with pytest.raises(KeyError, match="not in this run"):
        rec.similar_items("no-such-item")
    with pytest.raises(ValueError, match="k="):
        rec.similar_items(community[0], k=0)


def test_cold_start_items_land_in_their_community(trained_run, planted_dataset, holdout):
    _, held = holdout
    inter = planted_dataset.interactions.to_pandas()
    feats = planted_dataset.item_features.to_pandas().set_index("item")
    truth = dict(zip(planted_dataset.item_labels.column("item").to_pylist(),
                     planted_dataset.item_labels.column("label").to_pylist()))
    graph_groups = set(GraphStore(trained_run["graph"]).group_ids.to_pylist())
    new_ids, new_feats, new_groups = [], [], []
    for item in held.tolist():
        groups = [g for g in inter.loc[inter["item"] == item, "group"] if g in graph_groups]
        if groups:
            new_ids.append(item)
            new_feats.append(np.asarray(feats.loc[item, "features"], dtype=np.float32))
            new_groups.append(groups)
    assert len(new_ids) >= 8
    rec = Recommender.load(trained_run["run"])
    emb = rec.add_items(new_ids, np.stack(new_feats), new_groups, seed=1)  # unseen ids
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    labels = _labels(GraphStore(trained_run["graph"]))
    hits = []
    for item in new_ids:
        row = rec.similar_items(item, k=10)
        hits += [labels.get(j) == truth[item] for j, _ in row if j in labels]
    assert np.mean(hits) > 0.5  # chance 0.125
    assert rec.similar_items(new_ids[1], k=1)  # the new items are now retrievable


def test_cold_start_equals_the_models_forward(trained_run, planted_dataset, holdout):
    """``add_items`` embeds new items as the encoder's own forward pass would: the new items
    appended to the graph as nodes without ids (their features, degree = their group count,
    their walk neighbourhoods), every other item with the neighbourhoods ``embed`` used."""
    import torch

    from pinsage_ray.inference.coldstart import cold_neighbors
    from pinsage_ray.inference.layerwise import inference_ids
    from pinsage_ray.inference.model_io import load_model, read_neighbor_rows, run_path
    from pinsage_ray.model import EncoderInput
    from pinsage_ray.sampling.aggregate import Neighborhood
    from pinsage_ray.sampling.shard import GraphShard
    from pinsage_ray.training.batches import expand_blocks

    _, held = holdout
    store = GraphStore(trained_run["graph"])
    inter = planted_dataset.interactions.to_pandas()
    feats = planted_dataset.item_features.to_pandas().set_index("item")
    known = set(store.group_ids.to_pylist())
    new = held.tolist()[:6]
    groups = [[g for g in inter.loc[inter["item"] == i, "group"] if g in known][:4] for i in new]
    groups[-1] = []  # one item without engagement: features only
    x = np.stack([np.asarray(feats.loc[i, "features"], dtype=np.float32) for i in new])
    rec = Recommender.load(trained_run["run"])
    got = rec.add_items(new, x, groups, seed=4)

    model = load_model(trained_run["run"])
    n, m, nc = store.num_items, len(new), model.neighbor_config
    nb_ids, nb_w = read_neighbor_rows(run_path(trained_run["run"], "inference", "neighbors"),
                                      0, n)
    cold = cold_neighbors(GraphShard(trained_run["graph"]),
                          [store.group_index(g) if g else np.zeros(0, np.int64) for g in groups],
                          num_walks=nc["num_walks"], walk_length=nc["walk_length"],
                          restart_prob=nc["restart_prob"], top_t=nc["top_t"], seed=4)
    assert (cold.ids[:-1] >= 0).any() and (cold.ids[-1] < 0).all()
    table = Neighborhood(np.concatenate([nb_ids, cold.ids]), np.concatenate([nb_w, cold.weights]),
                         np.zeros((n + m, nb_ids.shape[1]), np.int64))
    nodes0, blocks = expand_blocks(np.arange(n, n + m), model.encoder.num_layers, table.take)
    degree = np.concatenate([store.degrees("item"), [len(g) for g in groups]])
    node_ids = np.concatenate([inference_ids(np.arange(n), degree[:n]), np.full(m, -1)])
    features = np.concatenate([np.asarray(store.features()), x])
    inp = EncoderInput(torch.from_numpy(node_ids[nodes0]), torch.from_numpy(features[nodes0]),
                       torch.from_numpy(np.log1p(degree[nodes0]).astype(np.float32)), blocks)
    with torch.no_grad():
        want = model.encoder(inp).numpy()
    assert np.abs(got - want).max() < 1e-5


def test_cold_start_input_errors(trained_run):
    from pinsage_ray.inference.coldstart import embed_new_items

    with pytest.raises(ValueError, match="expected \\(M, 16\\)"):
        embed_new_items(trained_run["run"], np.zeros((1, 3)), [[1]])
    with pytest.raises(KeyError, match="not in graph"):
        embed_new_items(trained_run["run"], np.zeros((1, 16)), [[10**9]])
    with pytest.raises(KeyError, match="not in graph"):
        embed_new_items(trained_run["run"], np.zeros((2, 16)), [[], [10**9]])
    rec = Recommender.load(trained_run["run"])
    known = rec.ids[0].item()
    with pytest.raises(ValueError, match="already in this run"):
        rec.add_items([known], np.zeros((1, 16)), [[]])
    with pytest.raises(ValueError, match="one id per new item"):
        rec.add_items(["x", "y"], np.zeros((1, 16)))


def test_add_items_without_groups(trained_run, planted_dataset, holdout):
    """Content without engagement: empty group lists embed from the features alone."""
    from pinsage_ray.inference.coldstart import embed_new_items

    _, held = holdout
    feats = planted_dataset.item_features.to_pandas().set_index("item")
    new = held.tolist()
    x = np.stack([np.asarray(feats.loc[i, "features"], dtype=np.float32) for i in new])
    rec = Recommender.load(trained_run["run"])
    n0 = len(rec.ids)
    emb = rec.add_items(new, x, [[] for _ in new])
    assert emb.shape == (len(new), rec.embeddings.shape[1]) and len(rec.ids) == n0 + len(new)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # No walks, so no seed dependence; the same as embedding them directly.
    again = embed_new_items(trained_run["run"], x, [[] for _ in new], seed=99)
    assert np.abs(again - emb).max() < 1e-6
    assert np.abs(emb[0] - emb[1]).max() > 1e-4  # features matter
    for i, item in enumerate(new[:3]):
        assert np.array_equal(rec.vector(item), emb[i])
        assert rec.similar_to_vector(emb[i], k=1)[0][0] == item  # retrievable
        row = rec.similar_items(item, k=10)
        assert len(row) == 10 and item not in [j for j, _ in row]
    other = Recommender.load(trained_run["run"])
    assert np.abs(other.add_items(new[:2], x[:2]) - emb[:2]).max() < 1e-6  # groups=None
