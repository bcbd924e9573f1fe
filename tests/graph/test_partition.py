"""PartitionBook: edge-balanced ranges and exact id translation."""

import numpy as np
import pytest

from pinsage_ray.graph import PartitionBook


def test_balanced_ranges_cover_and_balance_edges():
    deg = np.array([100] + [1] * 99)  # one hub holds half the edges
    indptr = np.concatenate([[0], np.cumsum(deg)])
    book = PartitionBook.balanced(indptr, indptr, 2)
    assert book.item_bounds[0] == 0 and book.item_bounds[-1] == 100
    edges = [indptr[book.item_bounds[s + 1]] - indptr[book.item_bounds[s]] for s in range(2)]
    assert edges == [100, 99]  # node-count split would give 149 / 50


def test_round_trip_and_shard_of():
    indptr = np.arange(0, 41, 1)
    book = PartitionBook.balanced(indptr, indptr, 4)
    ids = np.arange(40)
    shard, local = book.to_local("item", ids)
    assert np.array_equal(book.to_global("item", shard, local), ids)
    assert shard.tolist() == sorted(shard.tolist()) and set(shard.tolist()) == {0, 1, 2, 3}
    for s in range(4):
        lo, hi = book.range("item", s)
        assert np.all(shard[lo:hi] == s) and local[lo] == 0


@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_bad_shard_count(n):
    with pytest.raises(ValueError, match="num_shards"):
        PartitionBook.balanced(np.arange(5), np.arange(5), n)


def test_bad_bounds():
    with pytest.raises(ValueError, match="item_bounds"):
        PartitionBook(np.array([1, 3]), np.array([0, 3]))
    with pytest.raises(ValueError, match="side"):
        PartitionBook(np.array([0, 3]), np.array([0, 3])).shard_of("user", np.array([1]))
