"""S3-compatible storage end to end (issue 12, part 4), against a real HTTP S3 API.

A local moto server (``moto[server]``, the ``test`` extra) on 127.0.0.1 holds a bucket
(``tests/conftest.py``: one server per session, a bucket per module);
``AWS_ENDPOINT_URL`` points pyarrow's S3 filesystem (and boto3) at it. Then, all through
``s3://`` URIs: ``prepare`` writes the graph, ``train`` writes the run (Ray Train checkpoints
included), ``embed`` (Ray Data) writes the embeddings, ``build_index`` uploads the HNSW index
and ``Recommender.load`` downloads it. Single Ray node; Ray workers get the AWS variables
through the instance's ``runtime_env`` (on a cluster, instance profiles do this).
``tests/multinode/test_s3_multinode.py`` runs the same path on the multi-node cluster.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture(scope="module")
def s3_ray(s3_server, local_ray_starter):
    """A local Ray instance whose workers see the AWS variables (the session's plain
    instance, if one ran, is restarted afterwards)."""
    import ray

    _, env = s3_server
    was_running = ray.is_initialized()
    local_ray_starter(runtime_env={"env_vars": env})
    yield ray
    ray.shutdown()
    if was_running:
        local_ray_starter()


def test_pipeline_on_s3(s3_server, s3_ray, s3_listing, tiny_inputs, tiny_train_config):
    from pinsage_ray.graph import GraphStore, prepare
    from pinsage_ray.index import IndexIntegrityError
    from pinsage_ray.inference.pipeline import embed, load_embeddings
    from pinsage_ray.recommender import Recommender, build_index
    from pinsage_ray.training import train

    root, _ = s3_server
    graph, run = f"{root}/graph", f"{root}/runs/exp1"

    store = prepare(tiny_inputs["interactions"], graph,
                    item_features=tiny_inputs["item_features"])
    assert "manifest.json" in s3_listing(graph)
    assert not any(".tmp-" in p for p in s3_listing(root))  # temp prefixes cleaned up
    assert GraphStore(graph).num_items == store.num_items == 300

    result = train(graph, tiny_train_config(num_workers=1), run)
    assert [m["epoch"] for m in result.history] == [1]
    files = s3_listing(run)
    assert "run.json" in files and any(p.startswith("model/") for p in files)
    assert any(p.startswith("train/") for p in files)  # Ray Train's checkpoints on S3

    emb = embed(run, mode="ray", batch_size=128, num_actors=1)
    assert emb.count == 300 and emb.path.startswith("s3://")
    ids, vectors = load_embeddings(run)
    assert len(ids) == 300 and np.isfinite(vectors).all()

    index = build_index(run)
    assert {"index/index.bin", "index/manifest.json"} <= set(s3_listing(run))
    assert not any(".tmp-" in p for p in s3_listing(root))

    rec = Recommender.load(run)
    assert len(rec.index) == 300
    item = ids[0].as_py()
    related = rec.similar_items(item, k=5)
    assert len(related) == 5 and item not in [i for i, _ in related]
    # the same answers as the index that was built (and uploaded) in this process
    built, _ = index.query(vectors[:3], 5, exclude=[[i] for i in ids[:3].to_pylist()])
    loaded = rec.similar_items_batch(ids[:3].to_pylist(), k=5)
    assert [[i for i, _ in row] for row in loaded] == [list(r) for r in built.tolist()]

    # rebuilding replaces the index in place; a second load still verifies it
    build_index(run)
    assert len(Recommender.load(run).index) == 300

    # a corrupted index file on S3 is refused with an error naming the file
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(f"{run}/index/index.bin")
    with fs.open_input_file(path) as f:
        blob = bytearray(f.read())
    blob[len(blob) // 2] ^= 0xFF
    with fs.open_output_stream(path) as f:
        f.write(bytes(blob))
    with pytest.raises(IndexIntegrityError, match="index.bin"):
        Recommender.load(run)
