"""Protocols end to end: PinSage and the baselines scored by one code path.

* :func:`p1_data` / :func:`p2_data` turn MovieLens-100K / Gowalla into the protocol's split
  *and* a graph directory built from the training interactions only (nothing held out is
  visible to walks, training or neighbourhoods).
* :func:`pinsage_scorer` wraps a trained and embedded run as the same scoring functions the
  baselines expose (``item_scores`` for P1/P3, ``user_scores`` for P2: the mean of the user's
  training-item embeddings), mapping protocol item indices to graph ids; items absent from the
  training graph score ``-inf`` (no model can rank them from training data).
* :func:`run_protocol` trains PinSage per seed and evaluates it and the chosen baselines.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pinsage_ray.evaluation import baselines as bl
from pinsage_ray.evaluation import linear
from pinsage_ray.evaluation.protocols import (LeaveLastSplit, evaluate_p1, evaluate_p2,
                                              leave_last_split)

logger = logging.getLogger(__name__)

BASELINES = {"popularity": bl.Popularity, "itemknn": bl.ItemKNN, "rp3beta": bl.RP3beta,
             "ppr": bl.PPRBaseline, "svd": linear.SVDEmbedding, "ease": linear.EASE}


@dataclass
class ProtocolData:
    """A protocol's split plus the graph built from its training part.

    Attributes:
        name: 'p1-ml100k' or 'p2-gowalla'.
        graph_dir: graph directory of the training interactions.
        num_items, num_users: protocol id spaces (items/users are 0-based indices).
        item_to_graph: int64 (num_items,) graph contiguous id of each protocol item, -1 absent.
        train_users, train_items: training interactions in protocol indices.
        split: the P1 split (P1 only).
        test_users, test_items: held-out interactions (P2 only).
    """

    name: str
    graph_dir: str
    num_items: int
    num_users: int
    item_to_graph: np.ndarray
    train_users: np.ndarray
    train_items: np.ndarray
    split: LeaveLastSplit | None = None
    test_users: np.ndarray | None = None
    test_items: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _graph_map(graph_dir: str, original_ids: np.ndarray) -> np.ndarray:
    from pinsage_ray.graph import GraphStore

    store = GraphStore(graph_dir)
    known = np.asarray(store.item_ids.to_numpy(zero_copy_only=False))
    out = np.full(len(original_ids), -1, dtype=np.int64)
    pos = np.searchsorted(known, original_ids)
    hit = (pos < len(known)) & (known[np.minimum(pos, len(known) - 1)] == original_ids)
    out[hit] = pos[hit]
    return out


def graph_data(store: Any) -> ProtocolData:
    """A graph's own interactions as a protocol's training data: groups as users, graph ids as
    item indices (protocol P3 and the quickstart fit the baselines on this)."""
    indptr = np.asarray(store.array("group_indptr"))
    users = np.repeat(np.arange(store.num_groups), np.diff(indptr))
    items = np.asarray(store.array("group_indices"))
    return ProtocolData("p3", store.uri, store.num_items, store.num_groups,
                        np.arange(store.num_items), users, items)


def p1_data(ml_dir: str | os.PathLike, workdir: str | os.PathLike) -> ProtocolData:
    """MovieLens-100K leave-last-out split; graph from the training interactions (with times)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from pinsage_ray.data import RawDataset, read_movielens_100k
    from pinsage_ray.graph import prepare

    ds = read_movielens_100k(ml_dir)
    inter = ds.interactions
    item_ids = np.unique(ds.item_features.column("item").to_numpy())
    items = np.searchsorted(item_ids, inter.column("item").to_numpy())
    user_ids, users = np.unique(inter.column("group").to_numpy(), return_inverse=True)
    split = leave_last_split(users, items, inter.column("timestamp").to_numpy(),
                             num_items=len(item_ids))
    train = inter.take(pa.array(split.train_rows))
    in_train = pc.is_in(ds.item_features.column("item"), value_set=train.column("item"))
    graph_dir = str(Path(workdir) / "graph")
    prepare(RawDataset("ml-100k-p1-train", train, ds.item_features.filter(in_train),
                       ds.item_metadata), graph_dir, overwrite=True)
    return ProtocolData("p1-ml100k", graph_dir, len(item_ids), len(user_ids),
                        _graph_map(graph_dir, item_ids), split.train_users, split.train_items,
                        split=split, extra={"item_ids": item_ids})


def p2_data(gowalla_dir: str | os.PathLike, workdir: str | os.PathLike, *,
            validation: float = 0.0, seed: int = 0) -> ProtocolData:
    """Gowalla's given train/test split unchanged; graph from ``train.txt``.

    With ``validation > 0`` (for tuning) ``test.txt`` is never read: :func:`carve_validation`
    holds out that fraction of each user's ``train.txt`` interactions, the graph is built from
    the rest, and the held-out part plays the role of the test set.
    """
    import pyarrow as pa

    from pinsage_ray.data import RawDataset, read_lightgcn
    from pinsage_ray.evaluation.protocols import carve_validation
    from pinsage_ray.graph import prepare

    train, test = read_lightgcn(gowalla_dir)
    tu = train.interactions.column("group").to_numpy()
    ti = train.interactions.column("item").to_numpy()
    name = "p2-gowalla"
    if validation > 0:
        sp = carve_validation(tu, ti, fraction=validation, seed=seed)
        num_items, num_users = int(ti.max()) + 1, int(tu.max()) + 1
        train = RawDataset(train.name + "-carved",
                           pa.table({"item": pa.array(sp.train_items, pa.int64()),
                                     "group": pa.array(sp.train_users, pa.int64())}))
        tu, ti, hu, hi = sp.train_users, sp.train_items, sp.val_users, sp.val_items
        name = "p2-gowalla-val"
    else:
        hu, hi = test.column("group").to_numpy(), test.column("item").to_numpy()
        num_items = int(max(ti.max(), hi.max())) + 1
        num_users = int(max(tu.max(), hu.max())) + 1
    graph_dir = str(Path(workdir) / "graph")
    prepare(train, graph_dir, overwrite=True)
    return ProtocolData(name, graph_dir, num_items, num_users,
                        _graph_map(graph_dir, np.arange(num_items)), tu, ti,
                        test_users=hu, test_items=hi)


