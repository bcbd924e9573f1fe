"""Tests for pinsage_ray.model.encoder and the Block / EncoderInput contract."""

from __future__ import annotations

import pytest
import torch

from pinsage_ray.model import Block, EncoderInput, ModelConfig, PinSageEncoder

torch.set_num_threads(1)

NUM_ITEMS, FEAT = 40, 6


def _graph(seed: int = 0, t: int = 4):
    """A global neighbour table: (NUM_ITEMS, t) ids with -1 padding, weights, features."""
    g = torch.Generator().manual_seed(seed)
    nbr = torch.randint(0, NUM_ITEMS, (NUM_ITEMS, t), generator=g)
    drop = torch.rand(NUM_ITEMS, t, generator=g) < 0.3
    nbr[drop] = -1
    nbr[5] = -1  # an isolated item
    w = (torch.rand(NUM_ITEMS, t, generator=g) + 0.05) * (nbr >= 0)
    w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    feats = torch.randn(NUM_ITEMS, FEAT, generator=g)
    logd = torch.log1p((nbr >= 0).sum(1).float())
    return nbr, w, feats, logd


def _sample(targets: list[int], num_layers: int, nbr, w, feats, logd, extra_pad: int = 0):
    """Build the DGL-style K-hop blocks for ``targets`` from the global neighbour table.

    Layer K holds the targets; layer k holds layer k+1 followed by its new neighbours.
    ``extra_pad`` appends that many -1 columns with garbage weights to every block.
    """
    layers = [list(targets)]
    for _ in range(num_layers):
        nodes = list(layers[0])
        seen = set(nodes)
        for u in layers[0]:
            for v in nbr[u].tolist():
                if v >= 0 and v not in seen:
                    seen.add(v)
                    nodes.append(v)
        layers.insert(0, nodes)
    blocks = []
    for k in range(num_layers):
        src, dst = layers[k], layers[k + 1]
        pos = {v: i for i, v in enumerate(src)}
        ids = torch.tensor(dst)
        local = torch.tensor([[pos[v] if v >= 0 else -1 for v in nbr[u].tolist()] for u in dst])
        bw = w[ids].clone()
        if extra_pad:
            local = torch.cat([local, torch.full((len(dst), extra_pad), -1)], 1)
            bw = torch.cat([bw, torch.rand(len(dst), extra_pad) * 50], 1)
        blocks.append(Block(neighbors=local.long(), weights=bw, num_src=len(src)))
    ids0 = torch.tensor(layers[0])
    return EncoderInput(ids0, feats[ids0] if feats is not None else None, logd[ids0], blocks)


def _encoder(num_layers: int = 2, feature_dim: int = FEAT, **kw) -> PinSageEncoder:
    torch.manual_seed(0)
    cfg = ModelConfig(
        num_items=NUM_ITEMS, feature_dim=feature_dim, hidden_dim=16, embedding_dim=8,
        num_layers=num_layers, **kw,
    )
    return PinSageEncoder(cfg).eval()


def _layerwise(enc: PinSageEncoder, nbr, w, feats, logd) -> torch.Tensor:
    """Full-graph layer-wise inference through the public layer methods."""
    ids = torch.arange(NUM_ITEMS)
    h = enc.input_layer(ids, feats, logd)
    for k in range(enc.num_layers):
        h = enc.conv_layer(k, h, h[nbr.clamp(min=0)], w, nbr >= 0)
    return enc.output_layer(h, ids)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_shapes_and_unit_norm(num_layers):
    nbr, w, feats, logd = _graph()
    enc = _encoder(num_layers)
    inp = _sample([0, 5, 11], num_layers, nbr, w, feats, logd)
    inp.validate(num_items=NUM_ITEMS, feature_dim=FEAT)
    assert len(enc.convs) == num_layers
    out = enc(inp)
    assert out.shape == (3, 8)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("pooling", ["importance", "mean"])
@pytest.mark.parametrize("id_skip", [False, True, "balanced"])
def test_block_forward_equals_layerwise_full_graph(num_layers, pooling, id_skip):
    """The oracle for layer-wise inference: sampled-block forward == full-graph layer-wise."""
    nbr, w, feats, logd = _graph()
    enc = _encoder(num_layers, pooling=pooling, use_id_embedding=True, id_skip=bool(id_skip),
                   balanced_skip=id_skip == "balanced")
    full = _layerwise(enc, nbr, w, feats, logd)
    targets = [3, 5, 17, 29, 0]
    for extra_pad in (0, 3):
        out = enc(_sample(targets, num_layers, nbr, w, feats, logd, extra_pad=extra_pad))
        assert torch.allclose(out, full[targets], atol=1e-6), (extra_pad, (out - full[targets]).abs().max())
    # Each layer has its own parameters, so swapping two layers' weights changes results.
    if num_layers >= 2:
        assert not torch.allclose(enc.convs[0].update.weight, enc.convs[1].update.weight)


