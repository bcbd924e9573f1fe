"""``prepare(engine="ray")`` writes the same graph directory as the local engine, gives the
same errors on the bad-input catalogue, and leaves no graph directory when it fails.

Ray Data's sort costs a few seconds per step on 2 cores, so each test builds one graph that
covers many edge cases at once rather than one graph per case.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from pinsage_ray.graph import prepare, prepare_ray
from pinsage_ray.graph.inputs import InputError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import _fault_fixtures as fixtures  # noqa: E402
import faults_catalogue  # noqa: E402


def _same_graph_dirs(a: Path, b: Path) -> None:
    """Every file byte for byte; the manifest equal but for its timing field."""
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for path in sorted(a.iterdir()):
        x, y = path.read_bytes(), (b / path.name).read_bytes()
        if path.name == "manifest.json":
            x, y = json.loads(x), json.loads(y)
            x.pop("prepare_seconds"), y.pop("prepare_seconds")
        assert x == y, path.name


def _edge_case_rows(rng: np.random.Generator, n: int, string_items: bool) -> dict:
    items = rng.integers(0, 60, n)
    groups = rng.integers(0, 40, n)
    cols = {"item": [f"i{k:02d}" for k in items] if string_items else items * 7 - 100,
            "group": groups if string_items else [f"u{k}" for k in groups]}
    # one edge repeated 20 times: merged weights are sums of > 8 floats (pairwise summation)
    cols["item"] = list(cols["item"][:5]) + [cols["item"][0]] * 20 + list(cols["item"][5:])
    cols["group"] = list(cols["group"][:5]) + [cols["group"][0]] * 20 + list(cols["group"][5:])
    return cols


def test_ray_engine_writes_the_local_graph_parquet_folder(ray_session, tmp_path):
    """String items (mapped column), int groups, weights with zeros and duplicates, timestamps
    with ties, a folder of three Parquet files with small row groups, list features with
    feature-only items."""
    rng = np.random.default_rng(0)
    cols = _edge_case_rows(rng, 500, string_items=True)
    n = len(cols["item"])
    table = pa.table({"movie": cols["item"], "group": cols["group"],
                      "weight": rng.choice([0.0, 0.25, 1.0, 2.3], n),
                      "timestamp": rng.integers(0, 50, n)})
    folder = tmp_path / "in"
    folder.mkdir()
    for k, (a, b) in enumerate([(0, 200), (200, 330), (330, n)]):
        pq.write_table(table.slice(a, b - a), folder / f"part-{k}.parquet", row_group_size=40)
    ids = sorted(set(cols["item"])) + ["a_new", "zz_new"]  # two feature-only items
    pq.write_table(pa.table({"movie": ids, "v": [[float(i), -1.0] for i in range(len(ids))]}),
                   tmp_path / "f.parquet")
    kwargs = dict(item_features=tmp_path / "f.parquet", columns={"item": "movie"})
    prepare(folder, tmp_path / "local", engine="local", **kwargs)
    store = prepare(folder, tmp_path / "ray", engine="ray", **kwargs)
    m = store.manifest
    # 2 new items, plus items whose every row has weight 0 (they keep their features)
    assert m["feature_only_items"] >= 2 and m["has_timestamps"] and m["weighted"]
    assert m["report"]["duplicate_rows_merged"] > 19 and m["report"]["zero_weight_rows_dropped"]
    _same_graph_dirs(tmp_path / "local", tmp_path / "ray")


def test_ray_engine_writes_the_local_graph_csv(ray_session, tmp_path):
    """Negative int items, string groups, no weights (row counts), numeric feature columns
    with a feature-only item, one CSV file, through the CLI's --engine flag."""
    rng = np.random.default_rng(1)
    cols = _edge_case_rows(rng, 300, string_items=False)
    pacsv.write_csv(pa.table(cols), tmp_path / "in.csv")
    ids = sorted(set(int(i) for i in cols["item"])) + [10_000]
    pq.write_table(pa.table({"item": ids, "x": np.arange(len(ids), dtype=np.float64),
                             "y": np.ones(len(ids))}), tmp_path / "f.parquet")
    for engine in ("local", "ray"):
        rc, err = fixtures.run_in_process(["prepare", str(tmp_path / "in.csv"),
                                           str(tmp_path / engine), "--features",
                                           str(tmp_path / "f.parquet"), "--engine", engine])
        assert rc == 0, err
    assert json.loads((tmp_path / "ray" / "manifest.json").read_text())["feature_only_items"] == 1
    _same_graph_dirs(tmp_path / "local", tmp_path / "ray")


def test_block_merge_sums_in_input_order():
    """A sorted block's rows may come in any order: the merge puts them back in input order
    (``seq``) before adding weights, so the float32 sums and first rows are the local ones."""
    from pinsage_ray.graph.edges import merge_edges
    from pinsage_ray.graph.prepare_blocks import encode_items_and_merge

    rng = np.random.default_rng(5)
    n = 400
    items, groups = rng.integers(0, 3, n), rng.integers(0, 2, n)
    w = rng.random(n) * 10.0 ** rng.integers(-3, 4, n)  # sums that depend on the order
    t = rng.integers(0, 5, n)
    want, _ = merge_edges(items, groups, w, t, 2)
    shuffle = rng.permutation(n)
    block = pa.table({"item": items[shuffle], "w": w[shuffle], "t": t[shuffle],
                      "seq": np.arange(n)[shuffle], "gcode": groups[shuffle]})
    got, ids, counts = encode_items_and_merge(block, 0, 2, weighted=True)
    assert ids.to_pylist() == [0, 1, 2] and counts["edges"] == len(want["item"]) == 6
    assert got.column("w").to_numpy().tobytes() == want["weight"].tobytes()
    assert (got.column("fseq").to_numpy() == want["first_row"]).all()
    assert (got.column("t").to_numpy() == want["time"]).all()


