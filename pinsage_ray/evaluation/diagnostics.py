"""Embedding diagnostics: how spread out are the item embeddings?

:func:`cosine_pair_stats` draws ``N`` random pairs of distinct items and summarises their
cosine similarity (mean, std, excess kurtosis, quantiles). A healthy embedding of unrelated
items sits near 0 with a modest spread; a collapsed one has a mean near 1 (everything looks
alike) and a near-zero spread. :func:`embedding_diagnostics` does this for a run directory
and saves a histogram (PNG when matplotlib is importable, else the bin counts as JSON) plus
the statistics to ``run_dir/diagnostics/``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cosine_pair_stats", "embedding_diagnostics"]


def cosine_pair_stats(emb: np.ndarray, num_pairs: int = 100_000, seed: int = 0,
                      bins: int = 50) -> dict[str, Any]:
    """Cosine similarity of ``num_pairs`` random pairs of distinct rows of ``emb``.

    Rows of zero norm count as similarity 0 with everything.

    Returns:
        ``{"num_pairs", "mean", "std", "kurtosis" (excess; 0 for a Gaussian), "min", "max",
        "q05", "q50", "q95", "hist_counts", "hist_edges", "sims"}`` (``sims``: the sampled
        values, a float64 array; drop it before serialising).
    """
    x = np.asarray(emb, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"emb must be (N >= 2, D); got shape {x.shape}")
    rng = np.random.default_rng(seed)
    a = rng.integers(0, len(x), num_pairs)
    b = (a + rng.integers(1, len(x), num_pairs)) % len(x)  # b != a, uniform over the others
    norm = np.linalg.norm(x, axis=1)
    unit = np.divide(x, norm[:, None], out=np.zeros_like(x), where=norm[:, None] > 0)
    sims = np.einsum("ij,ij->i", unit[a], unit[b])
    mean, std = float(sims.mean()), float(sims.std())
    kurt = float(((sims - mean) ** 4).mean() / std**4 - 3.0) if std > 0 else float("nan")
    counts, edges = np.histogram(sims, bins=bins, range=(-1.0, 1.0))
    q05, q50, q95 = (float(v) for v in np.quantile(sims, [0.05, 0.5, 0.95]))
    return {"num_pairs": int(num_pairs), "mean": mean, "std": std, "kurtosis": kurt,
            "min": float(sims.min()), "max": float(sims.max()), "q05": q05, "q50": q50,
            "q95": q95, "hist_counts": counts.tolist(), "hist_edges": edges.tolist(),
            "sims": sims}


def embedding_diagnostics(run_dir: str | os.PathLike, num_pairs: int = 100_000,
                          seed: int = 0, title: str | None = None) -> dict[str, Any]:
    """Random-pair cosine statistics of a run's embeddings, saved under ``run_dir/diagnostics``.

    Writes ``cosine_pairs.json`` (statistics and histogram bins) and ``cosine_pairs.png``
    (when matplotlib is importable). Returns the statistics plus ``"plot"`` (path or None).
    """
    from pinsage_ray.inference.pipeline import load_embeddings

    _, emb = load_embeddings(run_dir)
    stats = cosine_pair_stats(emb, num_pairs=num_pairs, seed=seed)
    sims = stats.pop("sims")
    out_dir = Path(run_dir) / "diagnostics"
    out_dir.mkdir(parents=True, exist_ok=True)
    plot = None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        ax.hist(sims, bins=100, range=(-1, 1), color="steelblue")
        ax.axvline(stats["mean"], color="k", ls="--", lw=1)
        ax.set_xlabel("cosine similarity of a random item pair")
        ax.set_ylabel("pairs")
        ax.set_title((f"{title}\n" if title else "") + f"{len(emb)} items, {num_pairs} pairs: "
                     f"mean {stats['mean']:.3f}, std {stats['std']:.3f}, "
                     f"kurtosis {stats['kurtosis']:.2f}", fontsize=9)
        fig.tight_layout()
        plot = str(out_dir / "cosine_pairs.png")
        fig.savefig(plot, dpi=100)
        plt.close(fig)
    except ImportError:
        pass
    stats.update({"num_items": int(len(emb)), "dim": int(emb.shape[1]), "plot": plot})
    (out_dir / "cosine_pairs.json").write_text(json.dumps(stats, indent=1))
    return stats
