"""PinSage training (paper sections 3.2-3.3): pairs, minibatches, producers, Ray Train loop.

Only :mod:`.config` (plain dataclasses) is imported with the package; the rest loads torch and
is imported on first use of its names (PEP 562), so ``pinsage-ray --help`` and a Ray worker
that needs only :class:`TrainConfig` do not pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinsage_ray._lazy import lazy_exports
from pinsage_ray.training.config import NeighborConfig, TrainConfig

#: public name -> the module that defines it (loaded on first use)
_LAZY = {
    "BatchBuilder": "pinsage_ray.training.batches", "TrainBatch": "pinsage_ray.training.batches",
    "PairSplit": "pinsage_ray.training.pairs", "make_pairs": "pinsage_ray.training.pairs",
    "pairs_for": "pinsage_ray.training.pairs",
    "BatchProducer": "pinsage_ray.training.producer",
    "TrainResult": "pinsage_ray.training.trainer", "train": "pinsage_ray.training.trainer",
}

__all__ = sorted([*_LAZY, "NeighborConfig", "TrainConfig"])

if TYPE_CHECKING:  # what type checkers and IDEs see
    from pinsage_ray.training.batches import BatchBuilder, TrainBatch
    from pinsage_ray.training.pairs import PairSplit, make_pairs, pairs_for
    from pinsage_ray.training.producer import BatchProducer
    from pinsage_ray.training.trainer import TrainResult, train


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
