"""Item features in ``prepare(engine="ray")``: checked and aligned by tasks, never read whole
by the driver on good input, and the local engine's exact errors on bad input.

Unit tests of the per-block steps (no Ray) first, then whole runs on several fragments
(``FRAGMENT_ROWS`` lowered so that three small files make many tasks).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinsage_ray.graph import inputs, prepare, prepare_features, prepare_ray
from pinsage_ray.graph.inputs import InputError


def test_feature_block_is_the_local_matrix_in_row_order():
    """Numeric columns of mixed types and a list column: the block's vectors are the rows the
    local engine would store for these ids, in the fragment's row order."""
    ids = pa.array([9, 3, 7], pa.int32())
    numeric = pa.table({"item": ids, "a": [1, 2, 3], "b": [0.1, 0.2, 1e-40]})
    listed = pa.table({"item": ids, "v": [[1.0, 2.0], [3.0, 4.0], [5.0, 1e-40]]})
    for table in (numeric, listed):
        rows, dim = prepare_features.feature_block(table, pa.int64())
        assert dim == 2 and rows.column("item").type == pa.int64()
        got = np.asarray(rows.column("f").to_pylist(), dtype=np.float32)
        want = inputs.feature_matrix(table, pa.array([3, 7, 9], pa.int64()), "t")[[2, 0, 1]]
        assert got.tobytes() == want.tobytes()
    empty, dim = prepare_features.feature_block(numeric.slice(0, 0), pa.int64())
    assert empty is None and dim == 0


@pytest.mark.parametrize("table", [
    pa.table({"item": [1, 1], "x": [1.0, 2.0]}),                       # duplicate in the block
    pa.table({"item": [1, 2], "x": [1.0, float("nan")]}),              # NaN
    pa.table({"item": pa.array([1, None]), "x": [1.0, 2.0]}),          # null id
    pa.table({"item": ["a", "b"], "x": [1.0, 2.0]}),                   # ids of the wrong type
    pa.table({"item": [1, 2], "v": [[1.0], [1.0, 2.0]]}),              # ragged
    pa.table({"id": [1, 2], "x": [1.0, 2.0]}),                         # no item column
], ids=["duplicate", "nan", "null_id", "string_ids", "ragged", "no_item"])
def test_feature_block_flags_what_the_local_checks_refuse(table):
    assert prepare_features.feature_block(table, pa.int64()) == (None, -1)


def test_positions_of_int_and_string_ids():
    f = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 2)
    for ids, items in ((pa.array([-5, 2, 40]), pa.array([40, -5, 2])),
                       (pa.array(["a", "b", "c"]), pa.array(["c", "a", "b"]))):
        out = prepare_features.positions(pa.table({"item": items, "f": f}), ids)
        assert out.column("pos").to_pylist() == [2, 0, 1]
        assert out.column("f").combine_chunks().equals(f)


def _write_parts(folder: Path, table: pa.Table, cuts: list[int]) -> None:
    folder.mkdir()
    for k, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        pq.write_table(table.slice(a, b - a), folder / f"part-{k}.parquet", row_group_size=8)


@pytest.fixture
def graph_input(tmp_path, monkeypatch):
    """Interactions over items 0..59 (step 7, some negative) and a features folder with
    feature-only items, shuffled rows, float64 values that round to float32, split into
    three files of 8-row groups and read 16 rows per task."""
    monkeypatch.setattr(prepare_ray, "FRAGMENT_ROWS", 16)
    rng = np.random.default_rng(4)
    items = rng.integers(0, 60, 400) * 7 - 100
    pq.write_table(pa.table({"item": items, "group": rng.integers(0, 50, 400)}),
                   tmp_path / "i.parquet")
    ids = rng.permutation(np.concatenate([np.unique(items), [5000, -4000, 777]]))
    feats = pa.table({"item": ids, "x": rng.normal(size=len(ids)),
                      "y": rng.integers(0, 9, len(ids))})
    return tmp_path, feats


def test_features_aligned_by_tasks_equal_the_local_graph(ray_session, graph_input, monkeypatch):
    tmp, feats = graph_input
    _write_parts(tmp / "f", feats, [0, 20, 41, feats.num_rows])
    prepare(tmp / "i.parquet", tmp / "local", item_features=tmp / "f", engine="local")

    def no_whole_read(*args, **kwargs):
        raise AssertionError("the driver read the features table whole")

    monkeypatch.setattr(prepare_features, "read_whole", no_whole_read)
    store = prepare(tmp / "i.parquet", tmp / "ray", item_features=tmp / "f", engine="ray")
    assert store.manifest["feature_only_items"] == 3 and store.manifest["feature_dim"] == 2
    for path in sorted((tmp / "local").iterdir()):
        x, y = path.read_bytes(), (tmp / "ray" / path.name).read_bytes()
        if path.name == "manifest.json":
            x, y = json.loads(x), json.loads(y)
            x.pop("prepare_seconds"), y.pop("prepare_seconds")
        assert x == y, path.name