@pytest.mark.parametrize("num_layers", [0, 1, 2, 3])
@pytest.mark.parametrize("pooling", ["importance", "mean"])
def test_propagate_block_forward_equals_layerwise_full_graph(num_layers, pooling):
    """The same oracle for linear propagation (state [h_k ; s_k] through the layer calls)."""
    nbr, w, feats, logd = _graph()
    enc = _encoder(num_layers, pooling=pooling, use_id_embedding=True, conv="propagate")
    full = _layerwise(enc, nbr, w, feats, logd)
    targets = [3, 5, 17, 29, 0]
    for extra_pad in (0, 3):
        out = enc(_sample(targets, num_layers, nbr, w, feats, logd, extra_pad=extra_pad))
        assert torch.allclose(out, full[targets], atol=1e-6), (extra_pad, (out - full[targets]).abs().max())


def test_propagate_hand_computed():
    """Embedding = normalize(S mean_k P^k h0), h0 = L [x ; log d] + b + E[id] (no ReLU), P the
    row-normalised importance matrix (padding dropped); an isolated item keeps h0 alone."""
    nbr, w, feats, logd = _graph()
    enc = _encoder(2, use_id_embedding=True, conv="propagate")
    assert isinstance(enc.output_proj, torch.nn.Linear) and enc.output_hidden is None
    with torch.no_grad():
        torch.nn.init.normal_(enc.input_proj.id_embedding.weight)
    ids = torch.arange(NUM_ITEMS)
    lin = enc.input_proj.linear
    h0 = torch.cat([feats, logd[:, None]], 1) @ lin.weight.T + lin.bias \
        + enc.input_proj.id_embedding.weight
    assert (h0 < 0).any()  # no ReLU: negative entries survive
    P = torch.zeros(NUM_ITEMS, NUM_ITEMS)
    for u in range(NUM_ITEMS):
        for v, a in zip(nbr[u].tolist(), w[u].tolist()):
            if v >= 0:
                P[u, v] += a
    P = P / P.sum(1, keepdim=True).clamp_min(1e-12)
    h1 = P @ h0
    h2 = P @ h1
    z = ((h0 + h1 + h2) / 3) @ enc.output_proj.weight.T
    expected = z / z.norm(dim=-1, keepdim=True)
    with torch.no_grad():
        out = _layerwise(enc, nbr, w, feats, logd)
    assert torch.allclose(out, expected, atol=1e-5)
    iso = 5  # no neighbours: h1 = h2 = 0, so its embedding is its own h0's direction
    e0 = h0[iso] @ enc.output_proj.weight.T
    assert torch.allclose(out[iso], e0 / e0.norm(), atol=1e-5)
    # the graph counts: rewiring one neighbour changes the embedding
    nbr2 = nbr.clone()
    nbr2[3, 0] = (nbr[3, 0] + 1) % NUM_ITEMS if nbr[3, 0] >= 0 else 7
    with torch.no_grad():
        assert not torch.allclose(_layerwise(enc, nbr2, w, feats, logd)[3], out[3], atol=1e-4)


def test_propagate_gradient_reaches_neighbour_ids():
    """A loss on one item moves its neighbours' id vectors (the point of propagation); with
    K = 0 only its own id vector gets a gradient."""
    nbr, w, feats, logd = _graph()
    for layers, expect in ((2, True), (0, False)):
        enc = _encoder(layers, feature_dim=0, conv="propagate").train()
        inp = _sample([3], layers, nbr, w, None, logd)
        enc(inp).sum().backward()
        grad = enc.input_proj.id_embedding.weight.grad.abs().sum(1)
        others = [int(v) for v in inp.node_ids if int(v) != 3]
        assert grad[3] > 0
        assert (grad[others].sum() > 0) == expect, (layers, grad[others])


def test_output_layer_hand_computed():
    enc = _encoder(2)
    assert enc.output_proj.bias is None  # G2 has no bias (paper Algorithm 2: G2 . ReLU(G1 h + g))
    h = torch.randn(7, 16)
    G1, g, G2 = enc.output_hidden.weight, enc.output_hidden.bias, enc.output_proj.weight
    z = torch.relu(h @ G1.T + g) @ G2.T
    expected = z / z.norm(dim=-1, keepdim=True)
    out = enc.output_layer(h)
    assert out.shape == (7, enc.embedding_dim)
    assert torch.allclose(out, expected, atol=1e-6)


