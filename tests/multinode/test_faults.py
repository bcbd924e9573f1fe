"""Faults on a multi-node cluster, each survived with nothing lost (issue 12, part 2).

Each test runs one scenario of ``benchmarks/fault_scenarios.py`` (the same code that
``bench_faults.py`` counts) and checks that the fault hit the work while it ran and that the
result equals a fault-free run: the walk answer, the final model (state dict within 1e-6) with
every epoch once, every embedded item once.
"""

from __future__ import annotations

import json

import pytest

import fault_scenarios as fs

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.multinode]


def _check(outcome: fs.FaultOutcome) -> None:
    detail = json.dumps(outcome.detail, default=str)
    print(f"{outcome.name}: {outcome.seconds:.0f}s {detail}")  # shown with -rA
    assert outcome.injected == 1, f"the fault missed the work: {detail}"
    assert outcome.wrong_answers == 0 and outcome.items_lost == 0, detail
    assert outcome.survived, detail


def test_walk_node_lost_and_replaced(two_workers, planted_graph):
    out = fs.walk_node_replaced(two_workers, planted_graph)
    _check(out)
    assert out.detail["recoveries"] >= 1
    assert out.detail["replacement_node"] in out.detail["shard_nodes_after"]


def test_walk_node_lost_without_capacity(two_workers, planted_graph):
    # 5 s of waiting for the lost shard is enough to show the error comes when it should
    # (bench_faults waits the default 10 s)
    out = fs.walk_node_no_capacity(two_workers, planted_graph, recovery_s=5.0)
    _check(out)
    assert "ShardUnavailableError" in out.detail["error"]
    assert "shard 0 of 2" in out.detail["error"]


def test_train_worker_killed_resumes_to_the_same_model(two_workers, planted_graph,
                                                       reference_run, tmp_path):
    out = fs.train_worker_killed(two_workers, planted_graph, tmp_path / "run", reference_run[0])
    _check(out)
    assert out.detail["epochs"] == [1, 2, 3] and out.detail["max_state_diff"] <= 1e-6


@pytest.mark.heavy
def test_train_node_lost_resumes_to_the_same_model(two_workers, planted_graph,
                                                   reference_run, tmp_path):
    out = fs.train_node_lost(two_workers, planted_graph, tmp_path / "run", reference_run[0])
    _check(out)
    assert out.detail["epochs"] == [1, 2, 3] and out.detail["max_state_diff"] <= 1e-6


def test_embed_actor_killed_every_item_once(two_workers, reference_run, tmp_path):
    out = fs.embed_actor_killed(two_workers, reference_run[0], tmp_path)
    _check(out)
    assert out.detail["unique"] == out.detail["items"] == 400


@pytest.mark.heavy
def test_driver_killed_rerun_resumes(two_workers, planted_graph, reference_run, tmp_path):
    out = fs.driver_killed(two_workers, planted_graph, tmp_path / "run", reference_run[0],
                           tmp_path / "driver")
    _check(out)
    assert out.detail["epochs"] == [1, 2, 3] and out.detail["metrics_jsonl_epochs"] == [1, 2, 3]
