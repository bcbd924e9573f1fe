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
