"""Exact (brute-force) top-k search: the ground truth for HNSW recall and for tests.

Used by :class:`pinsage_ray.index.HNSWIndex` to measure recall@k when it tunes ``ef``
(PinSage Section 3.5 nearest-neighbour retrieval). Scores follow the index convention,
"higher = more similar": cosine similarity, inner product, or negative squared L2 distance.
"""

from __future__ import annotations

import numpy as np
import torch

SPACES = ("cosine", "ip", "l2")

__all__ = ["SPACES", "exact_topk"]


@torch.inference_mode()
def exact_topk(queries: np.ndarray, vectors: np.ndarray, k: int, space: str = "cosine",
               chunk_size: int = 8192, query_chunk_size: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by brute force, in chunks so that Q x N scores are never held at once.

    Args:
        queries: ``(Q, D)`` float32 query vectors.
        vectors: ``(N, D)`` float32 database vectors.
        k: neighbours per query, ``1 <= k <= N``.
        space: ``'cosine'``, ``'ip'`` or ``'l2'``.
        chunk_size: database rows scored per step; top-k is merged across chunks.
        query_chunk_size: query rows per step (peak memory ~ query_chunk_size x chunk_size).

    Returns:
        ``(indices, scores)``: ``(Q, k)`` int64 row positions into ``vectors`` and ``(Q, k)``
        float32 scores, best first. Scores are cosine similarity, inner product, or negative
        squared L2 distance.
    """
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    q_all = np.asarray(queries, dtype=np.float32)
    v_all = np.asarray(vectors, dtype=np.float32)
    if q_all.ndim != 2 or v_all.ndim != 2 or q_all.shape[1] != v_all.shape[1]:
        raise ValueError(f"queries (Q, D) and vectors (N, D) must share D; got {q_all.shape} and {v_all.shape}")
    n = v_all.shape[0]
    if isinstance(k, bool) or not 1 <= int(k) <= n:
        raise ValueError(f"k must be in [1, N={n}], got {k!r}")
    if chunk_size < 1 or query_chunk_size < 1:
        raise ValueError(f"chunk sizes must be >= 1, got {chunk_size}, {query_chunk_size}")
    out_i = np.empty((q_all.shape[0], k), dtype=np.int64)
    out_s = np.empty((q_all.shape[0], k), dtype=np.float32)

    def prep(a: np.ndarray) -> torch.Tensor:
        t = torch.tensor(a)  # copy: inputs may be read-only memmaps
        if space == "cosine":  # same zero-vector convention as hnswlib: divide by norm + tiny
            t = t / (t.norm(dim=1, keepdim=True) + 1e-30)
        return t

    for qs in range(0, q_all.shape[0], query_chunk_size):
        q = prep(q_all[qs : qs + query_chunk_size])
        q_sq = (q * q).sum(1, keepdim=True)
        best_s = best_i = None
        for vs in range(0, n, chunk_size):
            v = prep(v_all[vs : vs + chunk_size])
            s = q @ v.T
            if space == "l2":
                s = 2 * s - q_sq - (v * v).sum(1)[None, :]
            cs, ci = torch.topk(s, min(k, s.shape[1]), dim=1)
            ci = ci + vs
            if best_s is not None:
                merged = torch.cat([best_s, cs], 1)
                cs, pos = torch.topk(merged, min(k, merged.shape[1]), dim=1)
                ci = torch.gather(torch.cat([best_i, ci], 1), 1, pos)
            best_s, best_i = cs, ci
        out_i[qs : qs + len(q)] = best_i.numpy()
        out_s[qs : qs + len(q)] = best_s.numpy()
    return out_i, out_s
