"""The update's walks on Ray walk shards (``num_shards=2``) give the in-process result: the
same neighbourhoods as a full walk over every item, the same embeddings as a full recompute;
also when a walk shard's worker process is killed as the walks start."""

from __future__ import annotations

import contextlib
import shutil

import numpy as np
import pytest

from pinsage_ray.graph import GraphStore
from pinsage_ray.sampling import LocalWalker
from pinsage_ray.update import update_run

pytestmark = pytest.mark.ray

NEIGHBORS = {"num_walks": 20, "walk_length": 2, "restart_prob": 0.5, "top_t": 6}


def test_sharded_update_equals_full_recompute(ray_session, update_base, recompute):
    day = update_base["day"]
    result = update_run(update_base["run"], day["new"], item_features=day["new_feats"],
                        remove_items=day["remove"], num_shards=2)
    version = update_base["run"] / "updates" / result.version
    n = GraphStore(version / "graph").num_items
    full = LocalWalker(str(version / "graph")).importance_neighbors(np.arange(n), seed=1234567,
                                                                    **NEIGHBORS)
    nb = version / "inference" / "neighbors"
    np.testing.assert_array_equal(np.load(nb / "ids.npy"), full.ids)
    np.testing.assert_array_equal(np.load(nb / "weights.npy"), full.weights)
    out = np.load(version / "inference" / "output.npy")
    assert np.abs(out - recompute(version, update_base["graph"], update_base["enc"])).max() <= 1e-5


def test_update_with_a_killed_walk_shard_equals_full_recompute(ray_session, update_base,
                                                                recompute, tmp_path,
                                                                monkeypatch):
    """A shard actor's process is killed right after the update's walk service starts: Ray
    restarts it (another pid), the walks complete, and the result is still the oracle's."""
    import ray

    import pinsage_ray.sampling as sampling

    run = tmp_path / "run"
    shutil.copytree(update_base["run"], run, ignore=shutil.ignore_patterns("updates"))
    real, pids = sampling.open_walker, {}

    @contextlib.contextmanager
    def killing(*args, **kwargs):
        with real(*args, **kwargs) as svc:
            pids["before"] = svc.shard_info[0]["pid"]
            ray.kill(svc.actors[0], no_restart=False)  # the worker dies; Ray restarts it
            yield svc
            pids["after"] = ray.get(svc.actors[0].info.remote())["pid"]

    monkeypatch.setattr(sampling, "open_walker", killing)
    day = update_base["day"]
    result = update_run(run, day["new"], item_features=day["new_feats"],
                        remove_items=day["remove"], num_shards=2)
    assert pids["after"] != pids["before"], pids  # the kill landed during the update
    version = run / "updates" / result.version
    out = np.load(version / "inference" / "output.npy")
    assert np.abs(out - recompute(version, update_base["graph"], update_base["enc"])).max() <= 1e-5


def test_ray_data_layer_passes_equal_the_in_process_update(ray_session, update_base, recompute,
                                                          tmp_path):
    """``mode="ray"``: the layers recomputed in Ray Data passes (chunks of 700 items, two
    actors) give the oracle's embeddings and the in-process update's layer stores and counts,
    for an update of the run itself (old outputs read from embed's Parquet parts) and a
    second update on top of it (read from the first version's ``output.npy``)."""
    import pyarrow as pa

    from pinsage_ray.inference.vectors import VectorStore

    day = update_base["day"]
    base = day["base"]
    keep = np.flatnonzero(~np.isin(base.column("item").to_numpy(), day["remove"]))
    second_day = base.take(pa.array(keep[:4])).set_column(
        base.schema.get_field_index("group"), "group", base.column("group").take(
            pa.array(keep[200:204])))  # 4 new edges between existing items and groups
    done = {}
    for mode in ("local", "ray"):
        run = tmp_path / mode
        shutil.copytree(update_base["run"], run, ignore=shutil.ignore_patterns("updates"))
        first = update_run(run, day["new"], item_features=day["new_feats"],
                           remove_items=day["remove"], mode=mode, batch_size=700, num_actors=2)
        second = update_run(run, second_day, mode=mode, batch_size=700, num_actors=2)
        done[mode] = [(run / "updates" / r.version, r) for r in (first, second)]
    for (local_dir, local), (ray_dir, ray_result) in zip(done["local"], done["ray"]):
        assert ray_result.recomputed == local.recomputed
        assert 0 < ray_result.recomputed[0] < ray_result.recomputed[-1]  # a partial update
        out = np.load(ray_dir / "inference" / "output.npy")
        oracle = recompute(ray_dir, update_base["graph"], update_base["enc"])
        assert np.abs(out - oracle).max() <= 1e-5
        n = len(out)
        for name in ("h0", "t0", "h1", "t1"):
            got = VectorStore(ray_dir / "inference" / "layers" / name, n).gather(np.arange(n))
            want = VectorStore(local_dir / "inference" / "layers" / name, n).gather(np.arange(n))
            np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)
        assert sorted(p.name for p in (ray_dir / "inference").iterdir()) == [
            "layers", "neighbors", "output.npy"]  # the passes' inputs were cleaned up
