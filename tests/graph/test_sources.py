"""``prepare`` errors name a row where its user finds it: CSV line, Parquet row from 1, plain values."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinsage_ray.graph import InputError, prepare
from pinsage_ray.graph.sources import plain


def _csv(path, rows: list[str]) -> str:
    path.write_text("\n".join(["item,group,weight", *rows]) + "\n")
    return str(path)


def test_csv_errors_give_the_file_line(tmp_path):
    src = _csv(tmp_path / "in.csv", ["1,1,1.0", "2,1,inf", "3,2,1.0"])
    with pytest.raises(InputError) as err:
        prepare(src, tmp_path / "g")
    # data row 1 (from 0) is line 3: the header is line 1
    assert str(err.value).startswith(f"{src}: line 3, column 'weight' = inf; ")
    assert "np.float64" not in str(err.value)
    assert not (tmp_path / "g").exists()


def test_csv_line_counts_blank_lines_as_an_editor_does(tmp_path):
    src = tmp_path / "blank.csv"
    src.write_text("item,group,weight\n1,1,1.0\n\n2,1,-1.0\n")
    with pytest.raises(InputError, match=r"blank\.csv: line 4, column 'weight' = -1\.0;"):
        prepare(str(src), tmp_path / "g")


def test_csv_null_id_gives_its_line(tmp_path):
    src = _csv(tmp_path / "null.csv", ["1,1,1.0", "2,1,1.0", ",2,1.0"])
    with pytest.raises(InputError, match=r"null\.csv: line 4, column 'item' is null"):
        prepare(src, tmp_path / "g")


def test_parquet_errors_count_rows_from_one(tmp_path):
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"item": [1, 2, 3], "group": [1, 1, 2],
                             "weight": [1.0, 2.0, float("nan")]}), src)
    with pytest.raises(InputError) as err:
        prepare(str(src), tmp_path / "g")
    assert f"{src}: row 3 (counted from 1), column 'weight' = nan;" in str(err.value)


def test_folder_names_the_file_and_its_row(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"item": [1, 2], "group": [1, 1]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"item": pa.array([3, None, 4], pa.int64()), "group": [2, 2, 2]}),
                   folder / "part-1.parquet")
    with pytest.raises(InputError, match=r"part-1\.parquet row 2 \(counted from 1\), "
                                         r"column 'item' is null"):
        prepare(str(folder), tmp_path / "g")


def test_feature_file_rows_are_named_too(tmp_path):
    inter = _csv(tmp_path / "in.csv", ["1,1,1.0", "2,1,1.0"])
    feats = tmp_path / "f.parquet"
    pq.write_table(pa.table({"item": [1, 2], "a": [0.5, float("inf")]}), feats)
    with pytest.raises(InputError, match=r"f\.parquet: row 2 \(counted from 1\) has a NaN or "
                                         "infinite"):
        prepare(inter, tmp_path / "g", item_features=str(feats))


def test_values_are_printed_plainly():
    assert plain(np.float64("inf")) == "inf" and plain(np.int64(3)) == "3"
    assert plain("a") == "'a'" and plain(np.str_("a")) == "'a'"
