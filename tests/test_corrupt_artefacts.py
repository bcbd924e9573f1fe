"""Truncated and bit-flipped artefacts: a clear error naming the file, good artefacts untouched.

Unit tests (no Ray) on the small graph and run of ``benchmarks/_fault_fixtures.py``: graph
files (``.npy``, ``.parquet``, manifest), ``run_dir/model``, embeddings parts and index files.
Each damaged file must raise a ``ValueError`` subclass whose message names the file and the
command that fixes it, never a raw numpy/pyarrow/torch/hnswlib error, and what was there
before the failed command must be byte-identical afterwards.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _fault_fixtures as fx_  # noqa: E402


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return fx_.build_fixtures(tmp_path_factory.mktemp("artefacts"))


@pytest.mark.parametrize("file,damage", [
    ("item_indices.npy", fx_.truncate), ("item_weights.npy", fx_.flip_byte),
    ("group_indptr.npy", lambda p: fx_.flip_byte(p, p.stat().st_size - 20)),  # in the header
    ("item_ids.parquet", lambda p: fx_.flip_byte(p, 40)), ("manifest.json", fx_.truncate)])
def test_graph_files(fx, tmp_path, file, damage):
    from pinsage_ray.graph import GraphStore
    from pinsage_ray.graph.store import GraphFormatError

    graph = fx_.copy(fx["graph"], tmp_path / "g")
    damage(graph / file)
    with pytest.raises(GraphFormatError) as err:
        GraphStore(graph)
    assert str(graph / file) in str(err.value) and "pinsage-ray prepare" in str(err.value)


def test_large_graphs_check_sizes_on_open_headers_on_read_and_hashes_on_request(
        fx, tmp_path, monkeypatch):
    from pinsage_ray.graph import GraphStore, store
    from pinsage_ray.graph.store import GraphFormatError

    monkeypatch.setattr(store, "VERIFY_MAX_BYTES", 0)  # as if the graph were large
    graph = fx_.copy(fx["graph"], tmp_path / "g")
    path = graph / "item_indptr.npy"
    data = path.read_bytes()
    n = len(GraphStore(graph).array("item_indptr"))
    forged = data.replace(f"({n},)".encode(), f"({n - 1},)".ljust(len(f"({n},)")).encode(), 1)
    assert len(forged) == len(data)
    path.write_bytes(forged)  # a header that parses, with the wrong shape
    opened = GraphStore(graph)  # size matches: opens without hashing
    with pytest.raises(GraphFormatError, match="item_indptr.npy.*manifest says"):
        opened.array("item_indptr")
    with pytest.raises(GraphFormatError, match="item_indptr.npy: sha256"):
        GraphStore(graph, verify=True)  # `pinsage-ray inspect --verify`


@pytest.mark.parametrize("damage", [fx_.truncate, lambda p: fx_.flip_byte(p, 600)])
def test_embeddings_part_and_the_previous_index_stays(fx, tmp_path, damage):
    from pinsage_ray.inference.pipeline import EmbeddingsError, load_embeddings
    from pinsage_ray.recommender import build_index

    run = fx_.copy(fx["run"], tmp_path / "run")
    part = sorted((run / "embeddings").glob("part-*.parquet"))[0]
    damage(part)
    before = fx_.snapshot(run / "index")
    for fn in (load_embeddings, build_index):
        with pytest.raises(EmbeddingsError) as err:
            fn(run)
        assert str(part) in str(err.value) and "pinsage-ray embed" in str(err.value)
    assert fx_.snapshot(run / "index") == before


@pytest.mark.parametrize("damage", [fx_.truncate, lambda p: fx_.flip_byte(p, 100)])
def test_index_file(fx, tmp_path, damage):
    from pinsage_ray.index import IndexIntegrityError
    from pinsage_ray.recommender import Recommender

    run = fx_.copy(fx["run"], tmp_path / "run")
    damage(run / "index" / "index.bin")
    with pytest.raises(IndexIntegrityError) as err:
        Recommender.load(run)
    assert "index.bin" in str(err.value) and "pinsage-ray index" in str(err.value)


def test_index_built_from_other_embeddings(fx, tmp_path):
    """Embeddings re-written (one item fewer, manifest consistent) under an old index."""
    import json

    import pyarrow.parquet as pq

    from pinsage_ray.index import IndexIntegrityError
    from pinsage_ray.recommender import Recommender

    run = fx_.copy(fx["run"], tmp_path / "run")
    part = sorted((run / "embeddings").glob("part-*.parquet"))[0]
    pq.write_table(pq.read_table(part).slice(1), part)
    meta = run / "embeddings" / "_manifest.json"
    fx_.rehash(meta, part.name)
    doc = json.loads(meta.read_text())
    meta.write_text(json.dumps({**doc, "count": doc["count"] - 1}))
    with pytest.raises(IndexIntegrityError, match="built from other embeddings.*pinsage-ray index"):
        Recommender.load(run)


@pytest.mark.parametrize("file,damage", [("model.pt", fx_.truncate),
                                         ("model.pt", lambda p: fx_.flip_byte(p, 2000)),
                                         ("item_ids.parquet", fx_.flip_byte),
                                         ("model.json", fx_.truncate)])
def test_model_dir(fx, tmp_path, file, damage):
    from pinsage_ray.inference.model_io import load_model
    from pinsage_ray.training.checkpoint import CheckpointError

    run = fx_.copy(fx["run"], tmp_path / "run")
    damage(run / "model" / file)
    with pytest.raises(CheckpointError) as err:
        load_model(run)
    assert str(run / "model" / file) in str(err.value) and "RUN_DIR/model" in str(err.value)


def test_model_dirs_written_before_checksums_still_load(fx, tmp_path):
    import json

    import torch

    from pinsage_ray.inference.model_io import load_model

    run = fx_.copy(fx["run"], tmp_path / "run")
    meta = json.loads((run / "model" / "model.json").read_text())
    del meta["files"]
    (run / "model" / "model.json").write_text(json.dumps(meta))
    saved = torch.load(run / "model" / "model.pt", weights_only=True)
    loaded = load_model(run).encoder.state_dict()
    assert set(loaded) == set(saved) and saved
    for name, tensor in saved.items():
        assert torch.equal(loaded[name], tensor), name
