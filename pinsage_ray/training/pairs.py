"""Positive training pairs (paper section 3.3) and their train/validation split.

A positive pair (q, i) says item i is a good recommendation for query item q:

* ``sequence`` (the paper's definition, needs timestamps): i was engaged right after q by the
  same group/user: consecutive items of each group's time-ordered row in the graph directory.
* ``walks``: i is the end of a short walk from q (1 step = the two share a group), for data
  without timestamps; ``pairs_per_item`` walks per item.

Pairs are de-duplicated, shuffled by seed and split; the validation pairs never enter training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pinsage_ray.graph.store import GraphStore
from pinsage_ray.sampling.api import WalkService

logger = logging.getLogger(__name__)


@dataclass
class PairSplit:
    """Positive pairs split into training and validation.

    Attributes:
        train_q, train_p: int64 (P,) query and positive item ids.
        val_q, val_p: int64 (V,) held-out pairs.
        source: 'sequence' or 'walks'.
    """

    train_q: np.ndarray
    train_p: np.ndarray
    val_q: np.ndarray
    val_p: np.ndarray
    source: str

    def summary(self) -> dict:
        return {"source": self.source, "train_pairs": int(len(self.train_q)),
                "val_pairs": int(len(self.val_q))}


def sequence_pairs(store: GraphStore) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive items of every group's time-ordered row: (q, next item)."""
    if not store.has_timestamps:
        raise ValueError(f"{store.uri}: positives='sequence' needs timestamps; the input had no "
                         "'timestamp' column. Use positives='walks' (or 'auto').")
    indptr = np.asarray(store.array("group_indptr"))
    items = np.asarray(store.array("group_indices"))
    nxt = np.ones(len(items), dtype=bool)
    nxt[indptr[1:] - 1] = False  # the last item of a row has no successor
    j = np.flatnonzero(nxt[:-1] if len(items) else nxt)
    q, p = items[j], items[j + 1]
    keep = q != p
    return q[keep], p[keep]


def walk_pairs(walker: WalkService, num_items: int, pairs_per_item: int, walk_length: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ends of short walks from every item (``pairs_per_item`` per item)."""
    return walker.cooccurrence_pairs(np.arange(num_items), num_walks=pairs_per_item,
                                     walk_length=walk_length, seed=seed)


def make_pairs(store: GraphStore, walker: WalkService, *, positives: str = "auto",
               pairs_per_item: int = 4, walk_length: int = 1, val_fraction: float = 0.05,
               seed: int = 0) -> PairSplit:
    """Build, de-duplicate, shuffle and split the positive pairs."""
    source = positives
    if source == "auto":
        source = "sequence" if store.has_timestamps else "walks"
    if source == "sequence":
        q, p = sequence_pairs(store)
    elif source == "walks":
        q, p = walk_pairs(walker, store.num_items, pairs_per_item, walk_length, seed)
    else:
        raise ValueError(f"positives={positives!r}; use 'auto', 'sequence' or 'walks'")
    key = np.unique(q * np.int64(store.num_items) + p)
    if len(key) < 2:
        raise ValueError(f"{store.uri}: only {len(key)} distinct positive pair(s); the graph is "
                         "too small to train on")
    key = np.random.default_rng([seed, 17]).permutation(key)
    q, p = key // store.num_items, key % store.num_items
    n_val = int(round(len(key) * val_fraction))
    split = PairSplit(q[n_val:], p[n_val:], q[:n_val], p[:n_val], source)
    logger.info("positive pairs: %s", split.summary())
    return split
