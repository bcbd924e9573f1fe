"""pinsage-ray: PinSage (Ying et al., KDD 2018) on Ray.

The pipeline, each step one function (and one ``pinsage-ray`` command):
:func:`prepare` (interactions -> graph directory), :func:`train` (Ray Train),
:func:`embed` (layer-wise inference on Ray Data), :func:`build_index` (HNSW) and
:class:`Recommender` (related items, group recommendations, cold start).
:func:`open_walker` gives the random-walk service itself (in process or on Ray actors).

Importing this package imports neither Ray nor torch: the names below are loaded on first use
(PEP 562). Every Ray worker that runs a piece of this package imports the package first, so an
eager import here made each walk-shard actor load torch and the whole pipeline (about 2 s of
CPU per process on a small machine) for code that needs neither.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pinsage_ray._lazy import lazy_exports

__version__ = "0.1.0"

#: public name -> the module that defines it
_EXPORTS = {
    "GraphStore": "pinsage_ray.graph", "InputError": "pinsage_ray.graph",
    "PartitionBook": "pinsage_ray.graph", "prepare": "pinsage_ray.graph",
    "embed": "pinsage_ray.inference.pipeline",
    "load_embeddings": "pinsage_ray.inference.embeddings_io",
    "init_ray": "pinsage_ray.ray_utils",
    "Recommender": "pinsage_ray.recommender", "build_index": "pinsage_ray.recommender",
    "load_index": "pinsage_ray.index",
    "LocalWalker": "pinsage_ray.sampling", "Neighborhood": "pinsage_ray.sampling",
    "WalkService": "pinsage_ray.sampling", "open_walker": "pinsage_ray.sampling",
    "TrainConfig": "pinsage_ray.training", "TrainResult": "pinsage_ray.training",
    "train": "pinsage_ray.training",
}

__all__ = sorted([*_EXPORTS, "__version__"])

if TYPE_CHECKING:  # what type checkers and IDEs see
    from pinsage_ray.graph import GraphStore, InputError, PartitionBook, prepare
    from pinsage_ray.inference.embeddings_io import load_embeddings
    from pinsage_ray.inference.pipeline import embed
    from pinsage_ray.ray_utils import init_ray
    from pinsage_ray.index import load_index
    from pinsage_ray.recommender import Recommender, build_index
    from pinsage_ray.sampling import LocalWalker, Neighborhood, WalkService, open_walker
    from pinsage_ray.training import TrainConfig, TrainResult, train


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
