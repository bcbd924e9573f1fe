"""Protocol P3 on a trained run: its held-out co-engagement pairs, PinSage vs baselines.

``train`` saves the validation pairs it held out (``run_dir/val_pairs.parquet``, original
ids). Here every item is scored for each query by PinSage (cosine of embeddings) and,
optionally, by baselines fitted on the run's own graph (groups as users), and the pairs are
ranked among all items (paper section 4.2: hit-rate at K and MRR scaled by 100).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np

from pinsage_ray import _io
from pinsage_ray.evaluation.protocols import evaluate_pairs

logger = logging.getLogger(__name__)


def evaluate_run(run_dir: str | os.PathLike, *, ks: tuple[int, ...] = (10, 500),
                 baselines: tuple[str, ...] = (), max_pairs: int = 5000,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """P3 metrics of the run's model (and ``baselines``) on its held-out pairs.

    Returns:
        ``{model name: {"hit@k": ..., "mrr": ..., "paper_mrr": ...}}``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    from pinsage_ray.evaluation.harness import fit_baseline, graph_data
    from pinsage_ray.graph import GraphStore
    from pinsage_ray.inference.model_io import load_model, run_path
    from pinsage_ray.inference.pipeline import load_embeddings

    model = load_model(run_dir)
    store = GraphStore(model.graph_dir)
    fs, path = _io.resolve(run_path(run_dir, "val_pairs.parquet"))
    if not _io.exists(fs, path):
        raise FileNotFoundError(f"{path}: no held-out pairs (the run predates them, or "
                                "val_fraction was 0)")
    try:
        pairs = pq.read_table(path, filesystem=fs, columns=["query", "positive"])
    except (pa.ArrowException, OSError, ValueError) as err:
        raise ValueError(f"{path}: unreadable ({' '.join(str(err).split())[:200]}); it is "
                         "corrupted: restore it, or retrain into a new run_dir") from None
    q = store.item_index(pairs.column("query").combine_chunks(), argument="val_pairs.query")
    t = store.item_index(pairs.column("positive").combine_chunks(),
                         argument="val_pairs.positive")
    if len(q) > max_pairs:
        keep = np.sort(np.random.default_rng(seed).choice(len(q), max_pairs, replace=False))
        q, t = q[keep], t[keep]
    _, emb = load_embeddings(run_dir)
    table = torch.from_numpy(emb)

    def pinsage_scores(queries: np.ndarray) -> np.ndarray:
        return (table[torch.as_tensor(queries)] @ table.T).numpy()

    rows = {"pinsage": evaluate_pairs(pinsage_scores, q, t, ks=ks)}
    if baselines:
        data = graph_data(store)
        for name in baselines:
            scorer: Any = fit_baseline(name, data)
            rows[name] = evaluate_pairs(scorer.item_scores, q, t, ks=ks)
    logger.info("P3 on %d pairs: %s", len(q), rows)
    return rows