PREPARE_CASES = [c for c in faults_catalogue.all_cases() if c.command == "prepare"]


def _error_line(case, fx, tmp: Path, engine: str) -> tuple[str, str]:
    lines = []

    def run(argv):
        rc, err = fixtures.run_in_process([*argv, "--engine", engine])
        lines.append(err)
        return rc, err

    result = fixtures.run_case(case, fx, tmp, run)
    error = [line for line in lines[0].splitlines() if line.strip()][-1]
    return result["verdict"], error.replace(str(tmp), "TMP")


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """The catalogue's prepare fixtures (interactions, features, a graph), without its run."""
    root = tmp_path_factory.mktemp("bad-inputs-ray")
    rng = np.random.default_rng(3)
    inter = root / "interactions.parquet"
    pq.write_table(pa.table({"item": rng.integers(0, 40, 300), "group": rng.integers(0, 30, 300)}),
                   inter)
    prepare(inter, root / "graph", engine="local")
    return {"inter": inter, "graph": root / "graph"}


@pytest.mark.parametrize("case", PREPARE_CASES, ids=lambda c: c.name)
def test_bad_input_gives_the_local_error(ray_session, fx, tmp_path, case):
    """Every prepare case of the catalogue: clean on both engines, the same error line
    (paths aside), and the expected text of tests/test_bad_inputs.py where it has one."""
    local = _error_line(case, fx, tmp_path / "L", "local")  # same path lengths
    ray_ = _error_line(case, fx, tmp_path / "R", "ray")
    assert ray_[0] == "clean", ray_
    assert ray_ == local
    for text in BAD_INPUT_EXPECT.get(case.name, []):
        assert text in ray_[1]


def _bad_input_expect() -> dict[str, list[str]]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import test_bad_inputs

    return {k: v for k, v in test_bad_inputs.EXPECT.items() if k.startswith("prepare_")}


BAD_INPUT_EXPECT = _bad_input_expect()


def test_first_error_across_blocks_is_the_local_one(ray_session, tmp_path):
    """Bad rows in several files: a null group in a later file comes before a NaN weight in
    an earlier one (the local engine checks nulls first), named by file and row."""
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"item": [1, 2, 3], "group": [1, 1, 2], "weight": [1.0, np.nan, 1.0]}),
                   folder / "a.parquet")
    pq.write_table(pa.table({"item": [4, 5, 6], "group": pa.array([1, None, None], pa.int64()),
                             "weight": [1.0, 1.0, 1.0]}), folder / "b.parquet")
    errors = []
    for engine in ("local", "ray"):
        with pytest.raises(InputError) as err:
            prepare(folder, tmp_path / engine, engine=engine)
        errors.append(str(err.value))
        assert not (tmp_path / engine).exists()
    assert errors[0] == errors[1]
    assert "b.parquet row 2 (counted from 1), column 'group' is null" in errors[1]


@pytest.mark.parametrize("text", ["item,grp\n", "item,group\n"])
def test_empty_csv_gives_the_local_error(ray_session, tmp_path, text):
    """A header-only CSV is empty input on both engines, whatever its columns."""
    (tmp_path / "h.csv").write_text(text)
    errors = []
    for engine in ("local", "ray"):
        with pytest.raises(InputError) as err:
            prepare(tmp_path / "h.csv", tmp_path / engine, engine=engine)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and "no interactions (empty input)" in errors[1]


def test_failure_mid_write_leaves_no_graph_dir(ray_session, tmp_path, monkeypatch):
    """A failure after some files are written (a block lost while streaming the CSR) leaves
    neither the graph directory nor its temp directory."""
    pq.write_table(pa.table({"item": [1, 2, 2, 3], "group": [1, 1, 2, 2]}), tmp_path / "i.parquet")
    real = prepare_ray._write_csr

    def write_then_fail(fs, tmp, side, *args, **kwargs):
        out = real(fs, tmp, side, *args, **kwargs)
        if side == "group":
            assert any(Path(tmp).iterdir())
            raise OSError("block lost")
        return out

    monkeypatch.setattr(prepare_ray, "_write_csr", write_then_fail)
    with pytest.raises(OSError, match="block lost"):
        prepare(tmp_path / "i.parquet", tmp_path / "g", engine="ray")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.parquet"]


def test_engine_choice(tmp_path, monkeypatch):
    """auto: ray from AUTO_RAY_MIN_BYTES of input files; tables stay local; bad names fail."""
    path = tmp_path / "i.parquet"
    pq.write_table(pa.table({"item": [1, 2], "group": [1, 1]}), path)
    size = path.stat().st_size
    monkeypatch.setattr(prepare_ray, "AUTO_RAY_MIN_BYTES", size)
    assert prepare_ray.pick_engine(path, "auto") == "ray"
    assert prepare_ray.pick_engine(tmp_path, "auto") == "ray"  # a folder: its files' bytes
    monkeypatch.setattr(prepare_ray, "AUTO_RAY_MIN_BYTES", size + 1)
    assert prepare_ray.pick_engine(path, "auto") == "local"
    assert prepare_ray.pick_engine(path, "ray") == "ray"
    table = pa.table({"item": [1], "group": [1]})
    monkeypatch.setattr(prepare_ray, "AUTO_RAY_MIN_BYTES", 0)
    assert prepare_ray.pick_engine(table, "auto") == "local"
    with pytest.raises(ValueError, match="write it to Parquet first"):
        prepare(table, tmp_path / "g", engine="ray")
    with pytest.raises(ValueError, match=r"engine='fast'.*'auto', 'local', 'ray'"):
        prepare(path, tmp_path / "g", engine="fast")
