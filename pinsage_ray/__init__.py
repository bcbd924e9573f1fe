"""pinsage-ray: PinSage (Ying et al., KDD 2018) on Ray.

The pipeline, each step one function (and one ``pinsage-ray`` command):
:func:`prepare` (interactions -> graph directory), :func:`train` (Ray Train),
:func:`embed` (layer-wise inference on Ray Data), :func:`build_index` (HNSW) and
:class:`Recommender` (related items, group recommendations, cold start).
:func:`open_walker` gives the random-walk service itself (in process or on Ray actors).
Importing this package does not import Ray; the functions that need it do.
"""

from pinsage_ray.graph import GraphStore, InputError, PartitionBook, prepare
from pinsage_ray.inference.pipeline import embed, load_embeddings
from pinsage_ray.ray_utils import init_ray
from pinsage_ray.recommender import Recommender, build_index
from pinsage_ray.sampling import LocalWalker, Neighborhood, WalkService, open_walker
from pinsage_ray.training import TrainConfig, TrainResult, train

__version__ = "0.1.0"

__all__ = ["GraphStore", "InputError", "LocalWalker", "Neighborhood", "PartitionBook",
           "Recommender", "TrainConfig", "TrainResult", "WalkService", "__version__",
           "build_index", "embed", "init_ray", "load_embeddings", "open_walker", "prepare",
           "train"]
