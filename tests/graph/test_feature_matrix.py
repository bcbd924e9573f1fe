"""``inputs.feature_matrix``: rows placed at their items' ids from numeric or list columns
(filled one column at a time), the first bad row named, and ``check_only``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pinsage_ray.graph.inputs import InputError, feature_matrix


def _tables():
    rng = np.random.default_rng(0)
    items = np.array([30, 10, 20, 40])
    vals = rng.normal(size=(4, 3))
    numeric = pa.table({"item": items, "a": vals[:, 0], "b": vals[:, 1].astype(np.float32),
                        "c": (vals[:, 2] > 0)})  # float64, float32 and bool columns
    want = np.column_stack([vals[:, 0], vals[:, 1], vals[:, 2] > 0]).astype(np.float32)
    listed = pa.table({"item": items, "f": pa.array(list(want), type=pa.list_(pa.float32()))})
    return numeric, listed, want


@pytest.mark.parametrize("kind", ["numeric", "list"])
def test_rows_land_at_their_item_ids(kind):
    numeric, listed, want = _tables()
    table = numeric if kind == "numeric" else listed
    ids = pa.array([10, 20, 30, 40])
    got = feature_matrix(table, ids, "f.parquet")
    assert got.dtype == np.float32 and got.shape == (4, 3)
    np.testing.assert_array_equal(got, want[[1, 2, 0, 3]])
    assert feature_matrix(table, ids, "f.parquet", check_only=True) is None


@pytest.mark.parametrize("kind", ["numeric", "list"])
def test_first_non_finite_row_is_named_before_other_errors(kind):
    numeric, listed, _ = _tables()
    if kind == "numeric":
        bad = numeric.set_column(2, "b", pa.array([0.0, 0.0, np.inf, 0.0], pa.float32()))
        bad = bad.set_column(1, "a", pa.array([0.0, 0.0, 0.0, np.nan]))
    else:
        rows = [[0.0] * 3, [0.0] * 3, [0.0, np.inf, 0.0], [np.nan] * 3]
        bad = listed.set_column(1, "f", pa.array(rows, type=pa.list_(pa.float32())))
    # ids that also miss an item: the NaN/inf check comes first, as before
    for check_only in (False, True):
        with pytest.raises(InputError, match="row 2 has a NaN or infinite"):
            feature_matrix(bad, pa.array([10, 20, 30]), "f.parquet", check_only=check_only)
    with pytest.raises(InputError, match="duplicate features for item 30"):
        feature_matrix(numeric.take([0, 1, 2, 3, 0]), pa.array([10, 20, 30, 40]), "f.parquet",
                       check_only=True)


def test_a_list_column_in_several_chunks_and_a_slice():
    """Chunks are read one by one (rows keep their place across chunk edges; a sliced table's
    offsets are honoured); a null or a short row in a later chunk is named by its row."""
    a = pa.table({"item": [4, 2], "f": pa.array([[1.0, 2.0], [3.0, 4.0]])})
    b = pa.table({"item": [3, 1], "f": pa.array([[5.0, 6.0], [7.0, 8.0]])})
    table = pa.concat_tables([a, b])
    assert table.column("f").num_chunks == 2
    got = feature_matrix(table, pa.array([1, 2, 3, 4]), "f.parquet")
    np.testing.assert_array_equal(got, [[7, 8], [3, 4], [5, 6], [1, 2]])
    got = feature_matrix(table.slice(1, 3), pa.array([2, 3, 1]), "f.parquet")
    np.testing.assert_array_equal(got, [[3, 4], [5, 6], [7, 8]])
    nulls = pa.concat_tables([a, pa.table({"item": [3, 1], "f": pa.array([[5.0, 6.0], None])})])
    with pytest.raises(InputError, match="row 3, column 'f' is null"):
        feature_matrix(nulls, pa.array([1, 2, 3, 4]), "f.parquet")
    short = pa.concat_tables([a, pa.table({"item": [3, 1],
                                           "f": pa.array([[5.0, 6.0], [7.0]])})])
    with pytest.raises(InputError, match="row 3, column 'f' has 1 values"):
        feature_matrix(short, pa.array([1, 2, 3, 4]), "f.parquet")
