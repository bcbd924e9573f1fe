"""Oracle: an incremental update equals recomputing everything on the updated graph.

A planted graph is split into a base (prepared, embedded, indexed with a small seeded model)
and a day of new data: new edges between existing items and groups, new items (with
features), new groups, and one removed item. After ``update_run``:

* the updated graph holds the same edges, weights, times, features and degrees as ``prepare``
  on the merged input (compared by original id);
* every item's neighbourhood (ids, weights, and counts of the rerun rows) equals the
  library's own walk over ``arange(N)`` on the updated graph with the run's seed;
* every embedding equals the layer-wise pass over all items (max abs diff <= 1e-5);
* the index answers the same top-10 as exact search over the live embeddings;
* only a fraction of the items was recomputed.

No Ray: the walks, layers and index run in process.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pinsage_ray.graph import GraphStore, prepare
from pinsage_ray.index import HNSWIndex, exact_topk
from pinsage_ray.inference.pipeline import load_embeddings
from pinsage_ray.sampling import LocalWalker
from pinsage_ray.update import update_run

@pytest.fixture(scope="module")
def updated(update_base):
    day = update_base["day"]
    result = update_run(update_base["run"], day["new"], item_features=day["new_feats"],
                        remove_items=day["remove"])
    return {**update_base, "result": result,
            "version": update_base["run"] / "updates" / result.version}


def _by_external(store: GraphStore) -> tuple[dict, dict, dict, dict]:
    """(edges {(item, group): (weight, time)}, features {item: row}, degrees {item: d},
    group degrees {group: d}) keyed by original ids."""
    items = store.item_ids.to_pylist()
    groups = store.group_ids.to_pylist()
    ptr = np.asarray(store.array("group_indptr"))
    idx, w = np.asarray(store.array("group_indices")), np.asarray(store.array("group_weights"))
    t = np.asarray(store.array("group_times"))
    g_of = np.repeat(np.arange(store.num_groups), np.diff(ptr))
    edges = {(items[i], groups[g]): (float(x), int(y)) for i, g, x, y in zip(idx, g_of, w, t)}
    f = np.asarray(store.features())
    deg, gdeg = store.degrees("item"), store.degrees("group")
    return (edges, {items[i]: f[i] for i in range(len(items))},
            {items[i]: int(deg[i]) for i in range(len(items))},
            {groups[g]: int(gdeg[g]) for g in range(len(groups)) if gdeg[g] > 0})


def _group_rows(store: GraphStore) -> dict:
    """{group: [items in CSR order]} by original ids, for groups with items."""
    items, groups = store.item_ids.to_pylist(), store.group_ids.to_pylist()
    ptr, idx = np.asarray(store.array("group_indptr")), np.asarray(store.array("group_indices"))
    return {groups[g]: [items[i] for i in idx[ptr[g]:ptr[g + 1]]]
            for g in range(store.num_groups) if ptr[g + 1] > ptr[g]}


def test_graph_equals_prepare_on_merged_input(updated):
    day = updated["day"]
    removed = pa.array(day["remove"])
    merged = pa.concat_tables([day["base"], day["new"]])
    merged = merged.filter(pc.invert(pc.is_in(merged.column("item"), value_set=removed)))
    full = prepare(merged, updated["tmp"] / "merged", item_features=day["all_feats"])
    new = GraphStore(updated["version"] / "graph")
    assert new.num_items == full.num_items  # the removed item: a degree-0 slot in both
    e_new, f_new, d_new, g_new = _by_external(new)
    e_full, f_full, d_full, g_full = _by_external(full)
    assert e_new == e_full
    assert d_new == d_full and g_new == g_full
    assert f_new.keys() == f_full.keys()
    assert all(np.array_equal(f_new[k], f_full[k]) for k in f_full)
    # with timestamps a group's items keep prepare's order: by (time, input order)
    assert _group_rows(new) == _group_rows(full)
    # existing ids kept, new ones appended
    old = GraphStore(updated["graph"])
    assert new.item_ids.slice(0, old.num_items).equals(old.item_ids)
    assert new.group_ids.slice(0, old.num_groups).equals(old.group_ids)


NEIGHBORS = {"num_walks": 20, "walk_length": 2, "restart_prob": 0.5, "top_t": 6}
SEED = 1234567  # embed's default inference seed


def test_neighbourhoods_equal_full_walk(updated):
    new_graph = str(updated["version"] / "graph")
    n = GraphStore(new_graph).num_items
    full = LocalWalker(new_graph).importance_neighbors(np.arange(n), seed=SEED, **NEIGHBORS)
    nb = updated["version"] / "inference" / "neighbors"
    ids, w, counts = (np.load(nb / f"{k}.npy") for k in ("ids", "weights", "counts"))
    np.testing.assert_array_equal(ids, full.ids)
    np.testing.assert_array_equal(w, full.weights)
    rerun = (counts >= 0).all(axis=1)
    np.testing.assert_array_equal(counts[rerun], full.counts[rerun])
    removed = np.load(updated["version"] / "graph" / "item_removed.npy")
    assert removed.sum() == 1 and not np.isin(np.flatnonzero(removed), ids).any()


def test_embeddings_equal_full_recompute(updated, recompute):
    store = GraphStore(updated["version"] / "graph")
    full = recompute(updated["version"], updated["graph"], updated["enc"])
    out = np.load(updated["version"] / "inference" / "output.npy")
    assert np.abs(out - full).max() <= 1e-5
    item_ids, emb = load_embeddings(updated["version"])
    live = ~np.load(updated["version"] / "graph" / "item_removed.npy")
    assert item_ids.to_pylist() == store.item_ids.filter(pa.array(live)).to_pylist()
    assert np.abs(emb - full[live]).max() <= 1e-5


def test_index_matches_exact_search(updated):
    item_ids, emb = load_embeddings(updated["version"])
    index = HNSWIndex.load(updated["version"] / "index", search="exact")
    got, scores = index.query(emb, 10)
    truth, truth_scores = exact_topk(emb, emb, 10, index.space)
    ids = item_ids.to_numpy(zero_copy_only=False)
    # same top-10; where two items tie within float rounding either order is exact
    same = got == ids[truth]
    np.testing.assert_allclose(scores, truth_scores, atol=1e-5)
    assert same.mean() > 0.999, f"{(~same).sum()} of {same.size} differ beyond ties"
    removed = np.flatnonzero(np.load(updated["version"] / "graph" / "item_removed.npy"))
    hnsw = HNSWIndex.load(updated["version"] / "index", search="hnsw")
    assert not np.isin(hnsw.query(emb, 10)[0], hnsw.ids[removed]).any()
    assert hnsw.manifest["hnsw_recall_at_k"] >= 0.9


def test_only_a_fraction_recomputed(updated):
    r = updated["result"]
    report = json.loads((updated["version"] / "update.json").read_text())
    assert report["recomputed"] == r.recomputed
    assert 0 < r.affected_items < 0.5 * r.num_items
    assert all(0 < k < r.num_items for k in r.recomputed)
    print(f"\nupdate: {r.num_items} items, {r.new_items} new, walks rerun for "
          f"{r.affected_items} ({r.affected_items / r.num_items:.1%}), neighbourhoods changed "
          f"{r.neighborhoods_changed}, rows recomputed per layer {r.recomputed} "
          f"({[round(k / r.num_items, 3) for k in r.recomputed]}), seconds {r.seconds}")


@pytest.fixture(scope="module")
def updated_twice(updated):
    """A second day on top of the first version: new edges between existing nodes (one of
    them a new item of day one), new features for an existing item, another removal."""
    day, store = updated["day"], GraphStore(updated["version"] / "graph")
    rng = np.random.default_rng(11)
    items = store.item_ids.to_numpy()
    removed = np.load(updated["version"] / "graph" / "item_removed.npy")
    live = items[~removed]
    new_item = day["new_feats"].column("item")[0].as_py()
    pick = rng.choice(live, 3, replace=False)
    rows = pa.table({"item": pa.array([*pick.tolist(), new_item], pa.int64()),
                     "group": pa.array(rng.choice(store.group_ids.to_numpy(), 4), pa.int64()),
                     "timestamp": pa.array([1_700_000_000 + k for k in range(4)], pa.int64())})
    touched = set(rows.column("item").to_pylist())
    gone = int(next(i for i in live[::-1].tolist() if i not in touched))
    refeat = int(next(i for i in live.tolist() if i not in touched and i != gone))
    dim = store.feature_dim
    values = pa.array(np.linspace(-1, 1, dim, dtype=np.float32))
    feats = pa.table({"item": pa.array([refeat], pa.int64()),
                      "features": pa.FixedSizeListArray.from_arrays(values, dim)})
    result = update_run(updated["run"], rows, item_features=feats, remove_items=[gone])
    return {**updated, "rows2": rows, "feats2": feats, "gone2": gone, "refeat": refeat,
            "result2": result, "version2": updated["run"] / "updates" / result.version}


def test_second_update_equals_full_recompute(updated_twice, recompute):
    u = updated_twice
    assert u["result2"].version == "v0002"
    # the graph: prepare on everything so far
    removed = pa.array(u["day"]["remove"] + [u["gone2"]])
    merged = pa.concat_tables([u["day"]["base"], u["day"]["new"], u["rows2"]])
    merged = merged.filter(pc.invert(pc.is_in(merged.column("item"), value_set=removed)))
    feats = u["day"]["all_feats"]
    new = GraphStore(u["version2"] / "graph")
    full = prepare(merged, u["tmp"] / "merged2", item_features=_with_row(feats, u["feats2"]))
    e_new, f_new, d_new, g_new = _by_external(new)
    e_full, f_full, d_full, g_full = _by_external(full)
    assert e_new == e_full and d_new == d_full and g_new == g_full
    assert all(np.array_equal(f_new[k], f_full[k]) for k in f_full)
    assert np.allclose(f_new[u["refeat"]], np.linspace(-1, 1, new.feature_dim))
    # neighbourhoods and embeddings: from scratch on the second version's graph
    n = new.num_items
    nb = LocalWalker(str(new.uri)).importance_neighbors(np.arange(n), seed=SEED, **NEIGHBORS)
    ids = np.load(u["version2"] / "inference" / "neighbors" / "ids.npy")
    np.testing.assert_array_equal(ids, nb.ids)
    out = np.load(u["version2"] / "inference" / "output.npy")
    assert np.abs(out - recompute(u["version2"], u["graph"], u["enc"])).max() <= 1e-5
    item_ids, emb = load_embeddings(u["version2"])
    assert u["gone2"] not in item_ids.to_pylist() and len(item_ids) == n - 2
    index = HNSWIndex.load(u["version2"] / "index", search="exact")
    got, _ = index.query(emb, 10)
    truth, _ = exact_topk(emb, emb, 10, index.space)
    assert (got == item_ids.to_numpy()[truth]).mean() > 0.999


def _with_row(feats: pa.Table, row: pa.Table) -> pa.Table:
    """``feats`` with ``row``'s item given ``row``'s values (same column layout)."""
    item = row.column("item")[0].as_py()
    keep = feats.filter(pc.invert(pc.equal(feats.column("item"), item)))
    row = row.select(feats.column_names).cast(feats.schema)
    return pa.concat_tables([keep, row])
