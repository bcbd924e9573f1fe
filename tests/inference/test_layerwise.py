"""Oracle: layer-wise embedding of all items equals the encoder's direct forward pass."""

from __future__ import annotations

import numpy as np
import torch

from pinsage_ray.graph import GraphStore
from pinsage_ray.inference.layerwise import embed_all
from pinsage_ray.model import EncoderInput, ModelConfig, PinSageEncoder
from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.training.batches import expand_blocks


def test_layerwise_equals_direct_forward(planted_graph):
    store = GraphStore(planted_graph)
    nb = LocalWalker(planted_graph).importance_neighbors(np.arange(store.num_items), top_t=6,
                                                         seed=1)
    feats, deg = np.asarray(store.features()), store.degrees("item")
    torch.manual_seed(0)
    for layers, conv in ((1, "paper"), (2, "paper"), (3, "paper"), (0, "propagate"),
                         (2, "propagate"), (0, "paper")):
        enc = PinSageEncoder(ModelConfig(num_items=store.num_items, feature_dim=16,
                                         hidden_dim=24, embedding_dim=8, num_layers=layers,
                                         conv=conv, use_id_embedding=True))
        enc.eval()
        full = embed_all(enc, feats, deg, nb.ids, nb.weights, batch_size=97)  # uneven chunks
        targets = np.array([0, 5, 17, 399, 250])
        nodes0, blocks = expand_blocks(targets, layers, nb.take)
        inp = EncoderInput(torch.from_numpy(nodes0), torch.from_numpy(feats[nodes0]),
                           torch.from_numpy(np.log1p(deg[nodes0]).astype(np.float32)), blocks)
        with torch.no_grad():
            direct = enc(inp).numpy()
        assert np.abs(direct - full[targets]).max() < 1e-5
        assert np.allclose(np.linalg.norm(full, axis=1), 1.0, atol=1e-5)
