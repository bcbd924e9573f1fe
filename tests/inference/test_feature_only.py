"""Feature-only items (degree 0) at inference: no id term, features alone.

Oracle: the layer-wise embedding of a feature-only item of the graph (model with id
embeddings and ``id_skip``) equals the cold-start embedding of the same features with no
groups, the path that never had an id. Passing the item's real (untrained) id would add an
id term to one path only and break the equality.
"""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinsage_ray.data.types import RawDataset
from pinsage_ray.graph import GraphStore, prepare
from pinsage_ray.inference import layerwise
from pinsage_ray.inference.coldstart import cold_neighbors, embed_new_items
from pinsage_ray.inference.pipeline import embed, load_embeddings
from pinsage_ray.sampling.shard import GraphShard

NEIGHBORS = {"num_walks": 20, "walk_length": 2, "restart_prob": 0.5, "top_t": 6}


@pytest.fixture(scope="module")
def cold_graph(holdout, planted_dataset, tmp_path_factory):
    """The hold-out planted graph plus the held-out items as feature-only items."""
    train, held = holdout
    path = str(tmp_path_factory.mktemp("cold") / "graph")
    store = prepare(train, path, item_features=planted_dataset.item_features)
    iso = store.item_index(held.tolist())
    assert store.feature_only_items == len(held) and (store.degrees("item")[iso] == 0).all()
    return path, iso


@pytest.fixture(scope="module")
def id_run(cold_graph, tmp_path_factory, untrained_run):
    graph, iso = cold_graph
    run = tmp_path_factory.mktemp("idrun") / "run"
    enc = untrained_run(graph, run, feature_dim=16, ids=True, neighbors=NEIGHBORS)
    embed(run, mode="local")
    return run, enc


def test_layerwise_feature_only_items_equal_cold_start_without_groups(cold_graph, id_run):
    graph, iso = cold_graph
    run, enc = id_run
    store = GraphStore(graph)
    _, emb = load_embeddings(run)
    feats = np.asarray(store.features())[iso]
    cold = embed_new_items(run, feats, [[] for _ in iso])
    assert np.abs(emb[iso] - cold).max() < 1e-6
    assert np.allclose(np.linalg.norm(cold, axis=1), 1.0, atol=1e-5)
    # The id term is not negligible: with the items' (untrained) ids the embeddings differ.
    h0 = layerwise.input_layer_rows(enc, iso, feats, np.zeros(len(iso)))
    h0_none = layerwise.input_layer_rows(enc, None, feats, np.zeros(len(iso)))
    assert np.abs(h0 - h0_none).max() > 1e-2
    # Connected items keep their ids (and still differ from a features-only embedding).
    conn = np.setdiff1d(np.arange(store.num_items), iso)[:5]
    assert layerwise.inference_ids(conn, store.degrees("item")[conn]).tolist() == conn.tolist()
    assert layerwise.inference_ids(iso, np.zeros(len(iso))).tolist() == [-1] * len(iso)


def test_feature_only_neighbourhoods_are_empty(cold_graph, id_run):
    from pinsage_ray.inference.model_io import read_neighbor_rows, run_path

    graph, iso = cold_graph
    run, _ = id_run
    ids, weights = read_neighbor_rows(run_path(run, "inference", "neighbors"), 0,
                                      GraphStore(graph).num_items)
    assert (ids[iso] == -1).all() and (weights[iso] == 0).all()
    assert not np.isin(ids, iso).any()  # nobody's neighbour either
    assert (ids[np.setdiff1d(np.arange(len(ids)), iso)][:, 0] >= 0).all()
    # cold_neighbors: an empty group list gives an empty neighbourhood, others are unchanged.
    shard = GraphShard(graph)
    kw = dict(num_walks=10, walk_length=2, restart_prob=0.5, top_t=4, seed=3)
    g = [np.array([0, 5]), np.array([7])]
    alone = cold_neighbors(shard, g, **kw)
    mixed = cold_neighbors(shard, [np.zeros(0, np.int64), g[0], np.zeros(0, np.int64), g[1]],
                           **kw)
    assert (mixed.ids[[0, 2]] == -1).all() and (mixed.weights[[0, 2]] == 0).all()
    assert (mixed.ids[[1, 3]] >= 0).any(axis=1).all()
    assert len(cold_neighbors(shard, [], **kw)) == 0
    assert (alone.ids >= 0).any(axis=1).all()


def test_cold_start_errors_stay_clear(cold_graph, id_run, tmp_path, untrained_run):
    run, _ = id_run
    with pytest.raises(ValueError, match="expected \\(M, 16\\)"):
        embed_new_items(run, np.zeros((1, 3)), [[]])
    with pytest.raises(KeyError, match="not in graph"):
        embed_new_items(run, np.zeros((2, 16)), [[], [10**9]])
    with pytest.raises(ValueError, match="one list of group ids per new item"):
        embed_new_items(run, np.zeros((2, 16)), [[]])
    # A model without features cannot embed an unseen item; the message says what to do.
    plain = prepare(RawDataset("t", pa.table({"item": [1, 2, 3], "group": [0, 0, 1]})),
                    tmp_path / "g")
    untrained_run(plain.uri, tmp_path / "run", feature_dim=0, ids=True, neighbors=NEIGHBORS)
    with pytest.raises(ValueError, match="without item features.*item_features=.*train"):
        embed_new_items(tmp_path / "run", np.zeros((1, 0)), [[0]])


@pytest.mark.ray
@pytest.mark.slow
def test_ray_data_passes_equal_local_with_feature_only_items(ray_session, id_run, cold_graph,
                                                             tmp_path):
    run, _ = id_run
    _, iso = cold_graph
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ids_local, local = load_embeddings(copy)
    embed(copy, mode="ray", batch_size=150)  # several batches per layer
    ids_ray, got = load_embeddings(copy)
    assert ids_ray.equals(ids_local)
    assert np.abs(got - local).max() < 1e-5
    assert np.abs(got[iso] - local[iso]).max() < 1e-5
    table = pq.read_table(copy / "embeddings")  # float32 vectors, the item id beside them
    assert table.schema.field("embedding").type.value_type == "float"
    assert set(table.column_names) == {"item", "embedding"}
