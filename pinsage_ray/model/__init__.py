"""Plain-PyTorch PinSage model (Ying et al., KDD 2018): no Ray dependency.

* :mod:`~pinsage_ray.model.batch`: the sampled K-hop computation graph (:class:`Block`,
  :class:`EncoderInput`) and every item at once (:class:`WholeGraph`).
* :mod:`~pinsage_ray.model.layers`: input projection, the CONVOLVE layer (section 3.1) and
  linear propagation (:class:`PropagationLayer`, LightGCN's layer).
* :mod:`~pinsage_ray.model.encoder`: :class:`ModelConfig` and :class:`PinSageEncoder`
  (sections 3.1-3.2).
* :mod:`~pinsage_ray.model.loss`: the max-margin loss (section 3.3) and a sampled softmax.
* :mod:`~pinsage_ray.model.schedule`: hard-negative curriculum and LR schedule (3.2-3.3).
"""

from pinsage_ray.model.batch import Block, EncoderInput, WholeGraph
from pinsage_ray.model.encoder import CONV_MODES, ModelConfig, PinSageEncoder
from pinsage_ray.model.layers import POOLING_MODES, InputProjection, PinSageConv, PropagationLayer
from pinsage_ray.model.loss import margin_stats, max_margin_loss, sampled_softmax_loss, score
from pinsage_ray.model.schedule import (
    curriculum_table,
    hard_negatives_for_epoch,
    lr_factor,
    warmup_linear_decay,
)

__all__ = [
    "Block",
    "EncoderInput",
    "WholeGraph",
    "CONV_MODES",
    "PropagationLayer",
    "ModelConfig",
    "PinSageEncoder",
    "InputProjection",
    "PinSageConv",
    "POOLING_MODES",
    "max_margin_loss",
    "margin_stats",
    "sampled_softmax_loss",
    "score",
    "hard_negatives_for_epoch",
    "curriculum_table",
    "warmup_linear_decay",
    "lr_factor",
]
