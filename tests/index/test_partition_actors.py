"""PartitionActors: a saved partitioned index served from one Ray actor per partition answers
exactly as the in-process PartitionedIndex (same ids and scores) on exact and HNSW search,
with exclusions by id and position and deleted items; it is read-only and names bad input.
The Recommender serves a partitioned run through it with ``partition_actors=True``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from pinsage_ray.index import (HNSWConfig, IndexIntegrityError, PartitionActors,
                               PartitionedIndex, load_index)

pytestmark = [pytest.mark.ray]


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, 16))
    return (centers[rng.integers(0, 20, n)] + 0.3 * rng.normal(size=(n, 16))).astype(np.float32)


@pytest.mark.parametrize("search", ["exact", "hnsw"])
def test_actors_answer_as_the_in_process_index(ray_session, tmp_path, search):
    x = _clustered(1200)
    ids = np.array([f"item-{i}" for i in range(1200)], dtype=object)
    built = PartitionedIndex.build(x, ids, 3, HNSWConfig(search=search, ef=24, recall_sample=0))
    built.mark_deleted(ids[[5, 401, 900]])
    built.save(tmp_path / "index")
    local = load_index(tmp_path / "index")
    served = PartitionActors.load(tmp_path / "index")
    try:
        assert served.num_partitions == 3 and len(served) == len(local) == 1200
        assert served.ids.tolist() == local.ids.tolist()
        assert served.deleted.tolist() == local.deleted.tolist() == [5, 401, 900]
        assert (served.ef, served.search, served.dim) == (local.ef, local.search, local.dim)
        q = x[[0, 5, 450, 1199]]
        for kwargs in ({}, {"exclude": [[ids[1]], [], list(ids[400:420]), None]},
                       {"exclude": [[0, 1], [2], [3, 800], []], "exclude_by": "position"}):
            got, want = served.query(q, 10, **kwargs), local.query(q, 10, **kwargs)
            assert got[0].tolist() == want[0].tolist()
            assert got[1].tobytes() == want[1].tobytes()
        one = served.query(x[7], 5, exclude=[ids[7]])
        assert one[0].tolist() == local.query(x[7], 5, exclude=[ids[7]])[0].tolist()
        assert served.position_of("item-450") == local.position_of("item-450") == 450
        served.ef = 50  # sent to every actor
        assert served.ef == 50
        with pytest.raises(ValueError, match="k=1198 exceeds the 1200 indexed items"):
            served.query(q, 1198)
        with pytest.raises(TypeError, match="read-only"):
            served.add_items(x[:1], ["new"])
    finally:
        served.close()


def test_damaged_partition_and_bad_arguments_are_named(ray_session, tmp_path):
    x = _clustered(300, seed=1)
    PartitionedIndex.build(x, np.arange(300), 2, HNSWConfig(search="exact")).save(
        tmp_path / "index")
    with pytest.raises(ValueError, match="num_cpus=-1"):
        PartitionActors.load(tmp_path / "index", num_cpus=-1)
    with pytest.raises(ValueError, match=r"2 partition actors need 4 CPUs, the cluster has 2"):
        PartitionActors.load(tmp_path / "index", num_cpus=2)  # would wait forever
    with pytest.raises(TimeoutError, match="not all placed and loaded within 2 s"):
        PartitionActors.load(tmp_path / "index", memory_gib=10_000, timeout_s=2)
    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "index", broken)
    (broken / "part-00001" / "manifest.json").write_text("{}")
    with pytest.raises(IndexIntegrityError, match="part-00001/manifest.json: missing or not"):
        PartitionActors.load(broken, num_cpus=0)
    swapped = tmp_path / "swapped"
    shutil.copytree(tmp_path / "index", swapped)
    ids_file = next(p for p in (swapped / "part-00001").iterdir() if "ids" in p.name)
    ids_file.write_bytes(ids_file.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(IndexIntegrityError, match="ids.npy: sha256 mismatch"):  # in the actor
        PartitionActors.load(swapped, num_cpus=0)


def test_recommender_serves_a_partitioned_run_from_actors(ray_session, trained_run, tmp_path):
    from pinsage_ray.recommender import Recommender, build_index

    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(Path(trained_run["run"]) / "embeddings", run / "embeddings")
    build_index(str(run), HNSWConfig(search="exact"), partitions=2, engine="local")
    local = Recommender.load(run)
    served = Recommender.load(run, partition_actors=True)
    try:
        assert isinstance(served.index, PartitionActors)
        assert not isinstance(served.embeddings, np.ndarray)  # the rows live in the actors
        rows = np.array([0, len(local.ids) - 1, 7, 7, len(local.ids) // 2])
        assert served.embeddings[rows].tobytes() == local.embeddings[rows].tobytes()
        item = local.ids[-1].item()
        assert served.vector(item).tobytes() == local.vector(item).tobytes()
        items = local.ids[::9].tolist()
        assert served.similar_items_batch(items, k=10) == local.similar_items_batch(items, k=10)
        assert served.recommend_for_group(items[:4], k=10) == local.recommend_for_group(items[:4],
                                                                                      k=10)
    finally:
        served.close()
    _reverse_embeddings(run)  # the same items in another order: not what the index holds
    for kwargs in ({}, {"partition_actors": True}):
        with pytest.raises(IndexIntegrityError, match="other embeddings"):
            Recommender.load(run, **kwargs)
    single = tmp_path / "single"
    single.mkdir()
    shutil.copytree(run / "embeddings", single / "embeddings")
    build_index(str(single), HNSWConfig(search="exact"))
    with pytest.raises(ValueError, match="holds one index, not a partitioned one"):
        Recommender.load(single, partition_actors=True)


def _reverse_embeddings(run: Path) -> None:
    """Rewrite each embeddings part with its rows reversed (ids and vectors, checksums
    updated), so the rows no longer follow the index's item order."""
    import json

    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from pinsage_ray import _io

    fs, folder = pafs.LocalFileSystem(), run / "embeddings"
    manifest = json.loads((folder / "_manifest.json").read_text())
    for name in manifest["files"]:
        table = pq.read_table(folder / name)
        table = table.take(np.arange(table.num_rows)[::-1])
        manifest["files"][name] = _io.write_parquet(fs, str(folder / name), table)
    _io.write_json(fs, str(folder / "_manifest.json"), manifest)
