"""Shared fixtures: one local Ray instance per test module, planted graphs, data paths.

Ray settings that matter on a 2-core CI machine are exported here before Ray is imported
anywhere (see ../shared/RAY_NOTES.md): the memory monitor counts every process on a busy box
and may kill workers, and Train's health-check poll slows every report.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Serve's HAProxy ingress (pinsage-ray serve's default) binds *:8404 and *:9101 whatever the
# host; tests listen on 127.0.0.1 only, so they serve through Serve's Python proxy.
os.environ.setdefault("RAY_SERVE_ENABLE_HA_PROXY", "0")

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


def start_local_ray(**kwargs) -> None:
    """The tests' local Ray instance (2 CPUs, a 400 MiB object store, no progress bars).

    No dashboard: it starts a dozen processes and doubles Ray's start-up (4-5 s here) and no
    test asks Ray's state API (Ray Train's placement-group cleaner, which would, is left out
    without one: ``pinsage_ray.ray_utils.torch_trainer_class``). The CLI tests start Ray with
    the product's defaults in their own processes. ``kwargs`` go to ``init_ray``
    (``runtime_env`` for the S3 tests).
    """
    import ray

    from pinsage_ray.ray_utils import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2, object_store_memory=400 * 2**20, include_dashboard=False, **kwargs)
    try:
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
    except ImportError:  # pragma: no cover
        pass


@pytest.fixture(scope="session")
def local_ray_starter():
    """:func:`start_local_ray`, for fixtures that replace the local instance for a while
    (the multi-node cluster of ``tests/multinode``) and restore it afterwards."""
    return start_local_ray


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole test session (start-up costs 4-8 s).

    Tests that start actors stop them; nothing else is kept between tests.
    """
    import ray

    start_local_ray()
    yield ray
    ray.shutdown()


# --------------------------------------------------------------------------- S3 (moto)
@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory) -> str:
    """A local S3-compatible HTTP server (moto's server mode, the ``test`` extra) on
    127.0.0.1 for the rest of the session; its URL. Started by the first test that needs it
    (about 3 s); each module gets its own bucket (:func:`s3_server`)."""
    moto = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if moto is None:
        pytest.skip('moto_server not installed (pip install "pinsage-ray[test]")')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
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
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def s3_server(moto_endpoint, request):
    """A bucket of its own for this module on the moto server, with the AWS variables that
    point pyarrow's S3 filesystem (and boto3) at it set while the module runs.

    Yields ``(s3://BUCKET, env)``: Ray worker processes see ``env`` only when the driver
    passes it on (``runtime_env={"env_vars": env}``), since Ray started earlier.
    """
    import boto3

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": moto_endpoint, "AWS_EC2_METADATA_DISABLED": "true"}
    bucket = "pinsage-" + re.sub(r"[^a-z0-9]+", "-", request.module.__name__.lower()).strip("-")
    bucket = bucket[:63].rstrip("-")
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}", env
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_inputs(tmp_path_factory) -> dict[str, str]:
    """Input files of a tiny synthetic dataset (300 items, 240 groups, 4 communities, 8-d
    features) for the tests that run every stage: ``interactions`` and ``item_features``."""
    from pinsage_ray.data import SyntheticConfig, write_synthetic

    data = tmp_path_factory.mktemp("tiny") / "synth"
    write_synthetic(SyntheticConfig(num_items=300, num_groups=240, num_communities=4,
                                    feature_dim=8, seed=0), data)
    return {"interactions": str(data / "interactions.parquet"),
            "item_features": str(data / "item_features.parquet")}


@pytest.fixture(scope="session")
def tiny_train_config():
    """``config(num_workers)``: one epoch of 3 batches, the least training that runs every
    part of ``train`` (pairs, producers, Ray Train, a checkpoint, ``model/``)."""
    def config(num_workers: int = 1):
        from pinsage_ray.training import TrainConfig

        return TrainConfig.preset("paper", num_epochs=1, num_workers=num_workers, batch_size=32,
                           batches_per_epoch=3, num_shared_negatives=32, lr=3e-3,
                           val_fraction=0.1, seed=1, neighbors={"num_walks": 20, "top_t": 8})

    return config


@pytest.fixture(scope="session")
def s3_listing():
    """``listing(uri)``: the relative paths of every file below ``uri`` (any filesystem)."""
    def listing(uri: str) -> list[str]:
        import pyarrow.fs as pafs

        from pinsage_ray import _io

        fs, path = _io.resolve(uri)
        return sorted(i.path[len(path) + 1:] for i in fs.get_file_info(
            pafs.FileSelector(path, recursive=True)) if i.type == pafs.FileType.File)

    return listing


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


HELD_OUT = 12  # items removed from the graph before training (cold-start tests)