def test_id_skip_hand_computed():
    enc = _encoder(2, use_id_embedding=True, id_skip=True)  # hidden 16 != embedding 8: S learned
    h, ids = torch.randn(5, 16), torch.tensor([3, 0, 7, 7, 39])
    G1, g, G2 = enc.output_hidden.weight, enc.output_hidden.bias, enc.output_proj.weight
    e = enc.input_proj.id_embedding.weight[ids]
    z = torch.relu(h @ G1.T + g) @ G2.T + e @ enc.skip_proj.weight.T
    assert torch.allclose(enc.output_layer(h, ids), z / z.norm(dim=-1, keepdim=True), atol=1e-6)
    # No ids (cold-start items): no id term.
    z0 = torch.relu(h @ G1.T + g) @ G2.T
    assert torch.allclose(enc.output_layer(h), z0 / z0.norm(dim=-1, keepdim=True), atol=1e-6)
    with pytest.raises(ValueError, match="one id per row"):
        enc.output_layer(h, ids[:3])
    # Equal widths: the skip is the identity, no extra parameters.
    same = PinSageEncoder(ModelConfig(num_items=NUM_ITEMS, feature_dim=0, hidden_dim=8,
                                      embedding_dim=8, id_skip=True))
    assert isinstance(same.skip_proj, torch.nn.Identity)
    h8 = torch.randn(5, 8)
    z = torch.relu(h8 @ same.output_hidden.weight.T + same.output_hidden.bias) \
        @ same.output_proj.weight.T + same.input_proj.id_embedding.weight[ids]
    assert torch.allclose(same.output_layer(h8, ids), z / z.norm(dim=-1, keepdim=True),
                          atol=1e-6)
    # Without the skip, ids change nothing.
    plain = _encoder(2, use_id_embedding=True)
    assert plain.skip_proj is None
    assert torch.equal(plain.output_layer(h, ids), plain.output_layer(h))
    with pytest.raises(ValueError, match="id_skip = True needs an id embedding"):
        ModelConfig(num_items=NUM_ITEMS, feature_dim=FEAT, id_skip=True)


def test_balanced_skip_hand_computed():
    """balanced_skip: n(G2 ReLU(G1 h + g)) + n(S E[id]), then normalised; no id: first term."""
    enc = _encoder(2, use_id_embedding=True, id_skip=True, balanced_skip=True)
    h, ids = torch.randn(5, 16), torch.tensor([3, 0, 7, -1, 39])
    G1, g, G2 = enc.output_hidden.weight, enc.output_hidden.bias, enc.output_proj.weight
    conv = torch.nn.functional.normalize(torch.relu(h @ G1.T + g) @ G2.T, dim=-1)
    e = torch.nn.functional.normalize(
        enc.input_proj.id_embedding.weight[ids.clamp(min=0)] @ enc.skip_proj.weight.T, dim=-1)
    e[3] = 0.0  # a negative id means no id term
    z = conv + e
    assert torch.allclose(enc.output_layer(h, ids), z / z.norm(dim=-1, keepdim=True), atol=1e-6)
    assert torch.allclose(enc.output_layer(h), conv, atol=1e-6)
    # Ids are small random vectors from the start (a zero vector has no direction to learn).
    assert 0 < enc.input_proj.id_embedding.weight.std() < 0.05
    # The id term's scale no longer matters: scaling every id vector leaves the output alone.
    with torch.no_grad():
        before = enc.output_layer(h, ids)
        enc.input_proj.id_embedding.weight.mul_(50.0)
    assert torch.allclose(enc.output_layer(h, ids), before, atol=1e-5)
    # id_weight scales the normalised id term against the normalised conv output.
    half = _encoder(2, use_id_embedding=True, id_skip=True, balanced_skip=True, id_weight=0.5)
    conv = torch.nn.functional.normalize(
        torch.relu(h @ half.output_hidden.weight.T + half.output_hidden.bias)
        @ half.output_proj.weight.T, dim=-1)
    e = torch.nn.functional.normalize(
        half.input_proj.id_embedding.weight[ids.clamp(min=0)] @ half.skip_proj.weight.T, dim=-1)
    e[3] = 0.0
    z = conv + 0.5 * e
    assert torch.allclose(half.output_layer(h, ids), z / z.norm(dim=-1, keepdim=True), atol=1e-6)
    for bad in (0.0, -1.0, float("inf"), True):
        with pytest.raises(ValueError, match="id_weight"):
            ModelConfig(num_items=NUM_ITEMS, feature_dim=FEAT, use_id_embedding=True,
                        id_skip=True, balanced_skip=True, id_weight=bad)
    with pytest.raises(ValueError, match="balanced_skip = True needs id_skip"):
        ModelConfig(num_items=NUM_ITEMS, feature_dim=FEAT, use_id_embedding=True,
                    balanced_skip=True)


