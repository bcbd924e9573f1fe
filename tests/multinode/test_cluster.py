"""The product on a cluster of several nodes: placement by ``cluster.yaml``'s custom resources,
and the same answers as on one process (walks, training, Ray Data inference)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from pinsage_ray.sampling.local import LocalWalker
from pinsage_ray.sampling.service import ShardedGraph

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.multinode]


def _answers(walker):
    import fault_scenarios

    out = fault_scenarios.walk_answers(walker)
    q = fault_scenarios.QUERIES
    out["pairs"] = np.stack(walker.cooccurrence_pairs(q, num_walks=2, seed=8))
    out["ppr"] = walker.ppr_rank_sample(q, 0.05, 0.5, 6, num_walks=40, seed=3,
                                        avoid=(q[:, None] + 1) % 400)
    return out


def test_one_shard_per_shard_node_and_walks_equal_in_process(cluster, planted_graph):
    ref = _answers(LocalWalker(planted_graph))
    with ShardedGraph(planted_graph, 2, max_walkers=500) as svc:
        # the default placement asks for cluster.yaml's pinsage_shard: one unit per shard here
        assert svc.resources == {"pinsage_shard": 1.0}
        nodes = [info["node_id"] for info in svc.shard_info]
        assert len(set(nodes)) == 2 and set(nodes) == cluster.worker_ids()
        got = _answers(svc)
    for key, value in ref.items():
        assert np.array_equal(got[key], value), key
    # more shards than pinsage_shard units: packed evenly, still only on those nodes
    with ShardedGraph(planted_graph, 3) as svc:
        assert svc.resources == {"pinsage_shard": 0.5}
        nodes = [info["node_id"] for info in svc.shard_info]
        assert set(nodes) <= cluster.worker_ids() and cluster.head_id() not in nodes
        assert np.array_equal(svc.random_walks(np.arange(400), num_walks=2, walk_length=4,
                                               seed=5).reshape(400, -1), ref["walks"])
    # no custom resource and no CPU reserved: still never on the head (off_head_options)
    with ShardedGraph(planted_graph, 4, resources={}) as svc:
        nodes = [info["node_id"] for info in svc.shard_info]
        assert set(nodes) <= cluster.worker_ids() and cluster.head_id() not in nodes


def test_two_train_workers_on_two_nodes(cluster, reference_run):
    """``reference_run``: 2 Train workers, walks from 2 shard actors, 3 epochs."""
    _, result, nodes = reference_run
    assert [m["epoch"] for m in result.history] == [1, 2, 3]
    losses = [m["loss"] for m in result.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    assert len(nodes) == 2 and set(nodes) == cluster.worker_ids()


def test_ray_data_embed_across_nodes_equals_local(cluster, reference_run, tmp_path):
    from pinsage_ray.inference.pipeline import embed, load_embeddings

    run = tmp_path / "run"
    shutil.copytree(reference_run[0], run, ignore=shutil.ignore_patterns("train"))
    embed(run, mode="local")
    local_ids, local = load_embeddings(run)
    # 4 batches per pass; the read tasks run on one node, the pool actor on the other (one
    # actor: two, at 0.5 CPU on each 1-CPU node, would leave no whole CPU for a read task)
    res = embed(run, mode="ray", batch_size=100, num_actors=1)
    assert res.mode == "ray"
    ids, emb = load_embeddings(run)
    assert ids.equals(local_ids) and len(set(ids.to_pylist())) == 400
    assert np.abs(emb - local).max() < 1e-5
    # the pool actor wrote one embeddings part per 100 items (nothing concatenated here)
    assert sorted(p.name for p in (run / "embeddings").glob("part-*.parquet")) == \
        [f"part-{c:05d}.parquet" for c in range(4)]


def test_partitioned_index_built_on_the_worker_nodes(cluster, reference_run, tmp_path):
    """``build_index(partitions=2)``: one Ray task per partition, each reading its own rows,
    spread over the nodes; the fan-out answers equal exact search over every embedding, and
    so do partition actors (one per node)."""
    import json

    from pinsage_ray.index import HNSWConfig, exact_topk
    from pinsage_ray.inference.pipeline import embed, load_embeddings
    from pinsage_ray.recommender import Recommender, build_index

    run = tmp_path / "run"
    shutil.copytree(reference_run[0], run, ignore=shutil.ignore_patterns("train"))
    embed(run, mode="ray", batch_size=100, num_actors=1)
    build_index(run, HNSWConfig(search="exact"), partitions=2, engine="ray")
    build = json.loads((run / "index" / "manifest.json").read_text())["build"]
    assert set(build["nodes"]) <= cluster.worker_ids() and len(build["nodes"]) == 2
    ids, emb = load_embeddings(run)
    rec = Recommender.load(run)
    got = rec.similar_items_batch(ids.to_pylist()[:50], k=5)
    truth, _ = exact_topk(emb[:50], emb, 6, "cosine")
    for row, t, own in zip(got, truth, ids.to_pylist()[:50]):
        want = [ids[int(j)].as_py() for j in t if ids[int(j)].as_py() != own][:5]
        assert [i for i, _ in row] == want
    # Served from one actor per partition: the same answers.
    served = Recommender.load(run, partition_actors=True)
    try:
        # SPREAD is Ray's best effort (0-CPU actors may share a node): where they run, not
        # how many nodes, is what can be asserted.
        assert set(served.index.nodes) <= cluster.worker_ids() | {cluster.head_id()}
        assert served.similar_items_batch(ids.to_pylist()[:50], k=5) == got
    finally:
        served.close()


def test_update_on_the_worker_nodes_equals_the_local_update(cluster, reference_run,
                                                            planted_dataset, tmp_path):
    """``update_run(num_shards=2, mode="ray")`` on the cluster (walk shards and Ray Data layer
    actors can only run on the worker nodes: the head has no CPU) gives the in-process
    update's neighbourhoods, embeddings and counts: new edges, a new item, a removed item."""
    import pyarrow as pa

    from pinsage_ray.inference.pipeline import embed
    from pinsage_ray.recommender import build_index
    from pinsage_ray.update import update_run

    inter, feats = planted_dataset.interactions, planted_dataset.item_features
    item_col, group_col = inter.schema.get_field_index("item"), inter.schema.get_field_index("group")
    new_item = pa.array([10**6] * 2, type=inter.schema.field("item").type)
    day = pa.concat_tables([
        inter.slice(0, 6).set_column(group_col, "group", inter.column("group").slice(100, 6)),
        inter.slice(10, 2).set_column(item_col, "item", new_item)])
    new_feats = feats.slice(0, 1).set_column(feats.schema.get_field_index("item"), "item",
                                             new_item.slice(0, 1))
    touched = set(day.column("item").to_pylist())
    removed = next(i for i in inter.column("item").to_pylist()[300:] if i not in touched)
    base = tmp_path / "base"
    shutil.copytree(reference_run[0], base, ignore=shutil.ignore_patterns("train"))
    embed(base, mode="local")
    build_index(base)
    out = {}
    for mode, shards in (("local", 0), ("ray", 2)):
        run = tmp_path / mode
        shutil.copytree(base, run)
        res = update_run(run, day, item_features=new_feats, remove_items=[removed],
                         num_shards=shards, mode=mode, batch_size=100, num_actors=1)
        version = run / "updates" / res.version
        out[mode] = (res, np.load(version / "inference" / "output.npy"),
                     np.load(version / "inference" / "neighbors" / "ids.npy"))
    (local, local_emb, local_nb), (ray_res, ray_emb, ray_nb) = out["local"], out["ray"]
    assert ray_res.recomputed == local.recomputed and ray_res.new_items == 1
    assert ray_res.affected_items == local.affected_items
    np.testing.assert_array_equal(ray_nb, local_nb)
    assert np.abs(ray_emb - local_emb).max() <= 1e-5
