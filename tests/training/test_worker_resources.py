"""Where Ray Train workers go: a share of the cluster's pinsage_trainer units (no Ray started)."""

from __future__ import annotations


def test_train_workers_request_a_share_of_pinsage_trainer(monkeypatch):
    import ray

    from pinsage_ray.training.trainer import train_worker_resources

    for units, workers, gpu, want in [
            (0, 2, False, None),
            (2, 2, False, {"CPU": 1.0, "pinsage_trainer": 1.0}),
            (1, 2, True, {"GPU": 1.0, "pinsage_trainer": 0.5}),
            (4, 3, True, {"GPU": 1.0, "pinsage_trainer": 1.0})]:
        monkeypatch.setattr(ray, "cluster_resources",
                            lambda u=units: {"CPU": 4.0, "pinsage_trainer": float(u)})
        assert train_worker_resources(workers, gpu) == want


def _node(node_id: str, head: bool = False, alive: bool = True) -> dict:
    resources = {"CPU": 0.0 if head else 4.0, f"node:10.0.0.{len(node_id)}": 1.0}
    if head:
        resources["node:__internal_head__"] = 1.0
    return {"NodeID": node_id, "Alive": alive, "Resources": resources}


def test_zero_cpu_actors_are_kept_off_the_head_when_other_nodes_are_up(monkeypatch):
    """Shards and producers reserve no CPU, so a head with ``CPU: 0`` does not keep them off:
    a label selector does, whenever the cluster has another live node."""
    import ray

    from pinsage_ray.ray_utils import off_head_options

    for nodes, want in [
            ([_node("h", head=True)], {}),                                   # one machine
            ([_node("h", head=True), _node("w1", alive=False)], {}),         # worker gone
            ([_node("h", head=True), _node("w1")],
             {"label_selector": {"ray.io/node-id": "!h"}}),
            ([_node("w1"), _node("hh", head=True), _node("w2")],
             {"label_selector": {"ray.io/node-id": "!hh"}})]:
        monkeypatch.setattr(ray, "nodes", lambda n=nodes: n)
        assert off_head_options() == want