class PinSageScorer:
    """A trained, embedded run as protocol scoring functions.

    Args:
        run_dir: run directory with ``embeddings/`` (None with ``embeddings``).
        data: the protocol data whose graph the run was trained on.
        embeddings: the graph's item embeddings, instead of reading ``run_dir``.
    """

    name = "pinsage"

    def __init__(self, run_dir: str | os.PathLike | None, data: ProtocolData,
                 embeddings: np.ndarray | None = None) -> None:
        import torch

        if embeddings is None:
            from pinsage_ray.inference.pipeline import load_embeddings

            _, embeddings = load_embeddings(run_dir)
        emb = embeddings
        present = data.item_to_graph >= 0
        table = np.zeros((data.num_items, emb.shape[1]), dtype=np.float32)
        table[present] = emb[data.item_to_graph[present]]
        self.table = torch.from_numpy(table)
        self.absent = torch.from_numpy(~present)
        order = np.argsort(data.train_users, kind="stable")
        self.user_ptr = np.searchsorted(data.train_users[order], np.arange(data.num_users + 1))
        self.user_items = data.train_items[order]

    @classmethod
    def from_embeddings(cls, embeddings: np.ndarray, data: ProtocolData) -> "PinSageScorer":
        """A scorer over in-memory embeddings ``(graph items, D)``, rows in graph id order."""
        return cls(None, data, embeddings)

    def _mask(self, scores: Any) -> np.ndarray:
        scores[:, self.absent] = -np.inf
        return scores.numpy()

    def item_scores(self, query_items: np.ndarray) -> np.ndarray:
        """(Q, N) cosine similarity of every item to each query item."""
        import torch

        return self._mask(self.table[torch.as_tensor(query_items)] @ self.table.T)

    def user_scores(self, user_ids: np.ndarray) -> np.ndarray:
        """(U, N) similarity to the normalised mean embedding of each user's training items."""
        import torch

        vecs = torch.zeros(len(user_ids), self.table.shape[1])
        for row, u in enumerate(np.asarray(user_ids)):
            items = self.user_items[self.user_ptr[u]:self.user_ptr[u + 1]]
            if len(items):
                vecs[row] = self.table[torch.as_tensor(items)].mean(0)
        vecs = torch.nn.functional.normalize(vecs, dim=1)
        return self._mask(vecs @ self.table.T)


def evaluate_scorer(scorer: Any, data: ProtocolData) -> dict[str, float]:
    """Score one model (PinSage or a fitted baseline) under ``data``'s protocol."""
    if data.split is not None:
        out = {f"val_{k}": v for k, v in evaluate_p1(scorer.item_scores, data.split, "val").items()}
        out.update({f"test_{k}": v
                    for k, v in evaluate_p1(scorer.item_scores, data.split, "test").items()})
        return out
    return evaluate_p2(scorer.user_scores, data.train_users, data.train_items, data.test_users,
                       data.test_items, data.num_items)


def fit_baseline(name: str, data: ProtocolData) -> Any:
    if name not in BASELINES:
        raise ValueError(f"baseline {name!r}; choose from {sorted(BASELINES)}")
    return BASELINES[name]().fit(data.train_users, data.train_items, data.num_users,
                                 data.num_items)


def run_protocol(data: ProtocolData, config: Any, workdir: str | os.PathLike, *,
                 seeds: tuple[int, ...] = (0,), baselines: tuple[str, ...] = ()) -> dict:
    """Train + embed PinSage per seed, evaluate it and ``baselines``; return a report dict.

    The report has ``rows`` (model -> metrics; PinSage's are means over seeds, with ``_std``
    entries for the spread) and ``runs`` (per-seed metrics and training summaries).
    """
    import dataclasses

    from pinsage_ray.inference.pipeline import embed
    from pinsage_ray.training import train

    runs = []
    for seed in seeds:
        cfg = dataclasses.replace(config, seed=seed)
        run_dir = Path(workdir) / f"run-seed{seed}"
        result = train(data.graph_dir, run_dir, cfg)
        embed(run_dir, mode="local")
        metrics = evaluate_scorer(PinSageScorer(run_dir, data), data)
        runs.append({"seed": seed, "metrics": metrics, "best_epoch": result.best["epoch"],
                     "train_seconds": sum(m["epoch_seconds"] for m in result.history)})
        logger.info("%s seed %d: %s", data.name, seed, metrics)
    keys = runs[0]["metrics"].keys()
    rows = {"pinsage": {**{k: float(np.mean([r["metrics"][k] for r in runs])) for k in keys},
                        **{f"{k}_std": float(np.std([r["metrics"][k] for r in runs]))
                           for k in keys}}}
    for name in baselines:
        rows[name] = evaluate_scorer(fit_baseline(name, data), data)
        logger.info("%s %s: %s", data.name, name, rows[name])
    return {"protocol": data.name, "seeds": list(seeds), "rows": rows, "runs": runs,
            "config": dataclasses.asdict(config)}
