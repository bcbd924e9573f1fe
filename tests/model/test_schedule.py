"""Tests for pinsage_ray.model.schedule: hard-negative curriculum and LR schedule."""

from __future__ import annotations

import pytest
import torch

from pinsage_ray.model import (
    curriculum_table,
    hard_negatives_for_epoch,
    lr_factor,
    warmup_linear_decay,
)

torch.set_num_threads(1)


def test_hard_negatives_per_epoch():
    assert hard_negatives_for_epoch(1, 6) == 0
    assert hard_negatives_for_epoch(2, 6) == 1
    assert hard_negatives_for_epoch(7, 6) == 6
    assert hard_negatives_for_epoch(50, 6) == 6
    assert hard_negatives_for_epoch(5, 0) == 0
    with pytest.raises(ValueError, match="epoch = 0"):
        hard_negatives_for_epoch(0, 3)
    with pytest.raises(ValueError, match="max_hard = -1"):
        hard_negatives_for_epoch(1, -1)


def test_curriculum_table():
    assert curriculum_table(10, 6) == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6]
    assert curriculum_table(3, 10) == [0, 1, 2]
    assert curriculum_table(4, 0) == [0, 0, 0, 0]
    assert curriculum_table(0, 2) == []


def _lrs(warmup: int, total: int, min_factor: float, steps: int, base: float = 2.0) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=base)
    sched = warmup_linear_decay(opt, warmup, total, min_factor)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_linear_decay_values():
    base = 2.0
    lrs = _lrs(warmup=10, total=110, min_factor=0.1, steps=130, base=base)
    assert lrs[0] == pytest.approx(base / 11)  # ~0 at step 0
    assert lrs[5] == pytest.approx(base * 6 / 11)
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11]))  # strictly increasing warm-up
    assert lrs[10] == pytest.approx(base)  # warm-up end: full learning rate
    assert lrs[60] == pytest.approx(base * (1 - 0.9 * 0.5))  # half-way through the decay
    assert lrs[110] == pytest.approx(base * 0.1)  # end: min_factor
    assert lrs[129] == pytest.approx(base * 0.1)  # stays there
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_no_warmup_and_errors():
    lrs = _lrs(warmup=0, total=4, min_factor=0.0, steps=6, base=1.0)
    assert lrs == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0, 0.0])
    assert lr_factor(3, warmup_steps=4, total_steps=4) == pytest.approx(4 / 5)
    assert lr_factor(4, warmup_steps=4, total_steps=4, min_factor=0.2) == pytest.approx(0.2)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="warmup_steps = 5 exceeds total_steps = 4"):
        warmup_linear_decay(opt, 5, 4)
    with pytest.raises(ValueError, match="total_steps = 0"):
        warmup_linear_decay(opt, 0, 0)
    with pytest.raises(ValueError, match="min_factor"):
        warmup_linear_decay(opt, 1, 4, min_factor=1.5)
