"""S3-compatible storage in this process, against a real HTTP S3 API (issue 12, part 4).

A local moto server (``moto[server]``, the ``test`` extra; ``tests/conftest.py``: one server
per session, a bucket per module) stands in for S3; ``AWS_ENDPOINT_URL`` points pyarrow's S3
filesystem (and boto3) at it. ``tests/multinode/test_s3_multinode.py`` runs every stage through
``s3://`` URIs on the multi-node cluster (``train`` with Ray Train workers, ``embed`` with Ray
Data, on the worker nodes). This module checks, without Ray workers, what that test does not:
``prepare`` leaves no temporary prefix behind; embeddings uploaded to S3 load with their
checksums verified; ``build_index`` uploads the HNSW index (hnswlib through a local temp copy)
and ``Recommender.load`` answers as the index that was built; a rebuild replaces the index in
place; an index file corrupted on S3 is refused with an error naming it.
"""

from __future__ import annotations

import numpy as np
import pyarrow.fs as pafs
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_storage_and_index_on_s3(s3_server, s3_listing, tiny_inputs, trained_run):
    from pinsage_ray import _io
    from pinsage_ray.graph import GraphStore, prepare
    from pinsage_ray.index import IndexIntegrityError
    from pinsage_ray.inference.pipeline import load_embeddings
    from pinsage_ray.recommender import Recommender, build_index

    root, _ = s3_server
    graph, run = f"{root}/graph", f"{root}/runs/exp1"

    store = prepare(tiny_inputs["interactions"], graph,
                    item_features=tiny_inputs["item_features"])
    assert "manifest.json" in s3_listing(graph)
    assert not any(".tmp-" in p for p in s3_listing(root))  # temp prefixes cleaned up
    assert GraphStore(graph).num_items == store.num_items == 300

    # the embeddings of a run trained and embedded here, uploaded as they are
    fs, path = _io.resolve(run)
    pafs.copy_files(f"{trained_run['run']}/embeddings", _io.join(path, "embeddings"),
                    source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    ids, vectors = load_embeddings(run)
    local_ids, local_vectors = load_embeddings(trained_run["run"])
    assert ids.equals(local_ids) and np.array_equal(vectors, local_vectors)

    index = build_index(run)
    assert {"index/index.bin", "index/manifest.json"} <= set(s3_listing(run))
    assert not any(".tmp-" in p for p in s3_listing(root))

    rec = Recommender.load(run)
    assert len(rec.index) == len(ids)
    item = ids[0].as_py()
    related = rec.similar_items(item, k=5)
    assert len(related) == 5 and item not in [i for i, _ in related]
    # the same answers as the index that was built (and uploaded) in this process
    built, _ = index.query(vectors[:3], 5, exclude=[[i] for i in ids[:3].to_pylist()])
    loaded = rec.similar_items_batch(ids[:3].to_pylist(), k=5)
    assert [[i for i, _ in row] for row in loaded] == [list(r) for r in built.tolist()]

    # rebuilding replaces the index in place; a second load still verifies it
    build_index(run)
    assert len(Recommender.load(run).index) == len(ids)

    # a corrupted index file on S3 is refused with an error naming the file
    index_bin = _io.join(path, "index", "index.bin")
    with fs.open_input_file(index_bin) as f:
        blob = bytearray(f.read())
    blob[len(blob) // 2] ^= 0xFF
    with fs.open_output_stream(index_bin) as f:
        f.write(bytes(blob))
    with pytest.raises(IndexIntegrityError, match="index.bin"):
        Recommender.load(run)
