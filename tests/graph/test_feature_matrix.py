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
