"""Training schedules: the hard-negative curriculum and the learning-rate schedule.

Paper section 3.3 ("Curriculum training", Ying et al., KDD 2018): the first epoch uses no
hard negatives, so the model first finds the area of parameter space where the loss is
small; each later epoch adds one hard negative per query, i.e. epoch ``n`` uses ``n - 1``
hard negatives (capped here at ``max_hard``).

Section 3.2 ("Multi-GPU training with large mini-batches") trains large mini-batches with a
linear learning-rate warm-up (after Goyal et al. 2017); :func:`warmup_linear_decay` gives
that warm-up followed by a linear decay.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = ["hard_negatives_for_epoch", "curriculum_table", "warmup_linear_decay", "lr_factor"]


def _check_nonneg_int(name: str, value: int, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} = {value!r}; expected an int >= {minimum}.")


def hard_negatives_for_epoch(epoch: int, max_hard: int) -> int:
    """Number of hard negatives per query in ``epoch`` (1-based): ``min(epoch - 1, max_hard)``.

    Args:
        epoch: 1 for the first epoch.
        max_hard: cap on the number of hard negatives (0 disables them).

    Returns:
        0 in epoch 1, then one more per epoch up to ``max_hard``.
    """
    _check_nonneg_int("epoch", epoch, 1)
    _check_nonneg_int("max_hard", max_hard)
    return min(epoch - 1, max_hard)


def curriculum_table(num_epochs: int, max_hard: int) -> list[int]:
    """Hard negatives per query for epochs ``1..num_epochs``, e.g. ``[0, 1, 2, 2]``.

    Args:
        num_epochs: number of epochs (>= 0).
        max_hard: cap on the number of hard negatives.

    Returns:
        A list of length ``num_epochs``.
    """
    _check_nonneg_int("num_epochs", num_epochs)
    _check_nonneg_int("max_hard", max_hard)
    return [hard_negatives_for_epoch(e, max_hard) for e in range(1, num_epochs + 1)]


def lr_factor(step: int, warmup_steps: int, total_steps: int, min_factor: float = 0.0) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (0-based).

    * ``step < warmup_steps``: ``(step + 1) / (warmup_steps + 1)``, a linear ramp from
      ``1 / (warmup_steps + 1)`` towards 1;
    * ``warmup_steps <= step <= total_steps``: linear decay from 1 at ``warmup_steps`` to
      ``min_factor`` at ``total_steps``;
    * ``step > total_steps``: ``min_factor``.

    Args:
        step: the number of ``scheduler.step()`` calls made so far.
        warmup_steps: length of the warm-up (0 for none).
        total_steps: step at which the decay reaches ``min_factor``.
        min_factor: the final multiplier.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= total_steps:
        return min_factor
    # Here warmup_steps <= step < total_steps, so the decay phase has positive length.
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    return 1.0 - (1.0 - min_factor) * progress


def warmup_linear_decay(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    min_factor: float = 0.0,
) -> LambdaLR:
    """Linear warm-up to the base learning rate, then linear decay to ``min_factor`` of it.

    Call ``scheduler.step()`` once per optimizer step. The factor at each step is
    :func:`lr_factor`; the learning rate before the first ``scheduler.step()`` is
    ``base_lr / (warmup_steps + 1)`` (or ``base_lr`` without warm-up).

    Args:
        optimizer: the optimizer whose parameter groups' learning rates are scaled.
        warmup_steps: number of warm-up steps (0 for none), ``<= total_steps``.
        total_steps: total number of optimizer steps (>= 1).
        min_factor: final multiplier in ``[0, 1]``.

    Returns:
        A ``torch.optim.lr_scheduler.LambdaLR``.
    """
    _check_nonneg_int("warmup_steps", warmup_steps)
    _check_nonneg_int("total_steps", total_steps, 1)
    if warmup_steps > total_steps:
        raise ValueError(
            f"warmup_steps = {warmup_steps} exceeds total_steps = {total_steps}; shorten the "
            f"warm-up or train longer."
        )
    if not 0.0 <= float(min_factor) <= 1.0:
        raise ValueError(f"min_factor = {min_factor!r}; expected a float in [0, 1].")
    mf = float(min_factor)
    return LambdaLR(optimizer, lambda step: lr_factor(step, warmup_steps, total_steps, mf))
