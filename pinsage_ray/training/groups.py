"""Group-context training examples: train on the query you serve (not in the paper).

PinSage trains item-to-item pairs (paper section 3.3), but a group recommendation (a user's,
board's or session's next item) is served from a *pooled set* of the group's items:
:meth:`pinsage_ray.Recommender.recommend_for_group` takes the normalised mean of their
embeddings. Training on the query that is served closes that gap: a group-context example
is a group ``g``, one of its items ``p`` held out as the positive, and up to
``group_query_size`` *other* items of ``g`` as the query set; the loss scores the normalised
mean of the query set's embeddings against ``p`` and the negatives (training/loop.py).
docs/quality.md measures what it is worth.

Examples are drawn i.i.d.: an interaction ``(g, p)`` uniformly among the training
interactions of groups with at least two training items (so items are positives in
proportion to their degree, like the data), then the query set uniformly without replacement
from ``g``'s other training items. ``val_fraction`` of the interactions (seeded) are held out
of every query set and positive; :meth:`GroupExamples.validation` turns them into
(query set = all of the group's training items, positive) evaluation examples, the served
task. Everything is a deterministic function of (seed, inputs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from pinsage_ray.graph.store import GraphStore

logger = logging.getLogger(__name__)


@dataclass
class GroupQueries:
    """A batch of group-context examples.

    Attributes:
        query_sets: int64 (B, L) item ids of each query set; -1 pads short sets.
        positives: int64 (B,) the held-out item of each example.
    """

    query_sets: np.ndarray
    positives: np.ndarray

    def __len__(self) -> int:
        return int(len(self.positives))


def _csr_from_rows(rows: np.ndarray, items: np.ndarray,
                   num_rows: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(rows, kind="stable")
    indptr = np.zeros(num_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=indptr[1:])
    return indptr, items[order]


class GroupExamples:
    """Samples group-context examples from a graph directory's group -> items CSR.

    Args:
        store: the training graph.
        val_fraction: share of interactions held out for evaluation (seeded).
        seed: split seed.
    """

    def __init__(self, store: GraphStore, val_fraction: float = 0.0, seed: int = 0) -> None:
        indptr = np.asarray(store.array("group_indptr"), dtype=np.int64)
        items = np.asarray(store.array("group_indices"), dtype=np.int64)
        num_groups = len(indptr) - 1
        rows = np.repeat(np.arange(num_groups), np.diff(indptr))
        # one entry per distinct (group, item): repeated engagements do not make a set bigger
        key = np.unique(rows * np.int64(store.num_items) + items)
        rows, items = key // store.num_items, key % store.num_items
        held = np.random.default_rng([seed, 29]).random(len(items)) < val_fraction
        self.num_items = store.num_items
        self.indptr, self.items = _csr_from_rows(rows[~held], items[~held], num_groups)
        self.val_groups, self.val_items = rows[held], items[held]
        sizes = np.diff(self.indptr)
        # positives: interactions of groups that keep >= 2 training items
        self.positions = np.flatnonzero(np.repeat(sizes >= 2, sizes))
        self.owner = np.repeat(np.arange(num_groups), sizes)
        if len(self.positions) == 0:
            raise ValueError(f"{store.uri}: no group has two or more items, so there is no "
                             "group-context example; use group_queries=0 (item pairs)")
        logger.info("group-context examples: %d training interactions in %d groups, %d held "
                    "out", len(self.positions), int((sizes >= 2).sum()), int(held.sum()))

    def __len__(self) -> int:
        return int(len(self.positions))

    def sample(self, rng: np.random.Generator, n: int, set_size: int) -> GroupQueries:
        """``n`` i.i.d. examples with query sets of at most ``set_size`` items."""
        pos = self.positions[rng.integers(0, len(self.positions), n)]
        group = self.owner[pos]
        start, stop = self.indptr[group], self.indptr[group + 1]
        lens = stop - start
        # Every training item of each example's group, with a random key; the positive's own
        # entry gets key 2 (after every real key), so the first min(len - 1, L) entries by
        # key are a uniform sample without replacement of the other items.
        seg = np.repeat(np.arange(n), lens)
        flat = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens) + start[seg]
        keys = rng.random(len(flat))
        keys[flat == pos[seg]] = 2.0
        order = np.lexsort((keys, seg))
        rank = np.arange(len(order)) - np.repeat(np.cumsum(lens) - lens, lens)
        take = rank < np.minimum(lens - 1, set_size)[seg]
        out = np.full((n, set_size), -1, dtype=np.int64)
        out[seg[take], rank[take]] = self.items[flat[order][take]]
        return GroupQueries(out, self.items[pos])

    def validation(self, max_examples: int, seed: int = 0) -> tuple[list[np.ndarray], np.ndarray]:
        """Held-out examples: (each group's training items, the held-out item), seeded sample.

        The query is the whole training set of the group, as a served group query is.
        """
        ok = np.diff(self.indptr)[self.val_groups] >= 1
        idx = np.flatnonzero(ok)
        if len(idx) > max_examples:
            idx = np.sort(np.random.default_rng([seed, 31]).choice(idx, max_examples,
                                                                   replace=False))
        sets = [self.items[self.indptr[g]:self.indptr[g + 1]] for g in self.val_groups[idx]]
        return sets, self.val_items[idx]
