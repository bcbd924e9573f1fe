"""PinSage training (paper sections 3.2-3.3): pairs, minibatches, producers, Ray Train loop."""

from pinsage_ray.training.batches import BatchBuilder, TrainBatch
from pinsage_ray.training.config import NeighborConfig, TrainConfig
from pinsage_ray.training.pairs import PairSplit, make_pairs, pairs_for
from pinsage_ray.training.producer import BatchProducer
from pinsage_ray.training.trainer import TrainResult, train

__all__ = ["BatchBuilder", "BatchProducer", "NeighborConfig", "PairSplit", "TrainBatch",
           "TrainConfig", "TrainResult", "make_pairs", "pairs_for", "train"]
