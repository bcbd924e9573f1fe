"""Typed contract between the data readers / generator and :func:`pinsage_ray.prepare`.

Every reader in :mod:`pinsage_ray.data` returns a :class:`RawDataset`: plain pyarrow tables
with fixed column names, so ``prepare`` has one input shape whatever the source was.

Columns
-------
``interactions`` (required)
    ``item`` (int64 or string), ``group`` (int64 or string), optional ``weight`` (float64,
    > 0), optional ``timestamp`` (int64, any monotone unit). One row per item-group edge; a
    "group" is whatever items co-occur in (a board, a user, a session).
``item_features`` (optional)
    ``item`` (same type as interactions.item) and ``features``
    (``fixed_size_list<float32>``), one row per item.
``item_metadata`` (optional)
    ``item`` plus human-readable columns (e.g. ``title``) for printing recommendations.
``item_labels`` (optional)
    ``item`` and ``label`` (int64): a known ground truth, e.g. the planted community of the
    synthetic generator. Used by tests, plots and evaluation only, never by training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

INTERACTION_COLUMNS = ("item", "group", "weight", "timestamp")


@dataclass
class RawDataset:
    """Interactions plus optional per-item tables, as produced by a reader."""

    name: str
    interactions: pa.Table
    item_features: pa.Table | None = None
    item_metadata: pa.Table | None = None
    item_labels: pa.Table | None = None
    extra: dict = field(default_factory=dict)  # reader-specific notes (e.g. split info)

    def __post_init__(self) -> None:
        missing = [c for c in ("item", "group") if c not in self.interactions.column_names]
        if missing:
            raise ValueError(
                f"RawDataset {self.name!r}: interactions table lacks column(s) {missing}; "
                f"got {self.interactions.column_names}. Rename your columns to 'item' and 'group'."
            )
