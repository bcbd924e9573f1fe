"""End-to-end oracles on a two-level planted graph: fine/coarse recovery and cold start.

Both run the real pipeline (``prepare`` -> ``train`` on Ray Train -> ``embed``) on the
fine/coarse preset of :mod:`pinsage_ray.data.synthetic`, where features reveal only an item's
coarse category and its fine community lives only in the co-occurrence graph:

* :func:`planted_recovery`: same-fine and same-coarse precision@10 of PinSage's embeddings,
  beside the two references a user would compute (features alone; a 64-d truncated SVD of the
  degree-normalised item-group matrix, :func:`pinsage_ray.evaluation.linear.svd_item_embedding`).
* :func:`cold_start`: 10 % of the items are held out of training entirely. Each cold item is
  then embedded inductively (:func:`pinsage_ray.inference.coldstart.embed_new_items`) from its
  features and all of its groups but one; the items of that held-out group are its targets.
  Hit@10 of (cold item, target) pairs among all items is compared with the features alone and
  with random vectors: PinSage is inductive so that a new item is useful on day one.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

__all__ = ["planted_recovery", "cold_start"]


def _labels_by_graph_id(ds: Any, item_ids: np.ndarray) -> dict[str, np.ndarray]:
    lab = ds.item_labels
    order = np.argsort(lab.column("item").to_numpy())
    pos = order[np.searchsorted(lab.column("item").to_numpy()[order], item_ids)]
    return {"fine": lab.column("label").to_numpy()[pos],
            "coarse": lab.column("coarse").to_numpy()[pos]}


def _features(ds: Any, item_ids: np.ndarray) -> np.ndarray:
    from pinsage_ray.graph.inputs import feature_matrix

    table = ds.item_features
    table = table.filter(pc.is_in(table.column("item"), value_set=pa.array(item_ids)))
    return feature_matrix(table, pa.array(item_ids), "item_features")


def _train_and_embed(graph_dir: str, config: Any, run_dir: Path) -> np.ndarray:
    from pinsage_ray.inference.pipeline import embed, load_embeddings
    from pinsage_ray.training import train

    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run (train() would resume)
    train(graph_dir, run_dir, config)
    embed(run_dir, mode="local")
    return load_embeddings(run_dir)[1]


def planted_recovery(config: Any, workdir: str | os.PathLike, *, seed: int = 0,
                     k: int = 10) -> dict[str, float]:
    """Fine/coarse precision@k of PinSage (``config``, seed ``seed``), features and SVD."""
    from pinsage_ray.data.synthetic import fine_coarse_config, generate_synthetic
    from pinsage_ray.evaluation.linear import svd_item_embedding
    from pinsage_ray.evaluation.planted import features_embedding, planted_precision
    from pinsage_ray.graph import GraphStore, prepare

    work = Path(workdir)
    ds = generate_synthetic(fine_coarse_config(seed))
    graph_dir = str(work / f"planted-graph-{seed}")
    store = prepare(ds, graph_dir, overwrite=True)
    ids = np.asarray(store.item_ids.to_numpy(zero_copy_only=False))
    labels = _labels_by_graph_id(ds, ids)
    emb = _train_and_embed(graph_dir, dataclasses.replace(config, seed=seed),
                           work / f"planted-run-{seed}")
    indptr = np.asarray(store.array("group_indptr"))
    users = np.repeat(np.arange(store.num_groups), np.diff(indptr))
    items = np.asarray(store.array("group_indices"))
    svd = svd_item_embedding(users, items, store.num_groups, store.num_items, seed=seed)
    out = {}
    for name, vectors in (("pinsage", emb), ("features", features_embedding(
            _features(ds, ids))), ("svd", svd)):
        for level, p in planted_precision(vectors, labels, k).items():
            out[f"{level}_p{k}_{name}"] = p
    logger.info("planted seed %d: %s", seed, out)
    return out


def _hits(catalogue: np.ndarray, queries: np.ndarray, targets: list[np.ndarray],
          k: int) -> float:
    """Mean over (query, target) pairs of target in the query's top k of the catalogue."""
    import torch

    def unit(x: np.ndarray) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=1)

    top = (unit(queries) @ unit(catalogue).T).topk(k, dim=1).indices.numpy()
    hit = [np.isin(t, top[i]).sum() for i, t in enumerate(targets)]
    return float(np.sum(hit) / sum(len(t) for t in targets))


