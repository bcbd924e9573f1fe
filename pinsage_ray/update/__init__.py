"""Incremental refresh of a trained run: new interactions, items and groups, removed items.

:func:`update_run` (CLI: ``pinsage-ray update``) writes a new version of a run's graph,
neighbourhoods, layer outputs, embeddings and HNSW index, recomputing only what the change
can reach, and the result equals a full recompute on the updated graph with the same model
and seeds (``tests/update/test_update_oracle.py``). See ``docs/update.md``.
"""

from pinsage_ray.update.api import UpdateResult, update_run
from pinsage_ray.update.versions import current_version

__all__ = ["UpdateResult", "current_version", "update_run"]
