"""Approximate nearest-neighbour retrieval over item embeddings (PinSage Section 3.5).

Public API: :class:`HNSWConfig`, :class:`HNSWIndex`, :func:`exact_topk` and
:class:`IndexIntegrityError` (raised when a saved index is missing, inconsistent or corrupted).
:mod:`.tuning` holds the held-out ``ef`` tuning and the HNSW-or-exact search choice.
"""

from pinsage_ray.index.hnsw import (EF_LADDER, SEARCH_MODES, SPACES, HNSWConfig, HNSWIndex, IndexIntegrityError,
                                    exact_topk)

__all__ = ["EF_LADDER", "SEARCH_MODES", "SPACES", "HNSWConfig", "HNSWIndex", "IndexIntegrityError", "exact_topk"]
