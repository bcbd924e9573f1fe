"""Feature-only items (content, no engagement yet): prepare keeps them with degree 0, and the
walk code gives them empty walks and neighbourhoods without disturbing anyone else's walks."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pinsage_ray.data.types import RawDataset
from pinsage_ray.graph import InputError, prepare
from pinsage_ray.graph.partition import PartitionBook
from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.sampling.shard import GraphShard, Walkers, WalkSpec, route

# Interaction items 10..40; feature-only items 0 (first id), 25 (middle) and 99 (last id).
INTER = dict(item=[10, 10, 20, 20, 30, 30, 40, 40, 40],
             group=["a", "b", "a", "c", "b", "c", "a", "b", "c"],
             weight=[1.0, 3.0, 2.0, 1.0, 0.5, 4.0, 1.0, 1.0, 2.0])
ONLY = [0, 25, 99]


def _vec(item: int) -> list[float]:
    return [float(item), float(item) / 2, -1.0]


def _feats(items: list[int]) -> pa.Table:
    return pa.table({"item": items,
                     "features": pa.array([_vec(i) for i in items], pa.list_(pa.float32()))})


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """The same interactions prepared with and without the three feature-only items."""
    base = tmp_path_factory.mktemp("feature_only")
    inter = pa.table(INTER)
    with_only = prepare(RawDataset("t", inter), base / "with",
                        item_features=_feats([40, 99, 10, 0, 30, 25, 20]))  # any row order
    without = prepare(RawDataset("t", inter), base / "without",
                      item_features=_feats([10, 20, 30, 40]))
    return with_only, without


def test_prepare_keeps_feature_only_items_with_degree_0(graphs):
    store, plain = graphs
    assert store.item_ids.to_pylist() == [0, 10, 20, 25, 30, 40, 99]  # sorted original ids
    assert store.num_items == 7 and store.num_edges == 9 and store.num_groups == 3
    assert store.feature_only_items == 3 and store.manifest["feature_only_items"] == 3
    assert plain.feature_only_items == 0
    deg = store.degrees("item")
    assert deg.tolist() == [0, 2, 2, 0, 2, 3, 0]
    assert store.manifest["stats"]["item_degree"]["min"] == 0
    feats = np.asarray(store.features())
    assert feats.tolist() == [_vec(i) for i in store.item_ids.to_pylist()]
    # Edges are those of the graph without them, with item ids renumbered.
    old = np.array([1, 2, 4, 5])  # new contiguous ids of items 10, 20, 30, 40

    def edges(s, remap):
        ip, ix, iw = (np.asarray(s.array(f"item_{k}")) for k in ("indptr", "indices",
                                                                "weights"))
        return sorted((int(remap[i]), int(ix[j]), float(iw[j]))
                      for i in range(s.num_items) for j in range(ip[i], ip[i + 1]))

    assert edges(store, np.arange(7)) == edges(plain, old)
    gp, gx = np.asarray(store.array("group_indptr")), np.asarray(store.array("group_indices"))
    assert not set(gx.tolist()) & {0, 3, 6}  # no group lists a feature-only item
    pgx = np.asarray(plain.array("group_indices"))
    assert gx.tolist() == old[pgx].tolist() and gp.tolist() == np.asarray(
        plain.array("group_indptr")).tolist()


def test_feature_only_string_ids_and_errors(tmp_path):
    inter = RawDataset("t", pa.table({"item": ["m", "b"], "group": [1, 1]}))
    feats = pa.table({"item": ["z", "b", "a", "m"], "x": [4.0, 2.0, 1.0, 3.0]})
    store = prepare(inter, tmp_path / "g", item_features=feats)
    assert store.item_ids.to_pylist() == ["a", "b", "m", "z"]
    assert store.degrees("item").tolist() == [0, 1, 1, 0]
    assert np.asarray(store.features()).ravel().tolist() == [1.0, 2.0, 3.0, 4.0]
    # Other feature errors stay errors.
    with pytest.raises(InputError, match="row 1, column 'item' is null"):
        prepare(inter, tmp_path / "h", item_features=pa.table({"item": ["m", None, "b"],
                                                               "x": [1.0, 2.0, 3.0]}))
    with pytest.raises(InputError, match="duplicate features for item 'z'"):
        prepare(inter, tmp_path / "h", item_features=pa.table({"item": ["m", "b", "z", "z"],
                                                               "x": [1.0, 2.0, 3.0, 4.0]}))
    with pytest.raises(InputError, match="have no features"):
        prepare(inter, tmp_path / "h", item_features=pa.table({"item": ["m", "z"],
                                                               "x": [1.0, 2.0]}))


def test_walks_from_feature_only_items_are_empty(graphs):
    store, _ = graphs
    walker = LocalWalker(store.uri)
    iso = np.array([0, 3, 6])
    for weighted in (True, False):
        paths = walker.random_walks(iso, num_walks=4, walk_length=5, restart_prob=0.5,
                                    seed=3, weighted=weighted)
        assert paths.shape == (12, 5) and (paths == -1).all()
        nb = walker.importance_neighbors(iso, num_walks=20, walk_length=3, top_t=4, seed=1,
                                         weighted=weighted)
        assert (nb.ids == -1).all() and (nb.weights == 0).all() and (nb.counts == 0).all()
    q, p = walker.cooccurrence_pairs(np.arange(7), num_walks=5, seed=2)
    assert len(q) > 0 and (p >= 0).all() and not set(q.tolist()) & {0, 3, 6}
    assert not set(p.tolist()) & {0, 3, 6}
    neg = walker.ppr_rank_sample(iso, 0, 3, 2, seed=4)  # unvisited tail: any other item
    assert neg.shape == (3, 2) and ((neg >= -1) & (neg < 7)).all()
    assert (neg != iso[:, None]).all()


def test_feature_only_items_do_not_change_other_walks(graphs):
    """Walks of connected items are the same with and without the isolated items."""
    store, plain = graphs
    new_of_old = np.array([1, 2, 4, 5])
    for weighted in (True, False):
        a = LocalWalker(plain.uri).random_walks(np.arange(4), num_walks=6, walk_length=4,
                                               restart_prob=0.3, seed=9, weighted=weighted)
        b = LocalWalker(store.uri).random_walks(new_of_old, num_walks=6, walk_length=4,
                                               restart_prob=0.3, seed=9, weighted=weighted)
        assert (b >= 0).all() and b.tolist() == new_of_old[a].tolist()
        # Mixed requests: the isolated rows are empty, the others unchanged.
        mixed = LocalWalker(store.uri).random_walks(np.array([1, 0, 2, 4, 5]), num_walks=6,
                                                   walk_length=4, restart_prob=0.3, seed=9,
                                                   weighted=weighted)
        assert (mixed[6:12] == -1).all() and (np.delete(mixed, np.s_[6:12], 0) >= 0).all()


def test_choose_gives_minus_one_for_empty_rows(graphs):
    store, _ = graphs
    shard = GraphShard(store.uri)
    u = np.array([0.0, 0.5, 0.999, 0.2, 0.7])
    nodes = np.array([0, 1, 6, -1, 3])
    for weighted in (True, False):
        out = shard.items.choose(nodes, u, weighted)
        assert out[0] == -1 and out[2] == -1 and out[3] == -1 and out[4] == -1
        assert 0 <= out[1] < 3
        assert (shard.groups.choose(np.array([-1, 0]), u[:2], weighted)[0] == -1)


def test_dead_walkers_route_to_their_seed_shard():
    book = PartitionBook(np.array([0, 3, 7]), np.array([0, 1, 3]))
    spec = WalkSpec(1, 2)
    w = Walkers.start(np.arange(3), np.array([1, 5, 0]), spec)
    w.node = np.array([-1, 2, -1])
    assert route(book, "group", w).tolist() == [0, 1, 0]
    w.node = np.array([4, -1, -1])
    assert route(book, "item", w).tolist() == [1, 1, 0]


@pytest.mark.ray
def test_sharded_walks_match_local_with_feature_only_items(ray_session, graphs):
    from pinsage_ray.sampling.service import ShardedGraph

    store, _ = graphs
    items = np.arange(store.num_items)
    local = LocalWalker(store.uri)
    want = local.random_walks(items, num_walks=3, walk_length=3, restart_prob=0.4, seed=5)
    want_nb = local.importance_neighbors(items, num_walks=10, walk_length=2, top_t=3, seed=5)
    with ShardedGraph(store.uri, num_shards=3) as sharded:
        got = sharded.random_walks(items, num_walks=3, walk_length=3, restart_prob=0.4,
                                   seed=5)
        nb = sharded.importance_neighbors(items, num_walks=10, walk_length=2, top_t=3, seed=5)
    assert np.array_equal(got, want)
    assert np.array_equal(nb.ids, want_nb.ids) and np.array_equal(nb.counts, want_nb.counts)
    assert (want[[0, 1, 2, 9, 10, 11, 18, 19, 20]] == -1).all()


def test_labels_for_unknown_items_still_rejected(tmp_path):
    inter = pa.table({"item": [1, 2], "group": [0, 0]})
    ds = RawDataset("t", inter, item_labels=pa.table({"item": [1, 2, 7], "label": [0, 1, 1]}))
    with pytest.raises(InputError, match="row 2: labels given for unknown item 7"):
        prepare(ds, tmp_path / "g")
    # A feature row makes item 7 known; its label is kept.
    ds = RawDataset("t", inter, _feats([1, 2, 7]),
                    item_labels=pa.table({"item": [1, 2, 7], "label": [0, 1, 1]}))
    store = prepare(ds, tmp_path / "h")
    assert np.asarray(store.labels()).tolist() == [0, 1, 1]
    assert store.degrees("item").tolist() == [1, 1, 0]
