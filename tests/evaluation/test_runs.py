"""P3 on a trained run: PinSage and a baseline scored on the run's held-out pairs."""

import pytest

from pinsage_ray.evaluation.runs import evaluate_run

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_evaluate_run_p3(trained_run):
    rows = evaluate_run(trained_run["run"], ks=(10, 50), baselines=("popularity",))
    assert set(rows) == {"pinsage", "popularity"}
    for metrics in rows.values():
        assert 0.0 <= metrics["hit@10"] <= metrics["hit@50"] <= 1.0
        assert 0.0 < metrics["mrr"] <= metrics["paper_mrr"] <= 1.0
    # ~390 items: a random ranking puts the target in the top 10 about 2.6% of the time
    assert rows["pinsage"]["hit@10"] > 0.1