def test_unknown_ids_get_no_id_term():
    """node_ids=None (cold-start items) leaves out the id embedding, not item 0's vector."""
    _, _, feats, logd = _graph()
    enc = _encoder(2, use_id_embedding=True)
    ids = torch.arange(4)
    lin = enc.input_proj.linear(torch.cat([feats[:4], logd[:4, None]], 1))
    assert torch.allclose(enc.input_layer(None, feats[:4], logd[:4]), torch.relu(lin), atol=1e-6)
    assert torch.allclose(enc.input_layer(ids, feats[:4], logd[:4]),
                          torch.relu(lin + enc.input_proj.id_embedding(ids)), atol=1e-6)


def test_id_embedding_mode():
    nbr, w, _, logd = _graph()
    enc = _encoder(2, feature_dim=0)
    assert enc.config.use_id_embedding is True
    assert enc.input_proj.id_embedding is not None
    inp = _sample([1, 2, 5], 2, nbr, w, None, logd)
    out = enc(inp)
    assert torch.allclose(out, _layerwise(enc, nbr, w, None, logd)[[1, 2, 5]], atol=1e-6)
    # Gradients reach the id embedding rows of the sampled nodes only.
    out.sum().backward()
    grad = enc.input_proj.id_embedding.weight.grad
    touched = set(torch.nonzero(grad.abs().sum(1)).flatten().tolist())
    assert touched and touched <= set(inp.node_ids.tolist())


def test_feature_mode_and_both_modes():
    nbr, w, feats, logd = _graph()
    enc = _encoder(2)
    assert enc.config.use_id_embedding is False and enc.input_proj.id_embedding is None
    both = _encoder(2, use_id_embedding=True)
    assert both.input_proj.id_embedding is not None
    inp = _sample([4, 9], 2, nbr, w, feats, logd)
    out = both(inp)
    out.sum().backward()
    for name, p in both.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    # Features matter: changing them changes the embedding.
    inp2 = EncoderInput(inp.node_ids, inp.features + 1.0, inp.log_degree, inp.blocks)
    assert not torch.allclose(enc(inp), enc(inp2), atol=1e-4)


def test_dropout_only_in_training():
    nbr, w, feats, logd = _graph()
    enc = _encoder(2, dropout=0.5)
    inp = _sample([4, 9, 12], 2, nbr, w, feats, logd)
    assert torch.equal(enc(inp), enc(inp))
    enc.train()
    torch.manual_seed(1)
    a = enc(inp)
    b = enc(inp)
    assert not torch.allclose(a, b)


def test_forward_structural_errors():
    nbr, w, feats, logd = _graph()
    enc = _encoder(2)
    inp = _sample([4, 9], 1, nbr, w, feats, logd)
    with pytest.raises(ValueError, match="num_layers = 2"):
        enc(inp)
    inp = _sample([4, 9], 2, nbr, w, feats, logd)
    bad = EncoderInput(inp.node_ids[:-1], inp.features[:-1], inp.log_degree[:-1], inp.blocks)
    with pytest.raises(ValueError, match=r"blocks\[0\].num_src"):
        enc(bad)
    with pytest.raises(IndexError):
        enc.conv_layer(2, None, None, None, None)


