"""Tests for pinsage_ray.data.readers: tiny hand-written files plus the real shared datasets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from pinsage_ray.data import MOVIELENS_GENRES, RawDataset, read_lightgcn, read_movielens_100k

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("PINSAGE_DATA_DIR", REPO.parent / "shared" / "data"))


def _shared(name: str, *files: str) -> Path:
    folder = DATA_DIR / name
    if not all((folder / f).is_file() for f in files):
        pytest.skip(f"shared dataset {folder} not available (set PINSAGE_DATA_DIR)")
    return folder


def _genres(*on: int) -> str:
    return "|".join("1" if i in on else "0" for i in range(len(MOVIELENS_GENRES)))


def _write_ml(folder: Path, data: str, items: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text(data)
    (folder / "u.item").write_bytes(items.encode("latin-1"))
    return folder


TINY_ITEMS = (
    f"1|Toy Story (1995)|01-Jan-1995||http://x|{_genres(3, 4, 5)}\n"
    f"2|The Story of Us (1999)|01-Jan-1999||http://x|{_genres(5, 14)}\n"
    f"3|unknown||||{_genres(0)}\n"
    f"4|Café Toy (1997)|||http://x|{_genres(8)}\n"
)
TINY_DATA = "2\t1\t5\t300\n1\t2\t3\t100\n2\t4\t1\t100\n"


def test_movielens_tiny_values(tmp_path):
    ds = read_movielens_100k(_write_ml(tmp_path, TINY_DATA, TINY_ITEMS))
    assert isinstance(ds, RawDataset) and ds.name == "movielens-100k"
    inter = ds.interactions
    assert inter.schema.names == ["item", "group", "weight", "timestamp"]
    types = [inter.schema.field(c).type for c in inter.schema.names]
    assert types == [pa.int64(), pa.int64(), pa.float64(), pa.int64()]
    # File order kept (not sorted by timestamp or user).
    assert inter["item"].to_pylist() == [1, 2, 4]
    assert inter["group"].to_pylist() == [2, 1, 2]
    assert inter["timestamp"].to_pylist() == [300, 100, 100]
    assert inter["weight"].to_pylist() == [1.0, 1.0, 1.0]

    names = ds.extra["feature_names"]
    assert pa.types.is_fixed_size_list(ds.item_features.schema.field("features").type)
    assert ds.item_features.schema.field("features").type.value_type == pa.float32()
    feats = np.stack(ds.item_features["features"].to_numpy(zero_copy_only=False))
    assert feats.shape == (4, len(names)) and ds.item_features["item"].to_pylist() == [1, 2, 3, 4]
    # Tokens in >= 2 titles: 'story' (1, 2) and 'toy' (1, 4); 'the', 'of', 'us', 'café' appear once.
    assert names[19:] == ["year", "year_missing", "title:story", "title:toy"]
    np.testing.assert_array_equal(feats[:, [3, 4, 5]].sum(1), [3, 1, 0, 0])
    np.testing.assert_allclose(feats[:, 19], [0.0, 1.0, 0.0, 0.5])  # 1995..1999; 1997 from title
    np.testing.assert_array_equal(feats[:, 20], [0, 0, 1, 0])
    np.testing.assert_array_equal(feats[:, 21:], [[1, 1], [1, 0], [0, 0], [0, 1]])

    meta = ds.item_metadata.to_pylist()
    toy = {"item": 1, "title": "Toy Story (1995)", "year": 1995, "genres": "Animation|Children's|Comedy"}
    assert meta[0] == toy
    assert meta[2]["year"] is None and meta[2]["genres"] == "unknown"
    assert meta[3]["title"] == "Café Toy (1997)" and meta[3]["year"] == 1997


def test_movielens_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_movielens_100k(tmp_path / "nope")
    (tmp_path / "u.data").write_text(TINY_DATA)
    with pytest.raises(FileNotFoundError, match=r"u\.item"):
        read_movielens_100k(tmp_path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("1\t1\t5\t10\n1\t2\t5\n", r"u\.data.* line 2: expected 4 .*got 3"),
        ("1\t1\t5\t10\n\n1\tx\t5\t11\n", r"line 3: token 'x' is not a non-negative integer.*'1\\tx\\t5\\t11'"),
        ("1\t-2\t5\t10\n", r"line 1: token '-2'"),
        ("1\t9\t5\t10\n", r"line 1: movie id 9 is not in"),
    ],
)
def test_movielens_malformed_data(tmp_path, data, message):
    with pytest.raises(ValueError, match=message):
        read_movielens_100k(_write_ml(tmp_path, data, TINY_ITEMS))


def test_movielens_malformed_item(tmp_path):
    items = TINY_ITEMS + "5|Broken (1990)|01-Jan-1990||http://x|0|1\n"
    with pytest.raises(ValueError, match=r"u\.item' line 5: expected 24 .*got 7"):
        read_movielens_100k(_write_ml(tmp_path, TINY_DATA, items))


def test_lightgcn_tiny(tmp_path):
    (tmp_path / "train.txt").write_text("0 3 1\n1\n2 0 2 4\n")
    (tmp_path / "test.txt").write_text("0 2\n2 5\n1\n")
    train, test = read_lightgcn(tmp_path)
    assert train.interactions["group"].to_pylist() == [0, 0, 2, 2, 2]
    assert train.interactions["item"].to_pylist() == [3, 1, 0, 2, 4]
    assert train.interactions["weight"].to_pylist() == [1.0] * 5
    assert "timestamp" not in train.interactions.column_names and train.item_features is None
    assert test.schema == pa.schema([("group", pa.int64()), ("item", pa.int64())])
    assert test.to_pylist() == [{"group": 0, "item": 2}, {"group": 2, "item": 5}]
    assert train.extra["num_users"] == 3 and train.extra["num_items"] == 6


def test_lightgcn_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_lightgcn(tmp_path / "missing")
    (tmp_path / "train.txt").write_text("0 1 2\n")
    with pytest.raises(FileNotFoundError, match=r"test\.txt"):
        read_lightgcn(tmp_path)
    (tmp_path / "test.txt").write_text("0 3\n1 4 5.5\n")
    with pytest.raises(ValueError, match=r"test\.txt' line 2: token '5\.5'.*'1 4 5\.5'"):
        read_lightgcn(tmp_path)


def test_movielens_100k_real():
    folder = _shared("ml-100k", "u.data", "u.item")
    ds = read_movielens_100k(folder)
    inter = ds.interactions
    assert inter.num_rows == 100_000
    assert len(np.unique(inter["group"].to_numpy())) == 943
    assert len(np.unique(inter["item"].to_numpy())) == 1682
    first = (folder / "u.data").read_text().split("\n", 1)[0].split("\t")
    row = inter.slice(0, 1).to_pylist()[0]
    assert [row["group"], row["item"], row["timestamp"]] == [int(first[0]), int(first[1]), int(first[3])]
    last = (folder / "u.data").read_text().rstrip("\n").rsplit("\n", 1)[1].split("\t")
    assert inter["item"][-1].as_py() == int(last[1]) and inter["group"][-1].as_py() == int(last[0])

    assert ds.item_features.num_rows == 1682
    assert sorted(ds.item_features["item"].to_pylist()) == list(range(1, 1683))
    feats = np.stack(ds.item_features["features"].to_numpy(zero_copy_only=False))
    assert feats.dtype == np.float32 and feats.shape[1] == len(ds.extra["feature_names"])
    assert (feats[:, :19].sum(1) >= 1).mean() > 0.99
    assert 0.0 <= feats[:, 19].min() and feats[:, 19].max() == 1.0
    assert feats[:, 20].sum() == 1  # only movie 267 'unknown' lacks a year
    assert feats.shape[1] > 21 + 100 and (feats[:, 21:].sum(1) > 0).mean() > 0.5
    toy = ds.item_metadata.filter(pc.equal(ds.item_metadata["item"], 1)).to_pylist()[0]
    assert toy["title"] == "Toy Story (1995)" and toy["year"] == 1995


def test_gowalla_real():
    folder = _shared("gowalla", "train.txt", "test.txt")
    train, test = read_lightgcn(folder)
    assert train.interactions.num_rows == 810_128
    assert len(np.unique(train.interactions["group"].to_numpy())) == 29_858
    assert test.num_rows == 217_242
    assert train.extra["num_users"] == 29_858 and train.extra["num_items"] == 40_981
    first = (folder / "train.txt").read_text().split("\n", 1)[0].split()
    assert train.interactions["item"].to_numpy()[: len(first) - 1].tolist() == [int(x) for x in first[1:]]
