"""Random-walk sampling (paper section 3.1): in-process or sharded over Ray actors.

``LocalWalker`` and ``ShardedGraph`` implement the same :class:`WalkService` API and return
identical results for the same seed; :func:`open_walker` picks one from a shard count.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from pinsage_ray.sampling.aggregate import Neighborhood
from pinsage_ray.sampling.api import WalkService
from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.sampling.shard import GraphShard, WalkSpec

__all__ = ["GraphShard", "LocalWalker", "Neighborhood", "WalkService", "WalkSpec",
           "open_walker"]


@contextlib.contextmanager
def open_walker(graph_dir: str | os.PathLike, num_shards: int = 0, *,
                address: str | None = None, **kwargs: object) -> Iterator[WalkService]:
    """A walk service for ``graph_dir``: in-process when ``num_shards == 0``, else Ray actors.

    Ray is initialised (``pinsage_ray.init_ray(address)``) when shards are asked for and it is
    not running yet; the shard actors are stopped on exit.
    """
    if num_shards < 0:
        raise ValueError(f"num_shards={num_shards}; expected 0 (in-process) or a positive count")
    if num_shards == 0:
        yield LocalWalker(graph_dir)
        return
    from pinsage_ray.ray_utils import init_ray
    from pinsage_ray.sampling.service import ShardedGraph

    init_ray(address)
    service = ShardedGraph(graph_dir, num_shards, **kwargs)
    try:
        yield service
    finally:
        service.shutdown()
