"""Tests for pinsage_ray.model.loss (section 3.3 max-margin loss, and the sampled softmax)."""

from __future__ import annotations

import math

import pytest
import torch

from pinsage_ray.model import margin_stats, max_margin_loss, sampled_softmax_loss, score

torch.set_num_threads(1)


def _batch():
    """Two queries on the unit circle with hand-checkable scores.

    s(q1, p1) = 0.6, s(q2, p2) = 1.0. Shared negatives n1 = [0.8, 0.6], n2 = [0, 1]:
      q1: n1 -> max(0, 0.8 - 0.6 + 0.1) = 0.3 ; n2 -> max(0, 0 - 0.6 + 0.1) = 0
      q2: n1 -> max(0, 0.6 - 1.0 + 0.1) = 0   ; n2 -> max(0, 1 - 1 + 0.1)   = 0.1
    Hard negatives:
      q1: [0.6, 0.8] -> max(0, 0.6 - 0.6 + 0.1) = 0.1 ; [1, 0] MASKED (would be 0.5)
      q2: [0.8, 0.6] -> 0 ; [0.6, 0.8] -> max(0, 0.8 - 1 + 0.1) = 0
    Loss = (0.3 + 0.1 + 0.1) / (4 shared + 3 unmasked hard) = 0.5 / 7.
    """
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    p = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    shared = torch.tensor([[0.8, 0.6], [0.0, 1.0]])
    hard = torch.tensor([[[0.6, 0.8], [1.0, 0.0]], [[0.8, 0.6], [0.6, 0.8]]])
    mask = torch.tensor([[True, False], [True, True]])
    return q, p, shared, hard, mask


def test_hand_computed_value_with_masked_hard_negative():
    q, p, shared, hard, mask = _batch()
    loss = max_margin_loss(q, p, shared, hard, mask, margin=0.1)
    assert loss.dim() == 0
    assert loss.item() == pytest.approx(0.5 / 7, abs=1e-6)
    # Without the mask the 0.5 term is included and the count is 8.
    unmasked = max_margin_loss(q, p, shared, hard, None, margin=0.1)
    assert unmasked.item() == pytest.approx(1.0 / 8, abs=1e-6)


def test_shared_only_and_margin():
    q, p, shared, _, _ = _batch()
    assert max_margin_loss(q, p, shared, margin=0.1).item() == pytest.approx(0.4 / 4, abs=1e-6)
    # margin 0.5: q1: 0.7, 0 ; q2: 0.1, 0.5 -> 1.3 / 4
    assert max_margin_loss(q, p, shared, margin=0.5).item() == pytest.approx(1.3 / 4, abs=1e-6)


def test_masked_hard_negative_cannot_leak():
    q, p, shared, hard, mask = _batch()
    q.requires_grad_(True)
    hard = hard.clone()
    hard[0, 1] = float("nan")  # garbage in the padded slot
    loss = max_margin_loss(q, p, shared, hard, mask)
    assert loss.item() == pytest.approx(0.5 / 7, abs=1e-6)
    loss.backward()
    assert torch.isfinite(q.grad).all()


def test_zero_loss_case_has_zero_gradient():
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    p = torch.tensor([[1.0, 0.0]])
    shared = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    hard = torch.tensor([[[0.8, 0.6]]])  # 0.8 - 1 + 0.1 < 0
    loss = max_margin_loss(q, p, shared, hard, torch.tensor([[True]]), margin=0.1)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(q.grad, torch.zeros_like(q))


def test_gradient_matches_hand_derivation():
    # One violated shared term: d/dq [ (n - p) . q + m ] / count = (n - p) / count.
    q = torch.tensor([[1.0, 0.0]], requires_grad=True)
    p = torch.tensor([[0.6, 0.8]])
    shared = torch.tensor([[0.8, 0.6], [0.0, -1.0]])
    loss = max_margin_loss(q, p, shared, margin=0.1)
    loss.backward()
    expected = (torch.tensor([0.8, 0.6]) - p[0]) / 2
    assert torch.allclose(q.grad[0], expected, atol=1e-6)


def test_margin_stats():
    q, p, shared, hard, mask = _batch()
    stats = margin_stats(q, p, shared, hard, mask, margin=0.1)
    assert stats["violated_fraction"] == pytest.approx(3 / 7)
    assert stats["violated_fraction_shared"] == pytest.approx(2 / 4)
    assert stats["violated_fraction_hard"] == pytest.approx(1 / 3)
    assert stats["mean_pos_score"] == pytest.approx(0.8)
    assert stats["mean_shared_neg_score"] == pytest.approx((0.8 + 0.0 + 0.6 + 1.0) / 4)
    assert stats["mean_hard_neg_score"] == pytest.approx((0.6 + 0.6 + 0.8) / 3)
    no_hard = margin_stats(q, p, shared)
    assert math.isnan(no_hard["violated_fraction_hard"])
    assert no_hard["violated_fraction"] == pytest.approx(2 / 4)


