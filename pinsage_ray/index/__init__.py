"""Approximate nearest-neighbour retrieval over item embeddings (PinSage Section 3.5).

Public API: :class:`HNSWConfig`, :class:`HNSWIndex`, :class:`PartitionedIndex` (one HNSW index
per partition, fan-out queries with an exact merge), :class:`PartitionActors` (a saved
partitioned index served from one Ray actor per partition), :func:`load_index` (either layout),
:func:`exact_topk` and :class:`IndexIntegrityError` (raised when a saved index is missing,
inconsistent or corrupted). :mod:`.tuning` holds the held-out ``ef`` tuning and the
HNSW-or-exact search choice.
"""

from pinsage_ray.index.hnsw import (EF_LADDER, SEARCH_MODES, SPACES, HNSWConfig, HNSWIndex, IndexIntegrityError,
                                    exact_topk)
from pinsage_ray.index.partition_actors import PartitionActors
from pinsage_ray.index.partitioned import (PartitionedIndex, load_index, partition_bounds,
                                           partition_entries)

__all__ = ["EF_LADDER", "SEARCH_MODES", "SPACES", "HNSWConfig", "HNSWIndex", "IndexIntegrityError",
           "PartitionActors", "PartitionedIndex", "exact_topk", "load_index", "partition_bounds",
           "partition_entries"]