def _bad(feats: pa.Table, case: str) -> tuple[pa.Table, list[int]]:
    n = feats.num_rows
    if case == "duplicate_in_another_file":  # row 3's id again in the last file
        dup = feats.slice(3, 1)
        return pa.concat_tables([feats, dup]), [0, 20, 41, n + 1]
    if case == "item_without_features":  # drop the row of an item that has interactions
        row = next(r for r, i in enumerate(feats.column("item").to_pylist()) if -100 <= i < 400)
        return pa.concat_tables([feats.slice(0, row), feats.slice(row + 1)]), [0, 20, 41, n - 1]
    # list vectors of width 2, and 3 in the second file only
    vec = [[float(i), 1.0] if not 20 <= i < 41 else [float(i), 1.0, 2.0] for i in range(n)]
    return pa.table({"item": feats.column("item"), "v": vec}), [0, 20, 41, n]


@pytest.mark.parametrize("case", ["duplicate_in_another_file", "item_without_features",
                                  "width_differs_between_files"])
def test_bad_features_give_the_local_error(ray_session, graph_input, case):
    """Errors only the whole table shows (across fragments, or against the graph's items):
    the same message as the local engine, and no graph directory."""
    tmp, feats = graph_input
    table, cuts = _bad(feats, case)
    _write_parts(tmp / "f", table, cuts)
    errors = []
    for engine in ("local", "ray"):
        with pytest.raises(InputError) as err:
            prepare(tmp / "i.parquet", tmp / engine, item_features=tmp / "f", engine=engine)
        errors.append(str(err.value))
        assert not (tmp / engine).exists()
    assert errors[0] == errors[1]
    assert {"duplicate_in_another_file": "duplicate features for item",
            "item_without_features": "have no features",
            "width_differs_between_files": "every feature vector must have the same length",
            }[case] in errors[1]


def test_fragments_shrink_as_the_cluster_grows(tmp_path):
    """Parquet input is cut into at least FRAGMENTS_PER_CPU fragments per CPU (whole row
    groups, at least FRAGMENT_MIN_ROWS rows, at most FRAGMENT_ROWS), so each task's rows fall
    as CPUs are added; a CSV file stays one fragment."""
    rows = prepare_ray.fragment_rows
    assert rows(40_000_000, 2) == prepare_ray.FRAGMENT_ROWS
    assert rows(4_000_000, 4) == 500_000 and rows(4_000_000, 8) == 250_000
    assert rows(1_000, 64) == prepare_ray.FRAGMENT_MIN_ROWS
    pq.write_table(pa.table({"item": np.arange(1000), "group": np.arange(1000)}),
                   tmp_path / "i.parquet", row_group_size=100)
    files = prepare_ray._files(str(tmp_path / "i.parquet"))
    assert files.parquet_rows == 1000
    for max_rows, want in ((1000, 1), (450, 3), (100, 10), (50, 10)):
        frags = files.fragments(max_rows)
        assert len(frags) == want
        assert [f.offset for f in frags] == [sum(len(g.row_groups) for g in frags[:i]) * 100
                                             for i in range(len(frags))]
        assert sorted(g for f in frags for g in f.row_groups) == list(range(10))
    (tmp_path / "i.csv").write_text("item,group\n1,2\n")
    assert len(prepare_ray._files(str(tmp_path / "i.csv")).fragments(1)) == 1


def test_csr_streamed_from_blocks_equals_the_whole_arrays(tmp_path):
    """Rows spanning blocks (a group split by the (group, time) sort), rows without edges
    between blocks and at the end, one row per block: the streamed indptr and the degree
    statistics equal those of the whole degree array, and each file is np.save's bytes."""
    from pinsage_ray import _io
    from pinsage_ray.graph.edges import degree_stats
    from pinsage_ray.graph.prepare_write import write_csr

    rows = np.array([0, 0, 2, 2, 2, 2, 3, 7, 7, 7, 7, 7, 9])  # rows 1, 4-6, 8, 10, 11 empty
    cuts = [0, 3, 5, 6, 7, 10, 12, 13]  # row 2 and row 7 continue into the next block
    table = pa.table({"gcode": rows, "icode": np.arange(len(rows)),
                      "w": np.ones(len(rows), dtype=np.float32)})
    blocks = [table.slice(a, b - a) for a, b in zip(cuts[:-1], cuts[1:])]
    files: dict = {}
    fs, root = _io.resolve(str(tmp_path))
    stats, weighted = write_csr(fs, root, "group", blocks, 12, len(rows), files, times=False)
    deg = np.bincount(rows, minlength=12)
    indptr = np.concatenate([[0], np.cumsum(deg)]).astype(np.int64)
    assert (np.load(tmp_path / "group_indptr.npy") == indptr).all() and not weighted
    assert stats == degree_stats(deg)
    np.save(tmp_path / "want.npy", indptr)
    assert (tmp_path / "want.npy").read_bytes() == (tmp_path / "group_indptr.npy").read_bytes()
    assert files["group_indptr.npy"]["shape"] == [13]
    for degrees in ([3, 1, 0, 5, 2], [4], [0, 0], [1, 2, 2, 9, 9, 9, 100]):
        from pinsage_ray.graph.prepare_write import DegreeHistogram

        hist = DegreeHistogram()
        hist.add(np.asarray(degrees[:2]))
        hist.add(np.asarray(degrees[2:]))
        assert hist.stats() == degree_stats(np.asarray(degrees))
