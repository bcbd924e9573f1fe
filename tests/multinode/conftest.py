"""A Ray cluster of several nodes on this machine, shared by the tests of this package.

``LocalCluster`` (``benchmarks/fault_scenarios.py``, shared with ``bench_faults.py``) is
``ray.cluster_utils.Cluster`` shaped like ``cluster.yaml``: a head with no CPUs and two
worker nodes, each with its own raylet and object store, one CPU and one unit of
``pinsage_shard`` and ``pinsage_trainer``. The test process is the cluster's driver, so the
session's local Ray instance (``ray_session``) is stopped while these tests run and started
again after them. One cluster and one reference training run serve both modules (start-up
is 20-50 s on a busy 2-core machine, a training run 30-60 s); every test here is ``slow``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fault_scenarios  # noqa: E402


@pytest.fixture(scope="package")
def cluster(local_ray_starter):
    """A connected head + 2 worker nodes; the local instance comes back afterwards."""
    import ray

    had_local = ray.is_initialized()
    if had_local:
        ray.shutdown()
    lc = fault_scenarios.LocalCluster(num_workers=2)
    try:
        lc.connect()
        yield lc
    finally:
        lc.shutdown()
        if had_local:
            local_ray_starter()


@pytest.fixture
def two_workers(cluster):
    """The cluster with two worker nodes before and after the test (faults remove some)."""
    cluster.ensure_workers(2)
    yield cluster
    cluster.ensure_workers(2)


@pytest.fixture(scope="package")
def reference_run(cluster, planted_graph, tmp_path_factory):
    """An uninterrupted 2-worker, 3-epoch run with 2 walk shards (``fault_train_config``):
    ``(run_dir, TrainResult, node ids of its 2 Train workers)``."""
    cluster.ensure_workers(2)
    return fault_scenarios.train_reference(cluster, planted_graph,
                                           tmp_path_factory.mktemp("reference") / "run")
