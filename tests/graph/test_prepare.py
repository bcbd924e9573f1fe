"""prepare(): CSR correctness, merging, validation errors, atomic writes, checksums."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pinsage_ray import _io
from pinsage_ray.data.types import RawDataset
from pinsage_ray.graph import GraphFormatError, GraphStore, InputError, prepare


def _ds(**cols) -> RawDataset:
    return RawDataset("t", pa.table(cols))


def test_csr_both_directions_and_merge(tmp_path):
    ds = _ds(item=[10, 20, 10, 30, 10], group=["b", "a", "b", "a", "a"],
             weight=[1.0, 2.0, 0.5, 1.0, 3.0])
    store = prepare(ds, tmp_path / "g")
    assert store.num_items == 3 and store.num_groups == 2 and store.num_edges == 4
    assert store.item_ids.to_pylist() == [10, 20, 30]
    assert store.group_ids.to_pylist() == ["a", "b"]
    ip, ix, iw = (np.asarray(store.array(f"item_{k}")) for k in ("indptr", "indices", "weights"))
    # item 10 -> a (3.0), b (1.0 + 0.5 merged)
    assert ip.tolist() == [0, 2, 3, 4]
    assert ix.tolist() == [0, 1, 0, 0]
    assert iw.tolist() == [3.0, 1.5, 2.0, 1.0]
    gp, gx = np.asarray(store.array("group_indptr")), np.asarray(store.array("group_indices"))
    assert gp.tolist() == [0, 3, 4] and sorted(gx[:3].tolist()) == [0, 1, 2] and gx[3] == 0
    # the two directions hold the same edge set
    fwd = {(i, int(g)) for i in range(3) for g in ix[ip[i]:ip[i + 1]]}
    bwd = {(int(i), g) for g in range(2) for i in gx[gp[g]:gp[g + 1]]}
    assert fwd == bwd
    assert store.manifest["report"]["duplicate_rows_merged"] == 1
    assert store.weighted


@pytest.mark.parametrize("weighted", [False, True])
def test_csr_equals_a_dict_reference_on_random_rows(tmp_path, weighted):
    """Oracle: the CSR both ways equals a plain-Python merge of random rows with many
    duplicates (unweighted: an edge weighs its row count), rows sorted by the other side."""
    rng = np.random.default_rng(5)
    n = 3000
    items, groups = rng.integers(0, 200, n), rng.integers(0, 150, n)
    w = rng.uniform(0.1, 2.0, n).round(3) if weighted else np.ones(n)
    cols = {"item": items * 7, "group": groups + 1000}
    if weighted:
        cols["weight"] = w
    store = prepare(_ds(**cols), tmp_path / "g")
    ref: dict[tuple[int, int], float] = {}
    for i, g, x in zip(items.tolist(), groups.tolist(), w.tolist()):
        ref[(i, g)] = ref.get((i, g), 0.0) + x
    item_ids = store.item_ids.to_numpy() // 7
    group_ids = store.group_ids.to_numpy() - 1000
    for side, row_ids, col_ids in (("item", item_ids, group_ids), ("group", group_ids, item_ids)):
        ip, ix, iw = (np.asarray(store.array(f"{side}_{k}")) for k in ("indptr", "indices",
                                                                        "weights"))
        got = {}
        for r in range(len(row_ids)):
            cols_r = ix[ip[r]:ip[r + 1]]
            assert np.all(np.diff(cols_r) > 0), f"{side} row {r} not sorted or not merged"
            for c, x in zip(cols_r.tolist(), iw[ip[r]:ip[r + 1]].tolist()):
                key = (row_ids[r], col_ids[c]) if side == "item" else (col_ids[c], row_ids[r])
                got[key] = x
        assert got.keys() == ref.keys()
        assert np.allclose([got[k] for k in ref], [ref[k] for k in ref], rtol=1e-6)
    assert store.num_edges == len(ref)
    assert store.manifest["report"]["duplicate_rows_merged"] == n - len(ref)
    assert store.weighted  # unweighted duplicates merge into counts > 1


def test_timestamps_order_group_rows_and_keep_earliest(tmp_path):
    ds = _ds(item=[1, 2, 3, 1], group=[0, 0, 0, 0], timestamp=[30, 10, 20, 5])
    store = prepare(ds, tmp_path / "g")
    assert store.has_timestamps
    assert np.asarray(store.array("group_indices")).tolist() == [0, 1, 2]  # items 1, 2, 3
    assert np.asarray(store.array("group_times")).tolist() == [5, 10, 20]


def test_zero_weight_rows_dropped_and_reported(tmp_path):
    ds = _ds(item=[1, 2, 3], group=[0, 0, 1], weight=[1.0, 0.0, 2.0])
    store = prepare(ds, tmp_path / "g")
    assert store.num_items == 2 and store.item_ids.to_pylist() == [1, 3]
    assert store.manifest["report"]["zero_weight_rows_dropped"] == 1
    assert store.degrees("item").min() >= 1


@pytest.mark.parametrize("cols, match", [
    ({"item": [1], "grp": [1]}, "missing column"),
    ({"item": [1, None, 3], "group": [1, 2, 3]}, "row 1, column 'item' is null"),
    ({"item": [1, 2], "group": [1, 2], "weight": [1.0, -1.0]}, "row 1, column 'weight'"),
    ({"item": [1, 2], "group": [1, 2], "weight": [float("nan"), 1.0]}, "row 0, column 'weight'"),
    ({"item": [1.5], "group": [1]}, "ids must be int or string"),
])
def test_bad_rows_name_row_and_column(tmp_path, cols, match):
    with pytest.raises(InputError, match=match):
        prepare(_raw(cols), tmp_path / "g")


def _raw(cols):
    # Bypass RawDataset's own column check so prepare's checks are the ones exercised.
    ds = object.__new__(RawDataset)
    ds.name, ds.interactions = "t", pa.table(cols)
    ds.item_features = ds.item_metadata = ds.item_labels = None
    ds.extra = {}
    return ds


def test_empty_input(tmp_path):
    with pytest.raises(InputError, match="empty"):
        prepare(_ds(item=pa.array([], pa.int64()), group=pa.array([], pa.int64())),
                tmp_path / "g")


def _feat(items, vectors):
    return pa.table({"item": items, "features": pa.array(vectors, pa.list_(pa.float32()))})


def test_features_aligned_to_contiguous_ids(tmp_path):
    ds = _ds(item=["x", "y"], group=[0, 0])
    store = prepare(ds, tmp_path / "g", item_features=_feat(["y", "x"], [[2, 2], [1, 1]]))
    assert store.feature_dim == 2
    assert np.asarray(store.features()).tolist() == [[1, 1], [2, 2]]


def test_numeric_feature_columns(tmp_path):
    ds = _ds(item=[1, 2], group=[0, 0])
    feats = pa.table({"item": [2, 1], "a": [0.5, 1.5], "b": [1, 2]})
    store = prepare(ds, tmp_path / "g", item_features=feats)
    assert np.asarray(store.features()).tolist() == [[1.5, 2.0], [0.5, 1.0]]


@pytest.mark.parametrize("feats, match", [
    (_feat([1, 2], [[1, 2], [1]]), "row 1.*has 1 values but row 0 has 2"),
    # (a row for an item without interactions adds it: see test_feature_only.py)
    (_feat(["a", "b"], [[1], [2]]), "features item ids have type string"),
    (_feat([1, 2, 1], [[1], [2], [3]]), "row 2: duplicate features for item 1"),
    (_feat([1], [[1]]), "1 graph item\\(s\\) have no features"),
    (_feat([1, 2], [[1], [float("nan")]]), "row 1 has a NaN"),
])
def test_feature_errors(tmp_path, feats, match):
    with pytest.raises(InputError, match=match):
        prepare(_ds(item=[1, 2], group=[0, 0]), tmp_path / "g", item_features=feats)


def test_csv_and_parquet_folder_inputs(tmp_path):
    table = pa.table({"item": [1, 2, 2], "group": [5, 5, 6]})
    pacsv.write_csv(table, tmp_path / "in.csv")
    (tmp_path / "pq").mkdir()
    pq.write_table(table.slice(0, 2), tmp_path / "pq" / "a.parquet")
    pq.write_table(table.slice(2), tmp_path / "pq" / "b.parquet")
    a = prepare(str(tmp_path / "in.csv"), tmp_path / "g1")
    b = prepare(str(tmp_path / "pq"), tmp_path / "g2")
    for s in (a, b):
        assert (s.num_items, s.num_groups, s.num_edges) == (2, 2, 3)


def test_existing_dir_needs_overwrite_and_failure_leaves_nothing(tmp_path, monkeypatch):
    ds = _ds(item=[1, 2], group=[0, 0])
    prepare(ds, tmp_path / "g")
    with pytest.raises(FileExistsError, match="overwrite"):
        prepare(ds, tmp_path / "g")
    calls = []

    def failing(fs, path, arr):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(fs, path, arr)

    real = _io.write_npy
    monkeypatch.setattr(_io, "write_npy", failing)
    with pytest.raises(OSError):
        prepare(ds, tmp_path / "h")
    assert not (tmp_path / "h").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["g"]  # no temp dir left behind


def test_checksums_and_truncation_detected(tmp_path):
    store = prepare(_ds(item=[1, 2, 3], group=[0, 0, 1]), tmp_path / "g")
    GraphStore(store.uri, verify=True)  # intact
    path = tmp_path / "g" / "item_indices.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    GraphStore(store.uri, verify=False)  # same size: only the checksum can tell
    with pytest.raises(GraphFormatError, match="item_indices.npy: sha256"):
        GraphStore(store.uri)  # a small graph is hashed whenever it is opened
    with pytest.raises(GraphFormatError, match="item_indices.npy: sha256"):
        GraphStore(store.uri, verify=True)
    path.write_bytes(bytes(data[:-8]))
    with pytest.raises(GraphFormatError, match="truncated"):
        GraphStore(store.uri)
    with pytest.raises(GraphFormatError, match="no manifest"):
        GraphStore(tmp_path)


def test_rows_slice_and_item_index(planted_graph):
    store = GraphStore(planted_graph)
    ip = np.asarray(store.array("item_indptr"))
    ix = np.asarray(store.array("item_indices"))
    sl = store.rows("item", 100, 150)
    assert np.array_equal(sl.indptr, ip[100:151] - ip[100])
    assert np.array_equal(sl.indices, ix[ip[100]:ip[150]])
    ids = store.item_ids.to_pylist()
    assert store.item_index([ids[5], ids[0]]).tolist() == [5, 0]
    with pytest.raises(KeyError, match="item id 999999"):
        store.item_index(999999)


def test_planted_dataset_labels_and_features_survive(planted_dataset, planted_graph):
    store = GraphStore(planted_graph)
    labels = np.asarray(store.labels())
    truth = dict(zip(planted_dataset.item_labels.column("item").to_pylist(),
                     planted_dataset.item_labels.column("label").to_pylist()))
    assert [truth[i] for i in store.item_ids.to_pylist()] == labels.tolist()
    assert store.feature_dim == 16
