"""Layer parts: a batch computed twice (a retried Ray Data task) leaves its rows once."""

from __future__ import annotations

import numpy as np
import pytest

from pinsage_ray.inference.pipeline import _check_once
from pinsage_ray.inference.vectors import VectorStore, write_part


def test_a_batch_written_twice_is_one_part(tmp_path):
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(6, 4)).astype(np.float32)
    first, second = np.array([4, 2, 3]), np.array([0, 1, 5])
    write_part(str(tmp_path), first, vecs[first])
    write_part(str(tmp_path), second, vecs[second])
    write_part(str(tmp_path), first, vecs[first])  # the retry of a task that had written
    store = VectorStore(str(tmp_path), 6)  # refuses an id written by two parts
    assert len(store.stems) == 2
    assert np.array_equal(store.gather(np.arange(6)), vecs)


def test_every_item_exactly_once():
    _check_once(np.array([2, 0, 1]), 3, "layer 0")
    with pytest.raises(RuntimeError, match="layer 0: 0 of 3 items missing and 1 computed more"):
        _check_once(np.array([2, 0, 1, 1]), 3, "layer 0")
    with pytest.raises(RuntimeError, match="1 of 3 items missing and 0"):
        _check_once(np.array([2, 0]), 3, "layer 0")
