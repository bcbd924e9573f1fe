"""The S3 path on the multi-node cluster (issue 12, part 4): ``prepare`` to ``s3://``, ``train``
with an ``s3://`` run directory, ``embed``, ``build_index`` and ``Recommender.load`` from
``s3://``, against the moto server of ``tests/conftest.py``, with the work on the worker nodes,
every stage on its distributed path: ``prepare(engine="ray")`` (checked equal to the local
engine), two Train workers, Ray Data inference, the partitioned index built by Ray tasks.

The cluster's nodes started before the moto server, so their processes do not inherit the AWS
variables; the driver reconnects with them as the job's ``runtime_env`` (on a real cluster,
instance profiles or the job's ``runtime_env`` do this), which every worker process of the job
gets on any node: Ray Train workers (one per worker node: the head has no CPU) write their
checkpoints there, and the Ray Data inference actors read the graph and the model from there.
``tests/test_s3.py`` checks the storage side in one process: index rebuilds in place and an
index corrupted on S3.
"""

from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import pytest

import fault_scenarios as fs
from pinsage_ray import _io
from pinsage_ray import (GraphStore, Recommender, build_index, embed, load_embeddings, prepare,
                         train)

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.multinode]


@pytest.fixture
def s3_cluster(two_workers, s3_server):
    """The cluster, its driver reconnected with the AWS variables in the job's
    ``runtime_env``; reconnected without them afterwards."""
    import ray

    _, env = s3_server
    ray.shutdown()
    two_workers.connect(runtime_env={"env_vars": env})
    try:
        yield two_workers
    finally:
        ray.shutdown()
        two_workers.connect()


def test_pipeline_on_s3_across_nodes(s3_cluster, s3_server, s3_listing, tiny_inputs,
                                     tiny_train_config, tmp_path):
    root, _ = s3_server
    graph, run = f"{root}/graph", f"{root}/runs/multinode"
    prepare(tiny_inputs["interactions"], graph, item_features=tiny_inputs["item_features"],
            engine="ray")  # read, sorted and encoded by Ray Data tasks on the worker nodes
    assert "manifest.json" in s3_listing(graph) and GraphStore(graph).num_items == 300
    local_graph = prepare(tiny_inputs["interactions"], tmp_path / "local-graph",
                    item_features=tiny_inputs["item_features"], engine="local")
    on_s3 = GraphStore(graph)
    arrays = [f[:-4] for f in local_graph.manifest["files"] if f.endswith(".npy")]
    assert {f[:-4] for f in on_s3.manifest["files"] if f.endswith(".npy")} == set(arrays)
    for name in arrays:  # the same graph, array for array
        np.testing.assert_array_equal(on_s3.array(name), local_graph.array(name),
                                      err_msg=name)
    assert on_s3.item_ids.equals(local_graph.item_ids)
    assert on_s3.group_ids.equals(local_graph.group_ids)

    # two Train workers, one per worker node; walks in their producers (no shard actors)
    workers_before = fs.train_worker_nodes()
    result = train(graph, run, tiny_train_config(num_workers=2))
    workers = [n for a, n in fs.train_worker_nodes().items() if a not in workers_before]
    assert sorted(workers) == sorted(s3_cluster.worker_ids())
    assert [m["epoch"] for m in result.history] == [1] and np.isfinite(result.best["loss"])
    files = s3_listing(run)
    assert "run.json" in files and "model/model.json" in files
    assert any(p.startswith("train/checkpoint_") for p in files)  # written from the workers

    # Ray Data: the inference actor (0.5 CPU) and the read tasks can only run on worker nodes
    actors_before = fs.actor_nodes("MapWorker")
    emb = embed(run, mode="ray", batch_size=100, num_actors=1)
    embed_nodes = {n for a, n in fs.actor_nodes("MapWorker").items() if a not in actors_before}
    assert embed_nodes and embed_nodes <= s3_cluster.worker_ids(), embed_nodes
    assert emb.mode == "ray" and emb.count == 300 and emb.path.startswith("s3://")
    ids, vectors = load_embeddings(run)
    assert len(set(ids.to_pylist())) == 300
    # the oracle: the same model embedded in this process from a local copy of its model
    # directory (same inference neighbourhoods: same seed) gives the same vectors
    local = tmp_path / "local-run"
    source_fs, source = _io.resolve(f"{run}/model")
    (local / "model").mkdir(parents=True)
    pafs.copy_files(source, str(local / "model"), source_filesystem=source_fs,
                    destination_filesystem=pafs.LocalFileSystem())
    embed(local, graph_dir=graph, mode="local")
    local_ids, local_vectors = load_embeddings(local)
    assert ids.equals(local_ids)
    assert np.abs(vectors - local_vectors).max() < 1e-5

    build_index(run)
    assert {"index/index.bin", "index/manifest.json"} <= set(s3_listing(run))
    assert not any(".tmp-" in p for p in s3_listing(root))
    rec = Recommender.load(run)
    item = ids[0].as_py()
    related = rec.similar_items(item, k=5)
    assert len(rec.index) == 300 and len(related) == 5 and item not in [i for i, _ in related]
    # the partitioned index: Ray tasks on the worker nodes write their partitions to S3
    from pinsage_ray.index import HNSWConfig

    build_index(run, HNSWConfig(search="exact"), partitions=2)
    assert {"index/manifest.json", "index/part-00000/index.bin",
            "index/part-00001/manifest.json"} <= set(s3_listing(run))
    assert "index/index.bin" not in s3_listing(run)  # the single index was replaced
    assert not any(".tmp-" in p for p in s3_listing(root))
    exact = Recommender.load(run).similar_items(item, k=5)
    assert [i for i, _ in exact] == [i for i, _ in related]