def test_score_and_errors():
    q, p, shared, hard, mask = _batch()
    assert torch.allclose(score(q, shared), torch.tensor([[0.8, 0.0], [0.6, 1.0]]))
    assert score(q[0], shared).shape == (2,)
    with pytest.raises(ValueError, match="positive"):
        max_margin_loss(q, p[:1], shared)
    with pytest.raises(ValueError, match="hard_negatives"):
        max_margin_loss(q, p, shared, hard[:1], None)
    with pytest.raises(ValueError, match="hard_mask"):
        max_margin_loss(q, p, shared, hard, mask.float())
    with pytest.raises(ValueError, match="hard_mask was given"):
        max_margin_loss(q, p, shared, None, mask)
    with pytest.raises(ValueError, match="no \\(query, negative\\) pairs"):
        max_margin_loss(q, p, shared[:0])
    with pytest.raises(ValueError, match="masked"):
        max_margin_loss(q, p, shared[:0], hard, torch.zeros_like(mask))
    # Hard negatives alone (no shared) are fine.
    only_hard = max_margin_loss(q, p, shared[:0], hard, mask)
    assert only_hard.item() == pytest.approx(0.1 / 3, abs=1e-6)


def test_sampled_softmax_by_hand():
    """Scores from ``_batch``; every logit is score / t, the positive is the target.

    q1: pos 0.6, shared [0.8, 0.0], hard [0.6, masked]; q2: pos 1.0, shared [0.6, 1.0],
    hard [0.6, 0.8]. Loss_b = log(sum exp(logits)) - pos / t, averaged over b.
    """
    q, p, shared, hard, mask = _batch()
    t = 0.5

    def ce(pos, negs):
        return math.log(sum(math.exp(x / t) for x in [pos, *negs])) - pos / t

    want = (ce(0.6, [0.8, 0.0, 0.6]) + ce(1.0, [0.6, 1.0, 0.6, 0.8])) / 2
    got = sampled_softmax_loss(q, p, shared, hard, mask, temperature=t)
    assert got.item() == pytest.approx(want, abs=1e-5)
    # shared_mask drops q2's second shared negative (its own positive) from the sum
    keep = torch.tensor([[True, True], [True, False]])
    want_masked = (ce(0.6, [0.8, 0.0, 0.6]) + ce(1.0, [0.6, 0.6, 0.8])) / 2
    got = sampled_softmax_loss(q, p, shared, hard, mask, temperature=t, shared_mask=keep)
    assert got.item() == pytest.approx(want_masked, abs=1e-5)
    # no hard negatives, and a positive far above every negative gives a loss near 0
    assert sampled_softmax_loss(q, p, shared, temperature=t).item() == pytest.approx(
        (ce(0.6, [0.8, 0.0]) + ce(1.0, [0.6, 1.0])) / 2, abs=1e-5)
    far = sampled_softmax_loss(q[1:], p[1:], -shared, temperature=0.01)
    assert far.item() < 1e-6


def test_sampled_softmax_gradient_and_errors():
    q, p, shared, hard, mask = _batch()
    q = q.clone().requires_grad_(True)
    sampled_softmax_loss(q, p, shared, hard, mask, temperature=0.1).backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        sampled_softmax_loss(q, p, shared, temperature=0.0)
    with pytest.raises(ValueError, match="shared_mask"):
        sampled_softmax_loss(q, p, shared, shared_mask=torch.ones(2, 3, dtype=torch.bool))


def test_contrastive_loss_by_hand():
    from pinsage_ray.model.loss import contrastive_loss

    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.8, 0.6]])
    s = torch.tensor([[0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]])  # cosines 0.6, 0.0, -1.0
    # (1 - 0.8) + w * mean(relu(0.6 - 0.4), 0, 0) = 0.2 + w * 0.2 / 3
    got = contrastive_loss(q, p, s, margin=0.4, negative_weight=3.0)
    assert torch.isclose(got, torch.tensor(0.4))
    # a masked negative neither costs nor counts
    keep = torch.tensor([[False, True, True]])
    assert torch.isclose(contrastive_loss(q, p, s, margin=0.4, shared_mask=keep),
                         torch.tensor(0.2))
    # hard negatives join the mean; masked ones do not
    hard = torch.tensor([[[1.0, 0.0], [0.6, 0.8]]])
    mask = torch.tensor([[True, False]])
    got = contrastive_loss(q, p, s, hard, mask, margin=0.4)  # (0.2 + 0.6) / 4 negatives
    assert torch.isclose(got, torch.tensor(0.2 + 0.8 / 4))
    with pytest.raises(ValueError, match="negative_weight"):
        contrastive_loss(q, p, s, negative_weight=-1.0)
