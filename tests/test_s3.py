"""S3-compatible storage end to end (issue 12, part 4), against a real HTTP S3 API.

A local moto server (``moto[server]``, the ``test`` extra) on 127.0.0.1 holds a bucket;
``AWS_ENDPOINT_URL`` points pyarrow's S3 filesystem (and boto3) at it. Then, all through
``s3://`` URIs: ``prepare`` writes the graph, ``train`` writes the run (Ray Train checkpoints
included), ``embed`` (Ray Data) writes the embeddings, ``build_index`` uploads the HNSW index
and ``Recommender.load`` downloads it. Single Ray node; Ray workers get the AWS variables
through the instance's ``runtime_env`` (on a cluster, instance profiles do this).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

BUCKET = "pinsage-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    """A moto S3 server on 127.0.0.1 with one bucket; AWS variables set while it runs.

    Yields ``s3://BUCKET``.
    """
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if moto is None:
        pytest.skip('moto_server not installed (pip install "pinsage-ray[test]")')
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}", env
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def s3_ray(s3_server):
    """A local Ray instance whose workers see the AWS variables (restarted if one ran)."""
    import ray

    from pinsage_ray.ray_utils import init_ray

    _, env = s3_server
    was_running = ray.is_initialized()
    if was_running:
        ray.shutdown()
    init_ray(num_cpus=2, object_store_memory=400 * 2**20, runtime_env={"env_vars": env})
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()
    if was_running:  # the session's plain instance, as tests/conftest.py starts it
        init_ray(num_cpus=2, object_store_memory=400 * 2**20)
        DataContext.get_current().enable_progress_bars = False


def _listing(uri: str) -> list[str]:
    import pyarrow.fs as pafs

    from pinsage_ray import _io

    fs, path = _io.resolve(uri)
    return sorted(i.path[len(path) + 1:] for i in fs.get_file_info(
        pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File)


def test_pipeline_on_s3(s3_server, s3_ray, tmp_path):
    from pinsage_ray.data import SyntheticConfig, write_synthetic
    from pinsage_ray.graph import GraphStore, prepare
    from pinsage_ray.index import IndexIntegrityError
    from pinsage_ray.inference.pipeline import embed, load_embeddings
    from pinsage_ray.recommender import Recommender, build_index
    from pinsage_ray.training import TrainConfig, train

    root, _ = s3_server
    data = tmp_path / "synth"
    write_synthetic(SyntheticConfig(num_items=300, num_groups=240, num_communities=4,
                                    feature_dim=8, seed=0), data)
    graph, run = f"{root}/graph", f"{root}/runs/exp1"

    store = prepare(str(data / "interactions.parquet"), graph,
                    item_features=str(data / "item_features.parquet"))
    assert "manifest.json" in _listing(graph)
    assert not any(".tmp-" in p for p in _listing(root))  # temp prefixes cleaned up
    assert GraphStore(graph).num_items == store.num_items == 300

    cfg = TrainConfig(num_epochs=1, num_workers=1, batch_size=32, batches_per_epoch=3,
                      num_shared_negatives=32, lr=3e-3, val_fraction=0.1, seed=1,
                      neighbors={"num_walks": 20, "top_t": 8})
    result = train(graph, cfg, run)
    assert [m["epoch"] for m in result.history] == [1]
    files = _listing(run)
    assert "run.json" in files and any(p.startswith("model/") for p in files)
    assert any(p.startswith("train/") for p in files)  # Ray Train's checkpoints on S3

    emb = embed(run, mode="ray", batch_size=128, num_actors=1)
    assert emb.count == 300 and emb.path.startswith("s3://")
    ids, vectors = load_embeddings(run)
    assert len(ids) == 300 and np.isfinite(vectors).all()

    index = build_index(run)
    assert {"index/index.bin", "index/manifest.json"} <= set(_listing(run))
    assert not any(".tmp-" in p for p in _listing(root))

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
