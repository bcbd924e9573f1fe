"""pinsage-ray: PinSage (Ying et al., KDD 2018) on Ray.

Start at :func:`prepare` (interactions -> graph directory), :func:`open_walker` (random-walk
sampling in process or on Ray shard actors), then training, inference and retrieval.
"""

from pinsage_ray.graph import GraphStore, InputError, PartitionBook, prepare
from pinsage_ray.ray_utils import init_ray
from pinsage_ray.sampling import LocalWalker, Neighborhood, WalkService, open_walker

__version__ = "0.1.0"

__all__ = ["GraphStore", "InputError", "LocalWalker", "Neighborhood", "PartitionBook",
           "WalkService", "init_ray", "open_walker", "prepare", "__version__"]
