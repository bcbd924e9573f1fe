"""The partition book: the one translator between global ids and (shard, local id).

Items and groups are each split into ``num_shards`` contiguous global-id ranges chosen so every
shard holds about the same number of edges (a power-law graph split by node count would leave
one shard with most of the work). Everything outside a shard speaks global ids; only a shard
subtracts its range start. Ranges make the book tiny (2 x (S + 1) integers) and the lookup a
vectorised ``searchsorted``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _balanced_bounds(indptr: np.ndarray, num_shards: int) -> np.ndarray:
    """Range starts (S + 1,) splitting CSR rows into ``num_shards`` edge-balanced ranges."""
    n = len(indptr) - 1
    targets = np.linspace(0, indptr[-1], num_shards + 1)[1:-1]
    cuts = np.searchsorted(indptr, targets, side="left")
    bounds = np.concatenate([[0], cuts, [n]]).astype(np.int64)
    return np.maximum.accumulate(np.clip(bounds, 0, n))


@dataclass(frozen=True)
class PartitionBook:
    """Global id <-> (shard, local id) for items and groups.

    Attributes:
        item_bounds: int64 (S + 1,); shard s owns items ``[item_bounds[s], item_bounds[s+1])``.
        group_bounds: int64 (S + 1,); the same for groups.
    """

    item_bounds: np.ndarray
    group_bounds: np.ndarray

    def __post_init__(self) -> None:
        for name in ("item_bounds", "group_bounds"):
            b = np.asarray(getattr(self, name))
            if b.ndim != 1 or len(b) < 2 or b[0] != 0 or np.any(np.diff(b) < 0):
                raise ValueError(f"PartitionBook.{name}={b!r}: expected non-decreasing "
                                 "starts beginning at 0 with one more entry than shards")
        if len(self.item_bounds) != len(self.group_bounds):
            raise ValueError("item_bounds and group_bounds must describe the same shard count")

    @classmethod
    def balanced(cls, item_indptr: np.ndarray, group_indptr: np.ndarray,
                 num_shards: int) -> PartitionBook:
        """Edge-balanced ranges from the two CSR ``indptr`` arrays."""
        if not isinstance(num_shards, (int, np.integer)) or num_shards < 1:
            raise ValueError(f"num_shards={num_shards!r}; expected an integer >= 1")
        return cls(_balanced_bounds(np.asarray(item_indptr), int(num_shards)),
                   _balanced_bounds(np.asarray(group_indptr), int(num_shards)))

    @property
    def num_shards(self) -> int:
        return len(self.item_bounds) - 1

    def _bounds(self, side: str) -> np.ndarray:
        if side == "item":
            return self.item_bounds
        if side == "group":
            return self.group_bounds
        raise ValueError(f"side={side!r}; expected 'item' or 'group'")

    def shard_of(self, side: str, ids: np.ndarray) -> np.ndarray:
        """Owning shard of each global id (int64, same shape as ``ids``)."""
        b = self._bounds(side)
        return np.searchsorted(b, ids, side="right").astype(np.int64) - 1

    def to_local(self, side: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(shard, local_id)`` of global ids."""
        shard = self.shard_of(side, ids)
        return shard, np.asarray(ids) - self._bounds(side)[shard]

    def to_global(self, side: str, shard: int | np.ndarray, local: np.ndarray) -> np.ndarray:
        return np.asarray(local) + self._bounds(side)[shard]

    def range(self, side: str, shard: int) -> tuple[int, int]:
        b = self._bounds(side)
        return int(b[shard]), int(b[shard + 1])
