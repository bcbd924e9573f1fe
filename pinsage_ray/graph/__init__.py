"""Graph directories: preparing them, reading them, and partitioning them into shards."""

from pinsage_ray.graph.inputs import InputError
from pinsage_ray.graph.partition import PartitionBook
from pinsage_ray.graph.prepare import prepare
from pinsage_ray.graph.store import CSRSlice, GraphFormatError, GraphStore

__all__ = ["CSRSlice", "GraphFormatError", "GraphStore", "InputError", "PartitionBook", "prepare"]
