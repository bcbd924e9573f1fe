"""The pieces ``bench_inference.py`` measures with, also used by ``scale_stages.py``.

The model settings (K = 2, hidden = embedding = 64, T = 50), an untrained encoder, the
recursive per-request baseline (each request builds its own K-hop graph and runs forward), a
run directory as ``train`` leaves it (for the Ray Data path), the spread of embedding cosines
with a trained-like stand-in when the untrained vectors are degenerate, and recall@k with
tied scores counted as hits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

NUM_LAYERS, HIDDEN, EMB_DIM, TOP_T = 2, 64, 64, 50
NEIGHBORS = dict(walk_length=2, restart_prob=0.5, top_t=TOP_T)  # num_walks from --num-walks


def make_encoder(num_items: int, feature_dim: int) -> Any:
    import torch

    from pinsage_ray.model.encoder import ModelConfig, PinSageEncoder

    torch.manual_seed(0)
    cfg = ModelConfig(num_items=num_items, feature_dim=feature_dim, hidden_dim=HIDDEN,
                      embedding_dim=EMB_DIM, num_layers=NUM_LAYERS,
                      use_id_embedding=feature_dim == 0)
    return PinSageEncoder(cfg).eval()


def recursive_embed(encoder: Any, items: np.ndarray, nb: Any, features: np.ndarray | None,
                    log_deg: np.ndarray, batch: int) -> tuple[np.ndarray, list[int]]:
    """The baseline: per request of ``batch`` items, build its K-hop graph and run forward.

    Returns the embeddings and, per request, the node computations done (layer-0 nodes +
    layer-1 nodes + ... + output nodes).
    """
    import torch

    from pinsage_ray.model.batch import EncoderInput
    from pinsage_ray.training.batches import expand_blocks

    out, work = [], []
    with torch.no_grad():
        for s in range(0, len(items), batch):
            req = items[s:s + batch]
            nodes0, blocks = expand_blocks(req, NUM_LAYERS, nb.take)
            inp = EncoderInput(
                node_ids=torch.from_numpy(nodes0),
                features=None if features is None else torch.from_numpy(
                    np.ascontiguousarray(features[nodes0], dtype=np.float32)),
                log_degree=torch.from_numpy(log_deg[nodes0]), blocks=blocks)
            out.append(encoder(inp).numpy())
            work.append(len(nodes0) + sum(b.num_dst for b in blocks))
    return np.concatenate(out), work


def cosine_spread(emb: np.ndarray, rng: np.random.Generator, pairs: int = 20000) -> dict:
    a, b = rng.integers(0, len(emb), pairs), rng.integers(0, len(emb), pairs)
    x, y = emb[a], emb[b]
    cos = (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1) + 1e-30)
    q = np.quantile(cos, [0.05, 0.5, 0.95])
    return {"mean": float(cos.mean()), "std": float(cos.std()), "p05": float(q[0]),
            "p50": float(q[1]), "p95": float(q[2])}


def degenerate(spread: dict) -> bool:
    """All vectors in a narrow cone: random pairs nearly as close as neighbours would be."""
    return spread["mean"] > 0.8 or spread["std"] < 0.05


def substitute_embeddings(features: np.ndarray | None, nb_ids: np.ndarray,
                          nb_weights: np.ndarray, seed: int = 7) -> tuple[np.ndarray, str]:
    """Trained-like stand-in: features through a random matrix (or graph-smoothed random
    vectors without features), L2-normalised."""
    rng = np.random.default_rng(seed)
    if features is not None:
        f = np.asarray(features, np.float32)
        x = f @ rng.standard_normal((f.shape[1], EMB_DIM)).astype(np.float32)
        how = "item features x a random (F, 64) matrix, L2-normalised"
    else:
        g = rng.standard_normal((len(nb_ids), EMB_DIM)).astype(np.float32)
        x = g.copy()
        for s in range(0, len(g), 65536):
            ids, w = nb_ids[s:s + 65536], nb_weights[s:s + 65536]
            x[s:s + 65536] += np.einsum("bt,btd->bd", np.where(ids >= 0, w, 0).astype(np.float32),
                                        g[np.maximum(ids, 0)])
        how = ("random Gaussian vectors plus the importance-weighted mean of their "
               "neighbours', L2-normalised")
    x /= np.linalg.norm(x, axis=1, keepdims=True) + 1e-12
    return x.astype(np.float32), how


def recall_at_k(found: np.ndarray, found_s: np.ndarray, truth: np.ndarray,
                truth_s: np.ndarray) -> float:
    """Fraction of returned items in the exact top-k (ties of the k-th score count as hits,
    as in ``HNSWIndex`` tuning)."""
    kth = truth_s[:, -1:]
    hit = (found[:, :, None] == truth[:, None, :]).any(-1)
    hit |= found_s >= kth - 1e-5 * np.maximum(1.0, np.abs(kth))
    return float(hit.mean())


def write_run_dir(run_dir: Path, encoder: Any, graph: Path, nb: Any, num_walks: int,
                  seed: int, top_t: int = TOP_T) -> None:
    """A run directory as ``train`` leaves it (model/), plus the neighbourhood table that
    ``embed`` would compute, so that the Ray path is timed without the walks."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pinsage_ray import GraphStore
    from pinsage_ray.inference.model_io import run_path, save_neighbors
    from pinsage_ray.training.config import NeighborConfig, TrainConfig

    if run_dir.exists():
        shutil.rmtree(run_dir)
    model_dir = run_dir / "model"
    model_dir.mkdir(parents=True)
    torch.save(encoder.state_dict(), model_dir / "model.pt")
    nc = NeighborConfig(num_walks=num_walks, **{**NEIGHBORS, "top_t": top_t})
    tc = TrainConfig.preset("paper", hidden_dim=HIDDEN, embedding_dim=EMB_DIM,
                            num_layers=NUM_LAYERS, neighbors=nc)
    (model_dir / "model.json").write_text(json.dumps(
        {"model_config": encoder.config.to_dict(), "train_config": tc.to_dict(),
         "graph_dir": str(graph), "epoch": 0, "note": "untrained, written by bench_inference"},
        indent=2, default=list))
    pq.write_table(pa.table({"id": GraphStore(graph).item_ids}), model_dir / "item_ids.parquet")
    info = {"seed": seed, "graph_dir": str(graph), **tc.to_dict()["neighbors"]}
    save_neighbors(run_path(run_dir, "inference", "neighbors"), nb.ids, nb.weights, info)