def cold_start(config: Any, workdir: str | os.PathLike, *, seed: int = 0, cold_share: float = 0.1,
               k: int = 10) -> dict[str, float]:
    """Hit@k of held-out pairs of items never seen in training: PinSage vs features vs random."""
    from pinsage_ray.data.synthetic import fine_coarse_config, generate_synthetic
    from pinsage_ray.data.types import RawDataset
    from pinsage_ray.graph import prepare
    from pinsage_ray.inference.coldstart import embed_new_items

    work = Path(workdir)
    ds = generate_synthetic(fine_coarse_config(seed))
    inter = ds.interactions
    all_items = np.unique(inter.column("item").to_numpy())
    rng = np.random.default_rng([seed, 41])
    cold = np.sort(rng.choice(all_items, int(round(cold_share * len(all_items))), replace=False))
    is_cold = pc.is_in(inter.column("item"), value_set=pa.array(cold))
    warm = inter.filter(pc.invert(is_cold))
    warm_items = np.unique(warm.column("item").to_numpy())
    keep_feat = pc.is_in(ds.item_features.column("item"), value_set=pa.array(warm_items))
    graph_dir = str(work / f"coldstart-graph-{seed}")
    store = prepare(RawDataset("cold-start-train", warm, ds.item_features.filter(keep_feat)),
                    graph_dir, overwrite=True)
    run_dir = work / f"coldstart-run-{seed}"
    warm_emb = _train_and_embed(graph_dir, dataclasses.replace(config, seed=seed), run_dir)
    # each cold item: its groups (all but one held out, known to the graph) and targets
    ci, cg = inter.filter(is_cold).column("item").to_numpy(), inter.filter(is_cold).column(
        "group").to_numpy()
    known_groups = set(np.asarray(store.group_ids.to_numpy(zero_copy_only=False)).tolist())
    warm_pos = {int(v): i for i, v in enumerate(np.asarray(
        store.item_ids.to_numpy(zero_copy_only=False)))}
    wi, wg = warm.column("item").to_numpy(), warm.column("group").to_numpy()
    group_members: dict[int, list[int]] = {}
    for item, group in zip(wi.tolist(), wg.tolist()):
        group_members.setdefault(group, []).append(warm_pos[item])
    queries, given, targets = [], [], []
    for item in cold.tolist():
        groups = sorted({int(g) for g in cg[ci == item] if int(g) in known_groups})
        if not groups:
            continue
        held = groups[int(rng.integers(len(groups)))]
        tgt = np.unique(group_members[held])
        if len(tgt):
            queries.append(item)
            given.append([g for g in groups if g != held])
            targets.append(tgt)
    feats = _features(ds, np.asarray(queries))
    cold_emb = embed_new_items(run_dir, feats, given, seed=seed)
    # Each new item is asked for its related items among the trained catalogue (the targets'
    # items): other new items are not candidates, so a model whose id-less embeddings sit
    # apart from the trained ones is judged on how it ranks the catalogue, not penalised
    # for ranking the new items together.
    warm_feats = _features(ds, np.asarray(sorted(warm_pos, key=warm_pos.get)))
    random = rng.standard_normal((len(warm_emb) + len(queries), warm_emb.shape[1]))
    out = {f"coldstart_hit{k}_pinsage": _hits(warm_emb, cold_emb, targets, k),
           f"coldstart_hit{k}_features": _hits(warm_feats, feats, targets, k),
           f"coldstart_hit{k}_random": _hits(random[:len(warm_emb)], random[len(warm_emb):],
                                             targets, k),
           "coldstart_items": float(len(queries)),
           "coldstart_pairs": float(sum(len(t) for t in targets))}
    logger.info("cold start seed %d: %s", seed, out)
    return out