def test_model_config_validation_and_roundtrip():
    cfg = ModelConfig(num_items=10, feature_dim=0)
    assert cfg.use_id_embedding is True and cfg.hidden_dim == 64 and cfg.num_layers == 2
    assert ModelConfig(num_items=10, feature_dim=3).use_id_embedding is False
    d = cfg.to_dict()
    assert ModelConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown key"):
        ModelConfig.from_dict({**d, "lr": 0.1})
    bad = [
        (dict(num_items=0, feature_dim=1), "num_items = 0"),
        (dict(num_items=10, feature_dim=-1), "feature_dim = -1"),
        (dict(num_items=10, feature_dim=1, hidden_dim=0), "hidden_dim"),
        (dict(num_items=10, feature_dim=1, embedding_dim=2.5), "embedding_dim"),
        (dict(num_items=10, feature_dim=1, num_layers=-1), "num_layers"),
        (dict(num_items=10, feature_dim=1, conv="gat"), "conv = 'gat'"),
        (dict(num_items=10, feature_dim=0, conv="propagate", id_skip=True), "id_skip = True"),
        (dict(num_items=10, feature_dim=1, pooling="max"), "pooling = 'max'"),
        (dict(num_items=10, feature_dim=1, dropout=1.0), "dropout"),
        (dict(num_items=10, feature_dim=0, use_id_embedding=False), "use_id_embedding"),
    ]
    for kwargs, pattern in bad:
        with pytest.raises(ValueError, match=pattern):
            ModelConfig(**kwargs)
    with pytest.raises(TypeError, match="ModelConfig"):
        PinSageEncoder(d)


def test_block_validate_errors():
    ok = Block(torch.tensor([[1, -1], [0, 2]]), torch.tensor([[0.5, 0.0], [1.0, 2.0]]), num_src=3)
    ok.validate()
    assert ok.num_dst == 2 and ok.fanout == 2
    cases = [
        (Block(torch.tensor([[1, 3]]), torch.ones(1, 2), 3), r"values in \[1, 3\].*\[0, 3\)"),
        (Block(torch.tensor([[1, -2]]), torch.ones(1, 2), 3), "neighbors has values"),
        (Block(torch.tensor([[1, 2]]), torch.ones(1, 3), 3), r"weights has shape \(1, 3\)"),
        (Block(torch.tensor([[1, 2]], dtype=torch.int32), torch.ones(1, 2), 3), "int64"),
        (Block(torch.tensor([[1, 2]]), torch.ones(1, 2, dtype=torch.long), 3), "floating"),
        (Block(torch.tensor([[0], [0], [0]]), torch.ones(3, 1), 2), "num_src = 2"),
        (Block(torch.tensor([[1, 2]]), torch.tensor([[1.0, -1.0]]), 3), "negative"),
        (Block(torch.tensor([[1, 2]]), torch.tensor([[1.0, float("nan")]]), 3), "NaN"),
    ]
    for block, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            block.validate()
    # Garbage weights at padded positions are allowed (they are ignored).
    Block(torch.tensor([[1, -1]]), torch.tensor([[1.0, float("nan")]]), 3).validate()


def test_encoder_input_validate_and_to():
    nbr, w, feats, logd = _graph()
    inp = _sample([4, 9], 2, nbr, w, feats, logd)
    inp.validate(num_items=NUM_ITEMS, feature_dim=FEAT)
    assert inp.num_output_nodes == 2 and inp.output_node_ids.tolist() == [4, 9]
    moved = inp.to("cpu")
    assert torch.equal(moved.node_ids, inp.node_ids) and len(moved.blocks) == 2
    with pytest.raises(ValueError, match="feature_dim = 3"):
        inp.validate(feature_dim=3)
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        inp.validate(num_items=10)
    broken = EncoderInput(inp.node_ids, inp.features, inp.log_degree[:-1], inp.blocks)
    with pytest.raises(ValueError, match="log_degree"):
        broken.validate()
    chain = EncoderInput(inp.node_ids, inp.features, inp.log_degree, inp.blocks[::-1])
    with pytest.raises(ValueError, match=r"blocks\[0\].num_src"):
        chain.validate()


@pytest.mark.parametrize("conv", ["propagate", "paper"])
def test_whole_graph_forward_and_gradient_equal_dense(conv):
    """WholeGraph: one sparse product per hop (backward through the stored transpose) gives
    the layer-wise embeddings and the same id-vector gradients as the gathered layer calls."""
    from pinsage_ray.model import WholeGraph

    nbr, w, feats, logd = _graph()
    enc = _encoder(2, use_id_embedding=True, conv=conv, id_skip=conv == "paper")
    with torch.no_grad():
        enc.input_proj.id_embedding.weight.normal_()
    ids = torch.arange(NUM_ITEMS)
    graph = WholeGraph.from_neighbors(ids, feats, logd, nbr, w)
    grads = []
    for run in (lambda: enc(graph), lambda: _layerwise(enc, nbr, w, feats, logd)):
        enc.zero_grad()
        out = run()
        (out[:7] * torch.arange(7.0)[:, None]).sum().backward()
        grads.append((out.detach(), enc.input_proj.id_embedding.weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-5)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)
    assert grads[0][1].abs().sum() > 0
