"""Tests for pinsage_ray.index: exact top-k, HNSW build/tune/query, add_items, save/load integrity."""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path

import numpy as np
import pytest

from pinsage_ray.index import HNSWConfig, HNSWIndex, IndexIntegrityError, exact_topk
from pinsage_ray.index import _hnsw_io as io
from pinsage_ray.index import hnsw as hnsw_mod


def clustered(n: int, d: int = 32, clusters: int = 50, noise: float = 0.3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d))
    return (centers[rng.integers(0, clusters, n)] + noise * rng.normal(size=(n, d))).astype(np.float32)


def numpy_scores(q: np.ndarray, v: np.ndarray, space: str) -> np.ndarray:
    q, v = q.astype(np.float64), v.astype(np.float64)
    if space == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
    if space == "l2":
        return -((q[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    return q @ v.T


def numpy_recall(x: np.ndarray, idx: HNSWIndex, k: int = 10) -> float:
    """recall@k of idx over all of x, with a brute-force cosine top-k (ids == positions)."""
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    hits = 0
    for lo in range(0, len(x), 1000):
        s = xn[lo : lo + 1000] @ xn.T
        truth = np.argpartition(-s, k, axis=1)[:, :k]
        got, _ = idx.query(x[lo : lo + 1000], k)
        hits += sum(len(set(a) & set(b)) for a, b in zip(got.tolist(), truth.tolist()))
    return hits / (len(x) * k)


@pytest.fixture(scope="module")
def data5k() -> np.ndarray:
    return clustered(5000)


@pytest.fixture(scope="module")
def built5k(data5k: np.ndarray) -> HNSWIndex:
    return HNSWIndex.build(data5k, np.arange(5000), HNSWConfig(ef_construction=100, recall_sample=500,
                                                               search="hnsw"))


# --------------------------------------------------------------------------- exact_topk
@pytest.mark.parametrize("space", ["cosine", "ip", "l2"])
@pytest.mark.parametrize("chunks", [(7, 5), (8192, 2048), (203, 1)])
def test_exact_topk_matches_numpy_argsort(space: str, chunks: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(17, 12)).astype(np.float32)
    v = rng.normal(size=(203, 12)).astype(np.float32)
    ref = numpy_scores(q, v, space)
    want_i = np.argsort(-ref, axis=1, kind="stable")[:, :10]
    got_i, got_s = exact_topk(q, v, 10, space, chunk_size=chunks[0], query_chunk_size=chunks[1])
    assert got_i.dtype == np.int64 and got_s.dtype == np.float32 and got_i.shape == (17, 10)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_allclose(got_s, np.take_along_axis(ref, want_i, 1), rtol=1e-4, atol=1e-4)


def test_exact_topk_k_equals_n_and_validation() -> None:
    v = np.random.default_rng(2).normal(size=(9, 4)).astype(np.float32)
    idx, s = exact_topk(v, v, 9, "ip", chunk_size=2)
    assert sorted(idx[0].tolist()) == list(range(9)) and np.all(np.diff(s, axis=1) <= 0)
    with pytest.raises(ValueError, match="k must be"):
        exact_topk(v, v, 10, "ip")
    with pytest.raises(ValueError, match="share D"):
        exact_topk(v[:, :3], v, 2, "ip")
    with pytest.raises(ValueError, match="space"):
        exact_topk(v, v, 2, "hamming")


# --------------------------------------------------------------------------- build / tune
def test_build_reaches_recall_and_manifest_is_consistent(built5k: HNSWIndex, data5k: np.ndarray) -> None:
    m = built5k.manifest
    assert m["recall_at_k"] >= 0.95 and m["k_for_recall"] == 10 and m["build_seconds"] > 0
    assert m["ef"] == built5k.ef  # the stored ef is the one hnswlib is searching with
    assert m["recall_curve"][str(m["ef"])] == m["recall_at_k"]
    full = numpy_recall(data5k, built5k)  # independent brute force over all 5000 points
    assert full >= 0.94 and abs(full - m["recall_at_k"]) < 0.03
    assert len(built5k) == 5000 and built5k.dim == 32 and built5k.space == "cosine"


def test_tuning_picks_smallest_sufficient_ef() -> None:
    x = clustered(5000, d=64, noise=1.0, seed=3)
    cfg = HNSWConfig(M=4, ef_construction=20, recall_sample=400, target_recall=0.95, search="hnsw")
    idx = HNSWIndex.build(x, np.arange(5000), cfg)
    curve = {int(e): r for e, r in idx.manifest["recall_curve"].items()}
    assert idx.ef > 10, "weak graph should need more than the first rung"
    assert curve[idx.ef] >= 0.95 and all(r < 0.95 for e, r in curve.items() if e < idx.ef)
    assert numpy_recall(x, idx) >= 0.93
    fixed = HNSWIndex.build(x, np.arange(5000), HNSWConfig(M=4, ef_construction=20, ef=37, recall_sample=200))
    assert fixed.ef == 37 and list(fixed.manifest["recall_curve"]) == ["37"]


def test_unreachable_target_warns_and_uses_largest(monkeypatch, caplog) -> None:
    monkeypatch.setattr(hnsw_mod, "EF_LADDER", (10, 12))
    x = clustered(3000, d=64, noise=1.0, seed=4)
    with caplog.at_level(logging.WARNING, logger="pinsage_ray.index.hnsw"):
        idx = HNSWIndex.build(x, np.arange(3000), HNSWConfig(M=2, ef_construction=10, target_recall=1.0,
                                                             search="hnsw"))
    assert idx.ef == 12 and idx.recall_at_k < 1.0 and idx.search == "hnsw"
    assert any("no ef reaches" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- query
def test_query_returns_item_itself_first(built5k: HNSWIndex, data5k: np.ndarray) -> None:
    rows = np.arange(0, 5000, 97)
    ids, scores = built5k.query(data5k[rows], 5)
    assert ids.shape == (len(rows), 5) and scores.dtype == np.float32
    np.testing.assert_array_equal(ids[:, 0], rows)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first
    one_ids, one_scores = built5k.query(data5k[42], 5)  # 1-D input -> 1-D output
    assert one_ids.shape == (5,) and one_ids[0] == 42
    np.testing.assert_array_equal(one_ids, built5k.query(data5k[42:43], 5)[0][0])


def test_scores_match_exact_for_l2_and_ip() -> None:
    x = clustered(800, d=8, seed=5)
    for space in ("l2", "ip"):
        idx = HNSWIndex.build(x, np.arange(800), HNSWConfig(space=space, ef=200, recall_sample=100,
                                                            search="hnsw"))
        ids, scores = idx.query(x[:20], 5)
        _, want_s = exact_topk(x[:20], x, 5, space)
        np.testing.assert_allclose(scores, want_s, rtol=1e-4, atol=1e-3)


def test_exclude_skips_items_and_keeps_k(built5k: HNSWIndex, data5k: np.ndarray) -> None:
    q = data5k[:20]
    plain, _ = built5k.query(q, 14)  # what query(k=10) with 4 excluded fetches from the graph
    excl = [set(row[:4].tolist()) for row in plain]  # drop each query's own top-4 (incl. itself)
    ids, scores = built5k.query(q, 10, exclude=excl)
    assert ids.shape == (20, 10)
    for row, ex, base in zip(ids.tolist(), excl, plain.tolist()):
        assert not ex & set(row) and len(set(row)) == 10
        assert row == base[4:]  # the rest keeps its rank order
    by_pos, _ = built5k.query(q, 10, exclude=[np.array(sorted(e)) for e in excl], exclude_by="position")
    np.testing.assert_array_equal(by_pos, ids)
    one, _ = built5k.query(q[0], 3, exclude=[0, 123456789])  # unknown ids are ignored
    assert 0 not in one.tolist() and len(one) == 3
    with pytest.raises(ValueError, match="one collection per query"):
        built5k.query(q, 3, exclude=[{0}])
    small = HNSWIndex.build(data5k[:5], np.arange(5), HNSWConfig(recall_sample=5))
    with pytest.raises(ValueError, match="exceeds"):
        small.query(data5k[0], 4, exclude={0, 1})
    ids_all, _ = small.query(data5k[0], 3, exclude={0, 1})
    assert sorted(ids_all.tolist()) == [2, 3, 4]


def test_string_ids_roundtrip(tmp_path: Path) -> None:
    x = clustered(600, seed=6)
    names = np.array([f"pin-{i:04d}" for i in range(600)], dtype=object)
    idx = HNSWIndex.build(x, names, HNSWConfig(recall_sample=100))
    ids, _ = idx.query(x[:3], 4, exclude=[{"pin-0000"}, None, []])
    assert ids.dtype == object and ids[1, 0] == "pin-0001" and "pin-0000" not in ids[0].tolist()
    assert idx.position_of("pin-0123") == 123 and idx.ids[123] == "pin-0123"
    with pytest.raises(KeyError, match="pin-9999"):
        idx.position_of("pin-9999")
    idx.save(tmp_path / "ix")
    assert (tmp_path / "ix" / "ids.parquet").is_file()
    loaded = HNSWIndex.load(tmp_path / "ix")
    np.testing.assert_array_equal(loaded.ids, names)
    np.testing.assert_array_equal(loaded.query(x[:50], 5)[0], idx.query(x[:50], 5)[0])


def test_ids_validation() -> None:
    x = clustered(10, seed=7)
    with pytest.raises(ValueError, match="unique"):
        HNSWIndex.build(x, np.array([1] * 10), HNSWConfig(recall_sample=5))
    with pytest.raises(TypeError, match="integers or strings"):
        HNSWIndex.build(x, np.arange(10.0), HNSWConfig(recall_sample=5))
    with pytest.raises(ValueError, match="one id per vector"):
        HNSWIndex.build(x, np.arange(9), HNSWConfig(recall_sample=5))
    with pytest.raises(ValueError, match="NaN"):
        HNSWIndex.build(np.full((3, 2), np.nan), np.arange(3), HNSWConfig(recall_sample=3))


# --------------------------------------------------------------------------- save / load
def test_save_load_identical_results_and_ef(tmp_path: Path, data5k: np.ndarray) -> None:
    x = data5k[:2000]
    ids = np.arange(2000, dtype=np.int64) * 3 + 100
    idx = HNSWIndex.build(x, ids, HNSWConfig(ef=50, recall_sample=200))
    idx.save(tmp_path / "ix")
    files = sorted(p.name for p in (tmp_path / "ix").iterdir())
    assert files == ["ids.npy", "index.bin", "manifest.json"]
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    for key in ("format_version", "dim", "count", "space", "M", "ef_construction", "ef", "recall_at_k",
                "k_for_recall", "build_seconds"):
        assert key in manifest
    assert manifest["ef"] == 50 and set(manifest["sha256"]) == {"index.bin", "ids.npy"}
    loaded = HNSWIndex.load(tmp_path / "ix")
    assert loaded.ef == 50, "ef must be re-applied (hnswlib would default to 10)"
    assert len(loaded) == 2000 and loaded.dim == 32 and loaded.position_of(ids[7]) == 7
    a_ids, a_s = idx.query(x[::7], 10, exclude=[[i] for i in ids[::7]])
    b_ids, b_s = loaded.query(x[::7], 10, exclude=[[i] for i in ids[::7]])
    np.testing.assert_array_equal(a_ids, b_ids)
    np.testing.assert_array_equal(a_s, b_s)
    assert HNSWIndex.load(tmp_path / "ix", ef=77).ef == 77
    # Saving over an existing index replaces it atomically and leaves no temp dirs behind.
    HNSWIndex.build(x[:100], np.arange(100), HNSWConfig(recall_sample=50)).save(tmp_path / "ix")
    assert len(HNSWIndex.load(tmp_path / "ix")) == 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]


def test_save_refuses_to_clobber_unrelated_directory(tmp_path: Path, built5k: HNSWIndex) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a saved HNSWIndex"):
        built5k.save(tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep me"
    with pytest.raises(FileNotFoundError):
        HNSWIndex.load(tmp_path / "nowhere")


@pytest.fixture()
def saved(tmp_path: Path) -> Path:
    x = clustered(400, d=16, seed=8)
    HNSWIndex.build(x, np.arange(400), HNSWConfig(M=8, recall_sample=100)).save(tmp_path / "ix")
    return tmp_path / "ix"


def _rewrite_sha(directory: Path, name: str) -> None:
    m = json.loads((directory / "manifest.json").read_text())
    m["sha256"][name] = io.sha256_file(directory / name)
    (directory / "manifest.json").write_text(json.dumps(m))


def _edit_manifest(directory: Path, **changes) -> None:
    m = json.loads((directory / "manifest.json").read_text())
    m.update(changes)
    (directory / "manifest.json").write_text(json.dumps(m))


def test_flipped_byte_in_index_bin(saved: Path) -> None:
    data = bytearray((saved / "index.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (saved / "index.bin").write_bytes(bytes(data))
    with pytest.raises(IndexIntegrityError, match=r"index\.bin.*sha256 mismatch"):
        HNSWIndex.load(saved)


@pytest.mark.parametrize("name", ["index.bin", "ids.npy"])
def test_truncated_files(saved: Path, name: str) -> None:
    data = (saved / name).read_bytes()
    (saved / name).write_bytes(data[: len(data) - 37])
    with pytest.raises(IndexIntegrityError, match=name.replace(".", r"\.") + ": sha256 mismatch"):
        HNSWIndex.load(saved)


def test_truncated_index_with_recomputed_checksum_never_reaches_hnswlib(saved: Path) -> None:
    data = (saved / "index.bin").read_bytes()
    (saved / "index.bin").write_bytes(data[: len(data) - 37])
    _rewrite_sha(saved, "index.bin")
    # hnswlib would also reject this one, but only our pre-check names the link lists.
    with pytest.raises(IndexIntegrityError, match="truncated inside|upper-level link list of"):
        HNSWIndex.load(saved)


def test_corrupt_neighbour_id_with_recomputed_checksum(saved: Path) -> None:
    data = bytearray((saved / "index.bin").read_bytes())
    header = struct.unpack_from("<QQQQQQiIQQQdQ", data, 0)
    per_element = header[3]
    first_link = 96 + 5 * per_element + 4  # element 5, level-0 list, first neighbour slot
    struct.pack_into("<I", data, first_link, 10_000_000)
    struct.pack_into("<I", data, first_link - 4, 1)  # make sure the slot is in use
    (saved / "index.bin").write_bytes(bytes(data))
    _rewrite_sha(saved, "index.bin")
    with pytest.raises(IndexIntegrityError, match="level 0 neighbour id >= count 400"):
        HNSWIndex.load(saved)


def test_missing_or_broken_manifest(saved: Path) -> None:
    text = (saved / "manifest.json").read_text()
    (saved / "manifest.json").write_text(text[:-20])
    with pytest.raises(IndexIntegrityError, match="not valid JSON"):
        HNSWIndex.load(saved)
    (saved / "manifest.json").unlink()
    with pytest.raises(IndexIntegrityError, match=r"manifest\.json.*missing"):
        HNSWIndex.load(saved)


def test_dim_and_count_mismatch(saved: Path) -> None:
    _edit_manifest(saved, dim=17)
    with pytest.raises(IndexIntegrityError, match=r"index\.bin.*dim=16.*manifest dim is 17"):
        HNSWIndex.load(saved)
    _edit_manifest(saved, dim=16, count=401)
    with pytest.raises(IndexIntegrityError, match="header holds 400 elements.*manifest count is 401"):
        HNSWIndex.load(saved)
    _edit_manifest(saved, count=400)
    np.save(saved / "ids.npy", np.arange(399, dtype=np.int64))
    _rewrite_sha(saved, "ids.npy")
    with pytest.raises(IndexIntegrityError, match=r"ids\.npy.*399 ids"):
        HNSWIndex.load(saved)


def test_integrity_error_is_value_error() -> None:
    assert issubclass(IndexIntegrityError, ValueError)


# --------------------------------------------------------------------------- add_items
def test_add_items_makes_new_items_findable(tmp_path: Path) -> None:
    x = clustered(1000, seed=9)
    idx = HNSWIndex.build(x, np.arange(1000), HNSWConfig(recall_sample=100))
    new = clustered(300, seed=10) + 5.0  # a region of space no indexed item is in
    idx.add_items(new, np.arange(10_000, 10_300))
    assert len(idx) == 1300 and idx.position_of(10_005) == 1005
    ids, scores = idx.query(new[::10], 3)
    np.testing.assert_array_equal(ids[:, 0], np.arange(10_000, 10_300)[::10])
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="already in the index"):
        idx.add_items(new[:2], np.array([10_000, 99_999]))
    with pytest.raises(ValueError, match="unique"):
        idx.add_items(new[:2], np.array([77_777, 77_777]))
    with pytest.raises(ValueError, match="same kind"):
        idx.add_items(new[:1], np.array(["a"], dtype=object))
    with pytest.raises(ValueError, match="dim"):
        idx.add_items(new[:1, :5], np.array([55_555]))
    assert len(idx) == 1300  # failed calls changed nothing
    idx.save(tmp_path / "ix")
    loaded = HNSWIndex.load(tmp_path / "ix")
    assert len(loaded) == 1300 and loaded.query(new[7], 1)[0][0] == 10_007


@pytest.mark.parametrize("space", ["cosine", "l2"])
def test_refresh_vectors_overwrites_stored_vectors_and_keeps_links(tmp_path: Path, space: str) -> None:
    x = clustered(800, seed=11)
    idx = HNSWIndex.build(x, np.arange(800) * 7, HNSWConfig(space=space, search="hnsw"))
    idx.add_items(clustered(20, seed=12), np.arange(10**6, 10**6 + 20))  # past the build
    idx.mark_deleted([14])
    links_before = idx._index.__getstate__()[0]["link_lists"].copy()
    moved = np.arange(1, 820, 3)
    ids = idx.ids[moved]
    new = (idx._stored_vectors(0)[moved] if space == "cosine" else x[np.minimum(moved, 799)])
    new = new + 0.01 * np.random.default_rng(0).normal(size=new.shape).astype(np.float32)
    idx.refresh_vectors(new, ids)
    want = new / np.linalg.norm(new, axis=1, keepdims=True) if space == "cosine" else new
    np.testing.assert_allclose(idx._index.get_items(moved, return_type="numpy"), want, atol=1e-6)
    np.testing.assert_array_equal(idx._index.__getstate__()[0]["link_lists"], links_before)
    got, scores = idx.query(new[:20], 1)
    np.testing.assert_array_equal(got[:, 0], ids[:20])  # found at their new place
    assert 14 not in idx.query(x[2], 10)[0].tolist()  # the delete mark survived
    idx.save(tmp_path / "ix")
    loaded = HNSWIndex.load(tmp_path / "ix")
    np.testing.assert_allclose(loaded._index.get_items(moved, return_type="numpy"), want,
                               atol=1e-6)
    with pytest.raises(KeyError, match="not in the index"):
        idx.refresh_vectors(new[:1], [123_456])


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"space": "dot"}, "space"),
        ({"M": 1}, "M"),
        ({"M": True}, "M"),
        ({"ef_construction": 0}, "ef_construction"),
        ({"ef": 0}, "ef"),
        ({"target_recall": 0.0}, "target_recall"),
        ({"target_recall": 1.5}, "target_recall"),
        ({"recall_sample": -1}, "recall_sample"),
        ({"recall_sample": 0}, "recall_sample"),
        ({"k_for_recall": 0}, "k_for_recall"),
        ({"seed": -3}, "seed"),
        ({"num_threads": 0}, "num_threads"),
        ({"search": "fast"}, "search"),
        ({"search": None}, "search"),
    ],
)
def test_config_validation_names_field_and_value(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError) as err:
        HNSWConfig(**kwargs)
    msg = str(err.value)
    assert f"HNSWConfig.{field}" in msg and repr(next(iter(kwargs.values()))) in msg


def test_config_valid_edge_cases() -> None:
    HNSWConfig(recall_sample=0, ef=32)  # explicit ef without measuring is allowed
    HNSWConfig(num_threads=-1, target_recall=1.0, space="l2")


def test_manifest_recall_is_the_recall_of_new_queries() -> None:
    """The build's recall@k predicts the recall of queries that are not in the index."""
    x = np.random.default_rng(9).standard_normal((3000, 32)).astype(np.float32)  # hard case
    idx = HNSWIndex.build(x, np.arange(3000), HNSWConfig(M=4, ef_construction=20, ef=10,
                                                         recall_sample=500, seed=1, search="hnsw"))
    fresh = np.random.default_rng(2).standard_normal((500, 32)).astype(np.float32)
    truth, _ = exact_topk(fresh, x, 10, "cosine")
    got, _ = idx.query(fresh, 10)
    brute = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got.tolist(), truth.tolist())])
    assert idx.manifest["recall_queries"] == "held_out" and idx.manifest["recall_query_count"] == 500
    assert abs(idx.recall_at_k - brute) < 0.05
    assert idx.recall_at_k < 0.95  # a weak graph at ef=10: not near 1
