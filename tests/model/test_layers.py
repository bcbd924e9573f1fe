"""Tests for pinsage_ray.model.layers: InputProjection and PinSageConv (paper Algorithm 1)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pinsage_ray.model import Block, InputProjection, PinSageConv

torch.set_num_threads(1)

DIN, HID, DOUT = 5, 4, 3


def _conv(pooling: str = "importance", seed: int = 0) -> PinSageConv:
    torch.manual_seed(seed)
    conv = PinSageConv(DIN, HID, DOUT, pooling=pooling)
    # Positive bias on the update so ReLU rarely zeroes a whole row.
    with torch.no_grad():
        conv.update.bias.fill_(0.5)
    return conv.eval()


def _random_inputs(b: int = 6, t: int = 4, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    h_self = torch.randn(b, DIN, generator=g)
    h_nb = torch.randn(b, t, DIN, generator=g)
    weights = torch.rand(b, t, generator=g) + 0.1
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[0] = True  # a full row
    mask[1] = False  # a node without neighbours
    weights = weights * mask
    return h_self, h_nb, weights, mask


def _reference(conv: PinSageConv, h_self, h_nb, weights, mask, use_weights=True):
    """Algorithm 1 written as explicit per-node loops, independent of the vectorised code."""
    Q, q = conv.neighbor_proj.weight, conv.neighbor_proj.bias
    W, w = conv.update.weight, conv.update.bias
    out = []
    for i in range(h_self.shape[0]):
        num = torch.zeros(Q.shape[0])
        den = 0.0
        for j in range(h_nb.shape[1]):
            if not mask[i, j]:
                continue
            a = float(weights[i, j]) if use_weights else 1.0
            num = num + a * torch.relu(Q @ h_nb[i, j] + q)
            den += a
        agg = num / den if den > 0 else torch.zeros(Q.shape[0])
        z = torch.relu(W @ torch.cat([h_self[i], agg]) + w)
        n = z.norm()
        out.append(z / n if n > 0 else z)
    return torch.stack(out)


def test_importance_pooling_hand_computed_weighted_mean():
    conv = PinSageConv(2, 2, 2, pooling="importance")
    with torch.no_grad():
        conv.neighbor_proj.weight.copy_(torch.eye(2))
        conv.neighbor_proj.bias.zero_()
    h_nb = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [5.0, 5.0]]])
    weights = torch.tensor([[3.0, 1.0, 100.0]])
    mask = torch.tensor([[True, True, False]])
    agg = conv.aggregate(h_nb, weights, mask)
    # (3 * [1, 0] + 1 * [0, 1]) / (3 + 1); the padded [5, 5] with weight 100 is ignored.
    assert torch.allclose(agg, torch.tensor([[0.75, 0.25]]), atol=1e-7)
    # Weights that are not normalised give the same result as normalised ones.
    agg2 = conv.aggregate(h_nb, weights / 4.0, mask)
    assert torch.allclose(agg, agg2, atol=1e-7)


@pytest.mark.parametrize("pooling", ["importance", "mean"])
def test_forward_matches_loop_reference(pooling):
    conv = _conv(pooling)
    h_self, h_nb, weights, mask = _random_inputs()
    out = conv(h_self, h_nb, weights, mask)
    ref = _reference(conv, h_self, h_nb, weights, mask, use_weights=(pooling == "importance"))
    assert out.shape == (6, DOUT)
    assert torch.allclose(out, ref, atol=1e-6)


def test_mean_pooling_ignores_weights_importance_does_not():
    h_self, h_nb, weights, mask = _random_inputs()
    other = torch.rand_like(weights) * 10 + 0.01
    mean_conv = _conv("mean")
    a = mean_conv(h_self, h_nb, weights, mask)
    b = mean_conv(h_self, h_nb, other, mask)
    assert torch.allclose(a, b, atol=1e-7)
    imp_conv = _conv("importance")
    c = imp_conv(h_self, h_nb, weights, mask)
    d = imp_conv(h_self, h_nb, other, mask)
    assert not torch.allclose(c, d, atol=1e-4)


@pytest.mark.parametrize("pooling", ["importance", "mean"])
def test_padding_and_column_order_never_change_the_result(pooling):
    conv = _conv(pooling)
    h_self, h_nb, weights, mask = _random_inputs()
    base = conv(h_self, h_nb, weights, mask)
    # Extra padded columns carrying garbage vectors (even NaN) and garbage weights.
    b, t = mask.shape
    g_nb = torch.randn(b, 3, DIN) * 100
    g_nb[0, 0] = float("nan")
    g_w = torch.rand(b, 3) * 100
    g_w[2, 1] = float("nan")
    padded = conv(
        h_self,
        torch.cat([h_nb, g_nb], 1),
        torch.cat([weights, g_w], 1),
        torch.cat([mask, torch.zeros(b, 3, dtype=torch.bool)], 1),
    )
    assert torch.allclose(base, padded, atol=1e-6)
    # Garbage written into the already-padded positions.
    h_nb2, w2 = h_nb.clone(), weights.clone()
    h_nb2[~mask] = 1e3
    w2[~mask] = 7.0
    assert torch.allclose(base, conv(h_self, h_nb2, w2, mask), atol=1e-6)
    # Permuting neighbour columns.
    perm = torch.randperm(t + 3)
    cat_nb = torch.cat([h_nb, g_nb], 1)[:, perm]
    cat_w = torch.cat([weights, g_w], 1)[:, perm]
    cat_m = torch.cat([mask, torch.zeros(b, 3, dtype=torch.bool)], 1)[:, perm]
    assert torch.allclose(base, conv(h_self, cat_nb, cat_w, cat_m), atol=1e-6)


def test_outputs_unit_norm_and_no_neighbour_node():
    conv = _conv()
    with torch.no_grad():
        conv.update.bias.fill_(5.0)  # no row is zeroed by the ReLU
    h_self, h_nb, weights, mask = _random_inputs()
    h_self.requires_grad_(True)
    out = conv(h_self, h_nb, weights, mask)
    norms = out.norm(dim=-1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-6)
    # Row 1 has no neighbours: its aggregate is exactly zero.
    expected = F.normalize(torch.relu(conv.update(torch.cat([h_self[1], torch.zeros(HID)]))), dim=-1)
    assert torch.allclose(out[1], expected, atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(h_self.grad).all()


def test_zero_preactivation_gives_zero_not_nan():
    conv = _conv()
    with torch.no_grad():
        conv.update.bias.fill_(-1e4)  # ReLU kills everything
    h_self, h_nb, weights, mask = _random_inputs()
    h_nb.requires_grad_(True)
    out = conv(h_self, h_nb, weights, mask)
    assert torch.equal(out, torch.zeros_like(out))
    out.sum().backward()
    assert torch.isfinite(h_nb.grad).all()


def test_forward_block_gathers_like_primitive():
    conv = _conv()
    g = torch.Generator().manual_seed(3)
    num_src, num_dst, t = 9, 4, 3
    h_src = torch.randn(num_src, DIN, generator=g)
    nbrs = torch.randint(0, num_src, (num_dst, t), generator=g)
    nbrs[1] = -1
    nbrs[2, 2] = -1
    w = torch.rand(num_dst, t, generator=g) * (nbrs >= 0)
    block = Block(neighbors=nbrs, weights=w, num_src=num_src)
    block.validate()
    out = conv.forward_block(h_src, block)
    ref = _reference(conv, h_src[:num_dst], h_src[nbrs.clamp(min=0)], w, nbrs >= 0)
    assert out.shape == (num_dst, DOUT)
    assert torch.allclose(out, ref, atol=1e-6)
    with pytest.raises(ValueError, match="num_src"):
        conv.forward_block(h_src[:5], block)


def test_zero_width_neighbourhood():
    conv = _conv()
    h_src = torch.randn(3, DIN)
    block = Block(torch.empty(3, 0, dtype=torch.long), torch.empty(3, 0), num_src=3)
    out = conv.forward_block(h_src, block)
    expected = F.normalize(torch.relu(conv.update(torch.cat([h_src, torch.zeros(3, HID)], 1))), dim=-1)
    assert torch.allclose(out, expected, atol=1e-6)


def test_conv_shape_errors():
    conv = _conv()
    h_self, h_nb, weights, mask = _random_inputs()
    with pytest.raises(ValueError, match="h_neighbors"):
        conv(h_self, h_nb[:, :, :2], weights, mask)
    with pytest.raises(ValueError, match="weights"):
        conv(h_self, h_nb, weights[:, :2], mask)
    with pytest.raises(ValueError, match="bool"):
        conv(h_self, h_nb, weights, mask.float())
    with pytest.raises(ValueError, match="pooling"):
        PinSageConv(2, 2, 2, pooling="max")


def test_input_projection_feature_mode_hand_computed():
    torch.manual_seed(0)
    proj = InputProjection(num_items=10, feature_dim=3, hidden_dim=4, use_id_embedding=False)
    assert proj.id_embedding is None
    feats = torch.randn(5, 3)
    logd = torch.log1p(torch.tensor([0.0, 1.0, 2.0, 5.0, 9.0]))
    out = proj(torch.arange(5), feats, logd)
    x = torch.cat([feats, logd[:, None]], 1)
    assert torch.allclose(out, torch.relu(x @ proj.linear.weight.T + proj.linear.bias), atol=1e-6)
    # Node ids do not matter without an id embedding.
    assert torch.equal(out, proj(torch.arange(5, 10), feats, logd))
    # Multi-hot (bool) features are cast to float.
    mh = torch.rand(5, 3) > 0.5
    assert torch.allclose(proj(torch.arange(5), mh, logd), proj(torch.arange(5), mh.float(), logd))
    with pytest.raises(ValueError, match="features is None"):
        proj(torch.arange(5), None, logd)
    with pytest.raises(ValueError, match=r"\(5, 3\)"):
        proj(torch.arange(5), torch.randn(5, 2), logd)


def test_input_projection_id_mode_and_both():
    torch.manual_seed(0)
    ids = torch.tensor([0, 3, 7])
    logd = torch.ones(3)
    proj = InputProjection(num_items=8, feature_dim=0, hidden_dim=4, use_id_embedding=True)
    out = proj(ids, None, logd)
    expected = torch.relu(proj.linear(logd[:, None]) + proj.id_embedding.weight[ids])
    assert torch.allclose(out, expected, atol=1e-6)
    # Same degree, different ids -> different vectors.
    assert not torch.allclose(out[0], out[1])
    both = InputProjection(num_items=8, feature_dim=2, hidden_dim=4, use_id_embedding=True)
    feats = torch.randn(3, 2)
    x = torch.cat([feats, logd[:, None]], 1)
    expected = torch.relu(both.linear(x) + both.id_embedding.weight[ids])
    assert torch.allclose(both(ids, feats, logd), expected, atol=1e-6)
    with pytest.raises(ValueError, match="use_id_embedding"):
        InputProjection(num_items=8, feature_dim=0, hidden_dim=4, use_id_embedding=False)
    with pytest.raises(ValueError, match="feature_dim=0"):
        proj(ids, torch.randn(3, 2), logd)


def test_id_vectors_start_at_zero_beside_features_and_drop_for_negative_ids():
    with_features = InputProjection(10, 4, 8, use_id_embedding=True)
    assert torch.count_nonzero(with_features.id_embedding.weight) == 0
    ids_only = InputProjection(10, 0, 8, use_id_embedding=True)
    assert torch.count_nonzero(ids_only.id_embedding.weight) > 0
    vec = ids_only.id_vectors(torch.tensor([3, -1, 3]))
    assert torch.equal(vec[0], ids_only.id_embedding.weight[3]) and torch.equal(vec[0], vec[2])
    assert torch.count_nonzero(vec[1]) == 0  # -1: no trained id vector
