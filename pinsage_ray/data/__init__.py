"""Data sources for pinsage-ray: public-dataset readers, the planted-community synthetic
generator, and the :class:`RawDataset` contract they all return."""

from pinsage_ray.data.readers import MOVIELENS_GENRES, read_lightgcn, read_movielens_100k
from pinsage_ray.data.synthetic import SyntheticConfig, generate_synthetic, read_synthetic, write_synthetic
from pinsage_ray.data.types import INTERACTION_COLUMNS, RawDataset

__all__ = [
    "INTERACTION_COLUMNS",
    "MOVIELENS_GENRES",
    "RawDataset",
    "SyntheticConfig",
    "generate_synthetic",
    "read_lightgcn",
    "read_movielens_100k",
    "read_synthetic",
    "write_synthetic",
]