@pytest.fixture(scope="session")
def holdout(planted_dataset):
    """The planted dataset minus ``HELD_OUT`` items (their edges dropped), and those items."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from pinsage_ray.data.types import RawDataset

    inter = planted_dataset.interactions
    items = np.unique(inter.column("item").to_numpy())
    held = np.random.default_rng(5).choice(items, HELD_OUT, replace=False)
    keep = pc.invert(pc.is_in(inter.column("item"), value_set=pa.array(held)))
    feats = planted_dataset.item_features
    fkeep = pc.invert(pc.is_in(feats.column("item"), value_set=pa.array(held)))
    labels = planted_dataset.item_labels
    lkeep = pc.invert(pc.is_in(labels.column("item"), value_set=pa.array(held)))
    train = RawDataset("planted-holdout", inter.filter(keep), feats.filter(fkeep), None,
                       labels.filter(lkeep))
    return train, held


@pytest.fixture(scope="session")
def trained_run(ray_session, holdout, tmp_path_factory) -> dict:
    """A briefly trained, embedded and indexed run on the hold-out planted graph."""
    from pinsage_ray.graph import prepare
    from pinsage_ray.inference.pipeline import embed
    from pinsage_ray.recommender import build_index
    from pinsage_ray.training import TrainConfig, train

    base = tmp_path_factory.mktemp("trained")
    graph = str(base / "graph")
    prepare(holdout[0], graph)
    cfg = TrainConfig.preset("paper", num_epochs=3, num_workers=1, batch_size=64, batches_per_epoch=25,
                      num_shared_negatives=64, max_hard_negatives=2, hard_band=(0.05, 0.4),
                      lr=3e-3, seed=2, neighbors={"num_walks": 30, "top_t": 8})
    result = train(graph, base / "run", cfg)
    embed(base / "run", mode="local")
    build_index(base / "run")
    return {"graph": graph, "run": str(base / "run"), "result": result}


@pytest.fixture(scope="session")
def untrained_run():
    """``make(graph, run, *, feature_dim=None, ids=True, seed=0)``: a run directory holding a
    seeded, untrained model (K = 2, 16 hidden, 8 dims; id vectors drawn at std 0.25 as if
    trained), written by the library's ``write_model_dir`` as ``train`` leaves it; returns the
    encoder. Inference, cold start and updates must treat it like a trained one."""
    def make(graph: str, run, *, feature_dim: int | None = None, ids: bool = True,
             seed: int = 0, neighbors: dict | None = None):
        import torch

        from pinsage_ray.graph import GraphStore
        from pinsage_ray.model import ModelConfig, PinSageEncoder
        from pinsage_ray.training.checkpoint import write_model_dir
        from pinsage_ray.training.trainer import _item_ids_parquet

        store = GraphStore(graph)
        torch.manual_seed(seed)
        cfg = ModelConfig(num_items=store.num_items,
                          feature_dim=store.feature_dim if feature_dim is None else feature_dim,
                          hidden_dim=16, embedding_dim=8, num_layers=2, use_id_embedding=ids,
                          id_skip=ids)
        enc = PinSageEncoder(cfg)
        if ids:  # id vectors start at zero when items have features; trained ones do not
            torch.nn.init.normal_(enc.input_proj.id_embedding.weight, std=0.25)
        enc.eval()
        write_model_dir(str(Path(run) / "model"), enc.state_dict(), _item_ids_parquet(store), {
            "model_config": cfg.to_dict(),
            "train_config": {"neighbors": neighbors or UNTRAINED_NEIGHBORS},
            "graph_dir": graph, "epoch": 0})
        return enc

    return make


#: The importance neighbourhoods of :func:`untrained_run`'s runs (small and quick).
UNTRAINED_NEIGHBORS = {"num_walks": 20, "walk_length": 2, "restart_prob": 0.5, "top_t": 6}


@pytest.fixture(scope="session")
def serve_cli():
    """``with serve_cli(run, cwd, *flags, env=ENV) as s``: ``pinsage-ray serve RUN`` in a
    fresh process on a free 127.0.0.1 port, waited for until it prints its ``serving`` line.
    ``s`` has ``url``, ``proc``, ``lines`` (stdout) and ``errors`` (stderr); leaving the block
    sends Ctrl-C and waits for the process to stop (killed after 120 s)."""
    import contextlib
    import threading
    from types import SimpleNamespace

    @contextlib.contextmanager
    def run_cli(run, cwd, *flags: str, env: dict):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([sys.executable, "-m", "pinsage_ray.cli", "serve", str(run),
                                 "--port", str(port), *flags], cwd=cwd, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines: list[str] = []
        errors: list[str] = []
        readers = [threading.Thread(target=lambda f=f, out=out: out.extend(iter(f.readline, "")))
                   for f, out in ((proc.stdout, lines), (proc.stderr, errors))]
        for r in readers:
            r.start()
        try:
            deadline = time.monotonic() + 240
            while not any(line.startswith("serving") for line in lines):
                assert proc.poll() is None, "".join(errors)[-3000:]
                assert time.monotonic() < deadline, "no 'serving' line in 240 s"
                time.sleep(0.5)
            yield SimpleNamespace(url=f"http://127.0.0.1:{port}", proc=proc, lines=lines,
                                  errors=errors)
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for r in readers:
                r.join(timeout=10)

    return run_cli
