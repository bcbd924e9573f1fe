"""``build_index(partitions=P)`` on Ray tasks, and the Recommender, the CLI and the service on
the partitioned index: each answers exactly as it does on one index (exact search), and a
partition task reads only its own rows of the embeddings."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from pinsage_ray.cli import main
from pinsage_ray.index import HNSWConfig, HNSWIndex, PartitionedIndex, load_index
from pinsage_ray.inference import embeddings_io
from pinsage_ray.inference.embeddings_io import load_embeddings, read_embedding_rows
from pinsage_ray.recommender import Recommender, build_index
from pinsage_ray.serve.service import RecommenderService

pytestmark = [pytest.mark.ray]

EXACT = HNSWConfig(search="exact")


def _copy_run(trained_run: dict, dest: Path) -> str:
    dest.mkdir()
    shutil.copytree(Path(trained_run["run"]) / "embeddings", dest / "embeddings")
    return str(dest)


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory):
    """The trained run's embeddings twice: one exact index and 3 exact partitions (Ray)."""
    base = tmp_path_factory.mktemp("partitioned")
    one, part = _copy_run(trained_run, base / "one"), _copy_run(trained_run, base / "part")
    build_index(one, EXACT)
    build_index(part, EXACT, partitions=3, engine="ray")
    return {"one": one, "part": part}


def test_row_ranges_read_only_what_they_cover(trained_run):
    ids, emb = load_embeddings(trained_run["run"])
    n = len(ids)
    a_ids, a = read_embedding_rows(trained_run["run"], 5, n - 3)
    assert a_ids.to_pylist() == ids.to_pylist()[5:n - 3]
    np.testing.assert_array_equal(a, emb[5:n - 3])
    assert read_embedding_rows(trained_run["run"], 7, 7)[1].shape == (0, emb.shape[1])
    with pytest.raises(ValueError, match=rf"rows \[0, {n + 1}\) are outside the {n}"):
        read_embedding_rows(trained_run["run"], 0, n + 1)
    assert sum(r for _, r in embeddings_io.embedding_layout(trained_run["run"])["parts"]) == n


def test_ray_build_is_partitioned_and_recommends_like_one_index(runs):
    part = load_index(Path(runs["part"]) / "index")
    assert isinstance(part, PartitionedIndex) and len(part.parts) == 3
    manifest = json.loads((Path(runs["part"]) / "index" / "manifest.json").read_text())
    assert manifest["build"]["engine"] == "ray" and len(manifest["build"]["nodes"]) == 3
    a, b = Recommender.load(runs["one"]), Recommender.load(runs["part"])
    assert isinstance(a.index, HNSWIndex) and isinstance(b.index, PartitionedIndex)
    items = a.ids[::7].tolist()
    ra, rb = a.similar_items_batch(items, k=10), b.similar_items_batch(items, k=10)
    assert [[i for i, _ in row] for row in rb] == [[i for i, _ in row] for row in ra]
    np.testing.assert_allclose([[s for _, s in row] for row in rb],
                               [[s for _, s in row] for row in ra], atol=1e-5)
    group = items[:5]
    assert [i for i, _ in b.recommend_for_group(group, k=10)] == \
        [i for i, _ in a.recommend_for_group(group, k=10)]


def test_local_engine_builds_the_same_partitions(runs, tmp_path, trained_run):
    local = _copy_run(trained_run, tmp_path / "local")
    index = build_index(local, EXACT, partitions=3, engine="local")
    ray_built = load_index(Path(runs["part"]) / "index")
    assert [p.ids.tolist() for p in index.parts] == [p.ids.tolist() for p in ray_built.parts]


def test_cli_and_service_answer_from_the_partitioned_index(runs, capsys, tmp_path, trained_run):
    run = _copy_run(trained_run, tmp_path / "cli")
    assert main(["index", run, "--partitions", "2", "--search", "exact"]) == 0
    out = capsys.readouterr().out
    assert "in 2 partitions" in out and "partition 1:" in out
    item = Recommender.load(runs["one"]).ids[0].item()
    assert main(["recommend", run, "--item", str(item), "-k", "5"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    want = Recommender.load(runs["one"]).similar_items(item, 5)
    assert [i for i, _ in got["similar"]] == [i for i, _ in want]
    status, body = RecommenderService.load(runs["part"]).handle("POST", "/related",
                                                                {"item": item, "k": 5})
    assert status == 200 and [i for i, _ in body["similar"]] == [i for i, _ in want]
    # A replica's service with the partitions in their own actors: same answer, read-only.
    service = RecommenderService.load(runs["part"], partition_actors=True)
    try:
        assert service.handle("POST", "/related", {"item": item, "k": 5}) == (status, body)
        status, body = service.handle("POST", "/items", {"ids": [10**9], "features": [[0.0]]})
        assert status == 409 and "served by partition actors" in body["error"]
    finally:
        service.rec.close()


def test_replica_swaps_versions_and_ends_the_old_partition_actors(runs, tmp_path):
    """A replica serving from partition actors loads a new version of the run (`pinsage-ray
    update`) with new actors, answers from it, and ends the old version's actors."""
    import asyncio

    import ray

    from pinsage_ray.serve.replica import ReplicaCore
    from pinsage_ray.update import versions

    run = tmp_path / "run"
    shutil.copytree(runs["part"], run)
    core = ReplicaCore(str(run), watch_s=0, partition_actors=True)
    try:
        old = list(core.service.rec.index._actors)
        assert len(old) == 3 and not core.service.allow_add
        item = core.service.rec.ids[0].item()
        answer = core.service.handle("POST", "/related", {"item": item, "k": 5})
        tmp = versions.fresh_temp(run, "v0001", current=0)
        for part in ("embeddings", "index"):
            shutil.copytree(run / part, tmp / part)
        (tmp / "update.json").write_text("{}")
        versions.commit(run, tmp, "v0001")
        assert asyncio.run(core.check_for_update())
        assert core.run_dir == str(run / "updates" / "v0001")
        assert core.service.handle("POST", "/related", {"item": item, "k": 5}) == answer
        new = core.service.rec.index._actors
        assert len(new) == 3 and ray.get(new[0].node_id.remote())
        for actor in old:  # ended by the swap
            with pytest.raises(ray.exceptions.RayActorError):
                ray.get(actor.node_id.remote(), timeout=30)
    finally:
        core.service.rec.close()
