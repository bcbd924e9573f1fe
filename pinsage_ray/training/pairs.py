"""Positive training pairs (paper section 3.3) and their train/validation split.

A positive pair (q, i) says item i is a good recommendation for query item q:

* ``sequence`` (the paper's definition, needs timestamps): i was engaged right after q by the
  same group/user: items at most ``window`` positions apart in each group's time-ordered row
  of the graph directory (``window=1``: the paper's "immediately after"). With
  ``symmetric=True`` each pair is also used in the other direction.
* ``walks``: i is the end of a short walk from q (1 step = the two share a group), for data
  without timestamps; ``pairs_per_item`` walks per item.

How often a pair occurs is signal: a pair engaged in sequence by 40 users is a better
recommendation than one seen once. ``weighting='count'`` keeps every occurrence, so a
minibatch samples pairs in proportion to their count; ``'distinct'`` keeps each pair once.
The split into training and validation is by *distinct* pair (seeded), so no occurrence of a
validation pair ever enters training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pinsage_ray.graph.store import GraphStore
from pinsage_ray.sampling.api import WalkService
from pinsage_ray.training.config import PAIR_WEIGHTING, TrainConfig

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


def sequence_pairs(store: GraphStore, window: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Items of every group's time-ordered row and the items up to ``window`` places after.

    Returns:
        ``(q, p)``: one entry per occurrence (a pair seen in several groups repeats).
    """
    if not store.has_timestamps:
        raise ValueError(f"{store.uri}: positives='sequence' needs timestamps; the input had no "
                         "'timestamp' column. Use positives='walks' (or 'auto').")
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(f"window={window!r}; expected an integer >= 1 (1 = next item only)")
    indptr = np.asarray(store.array("group_indptr"))
    items = np.asarray(store.array("group_indices"))
    lengths = np.diff(indptr)
    row = np.repeat(np.arange(len(lengths)), lengths)
    left = lengths[row] - (np.arange(len(items)) - indptr[row]) - 1  # items after this one
    qs, ps = [], []
    for k in range(1, window + 1):
        j = np.flatnonzero(left >= k)
        qs.append(items[j])
        ps.append(items[j + k])
    q, p = np.concatenate(qs), np.concatenate(ps)
    keep = q != p
    return q[keep], p[keep]


def walk_pairs(walker: WalkService, num_items: int, pairs_per_item: int, walk_length: int,
               seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ends of short walks from every item (``pairs_per_item`` per item)."""
    return walker.cooccurrence_pairs(np.arange(num_items), num_walks=pairs_per_item,
                                     walk_length=walk_length, seed=seed)


def make_pairs(store: GraphStore, walker: WalkService, *, positives: str = "auto",
               pairs_per_item: int = 4, walk_length: int = 1, window: int = 1,
               symmetric: bool = False, weighting: str = "count", val_fraction: float = 0.05,
               seed: int = 0) -> PairSplit:
    """Build, weight, shuffle and split the positive pairs (see the module docstring)."""
    if weighting not in PAIR_WEIGHTING:
        raise ValueError(f"weighting={weighting!r}; use one of {PAIR_WEIGHTING}")
    source = positives
    if source == "auto":
        source = "sequence" if store.has_timestamps else "walks"
    if source == "sequence":
        q, p = sequence_pairs(store, window)
    elif source == "walks":
        q, p = walk_pairs(walker, store.num_items, pairs_per_item, walk_length, seed)
    else:
        raise ValueError(f"positives={positives!r}; use 'auto', 'sequence' or 'walks'")
    if symmetric:
        q, p = np.concatenate([q, p]), np.concatenate([p, q])
    n = np.int64(store.num_items)
    key, count = np.unique(q * n + p, return_counts=True)
    if len(key) < 2:
        raise ValueError(f"{store.uri}: only {len(key)} distinct positive pair(s); the graph is "
                         "too small to train on")
    rng = np.random.default_rng([seed, 17])
    order = rng.permutation(len(key))
    key, count = key[order], count[order]
    n_val = int(round(len(key) * val_fraction))
    val, train = key[:n_val], key[n_val:]
    if weighting == "count":  # every occurrence of a training pair; shuffled again
        train = rng.permutation(np.repeat(train, count[n_val:]))
    split = PairSplit(train // n, train % n, val // n, val % n, source)
    logger.info("positive pairs: %s", split.summary())
    return split


def pairs_for(store: GraphStore, walker: WalkService, config: TrainConfig) -> PairSplit:
    """:func:`make_pairs` with every setting taken from a :class:`TrainConfig`."""
    return make_pairs(store, walker, positives=config.positives,
                      pairs_per_item=config.pairs_per_item,
                      walk_length=config.positive_walk_length, window=config.sequence_window,
                      symmetric=config.symmetric_pairs, weighting=config.pair_weighting,
                      val_fraction=config.val_fraction, seed=config.seed)
