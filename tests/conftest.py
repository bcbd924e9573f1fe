"""Shared fixtures: one local Ray instance per test module, planted graphs, data paths.

Ray settings that matter on a 2-core CI machine are exported here before Ray is imported
anywhere (see ../shared/RAY_NOTES.md): the memory monitor counts every process on a busy box
and may kill workers, and Train's health-check poll slows every report.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$PINSAGE_DATA_DIR`` or ``<repo>/../shared/data``; None when absent."""
    env = os.environ.get("PINSAGE_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = shared_data_dir()
    if path is None:
        pytest.skip("shared datasets not present (set PINSAGE_DATA_DIR)")
    return path


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance for the whole test module (start-up costs 4-8 s)."""
    import ray

    from pinsage_ray.ray_utils import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2, object_store_memory=300 * 2**20)
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
    except ImportError:  # pragma: no cover
        pass
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def planted_dataset():
    """A small planted-community dataset (8 communities, ~3k edges), with features."""
    from pinsage_ray.data.synthetic import SyntheticConfig, generate_synthetic

    cfg = SyntheticConfig(num_items=400, num_groups=300, num_communities=8,
                          mean_group_size=10.0, p_in=0.9, feature_dim=16,
                          feature_noise=0.5, timestamps=True, seed=7)
    return generate_synthetic(cfg)


@pytest.fixture(scope="session")
def planted_graph(planted_dataset, tmp_path_factory) -> str:
    """Graph directory of :func:`planted_dataset`."""
    from pinsage_ray.graph import prepare

    path = tmp_path_factory.mktemp("planted") / "graph"
    prepare(planted_dataset, path)
    return str(path)
