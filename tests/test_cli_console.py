"""What a user sees: a successful command prints the product's output, not Ray's internals.

Each command runs as a real ``pinsage-ray`` process (``python -m pinsage_ray.cli``) on the
small planted graph: ``train`` (two tiny epochs), ``embed``, ``index``, ``evaluate`` and a
tiny ``quickstart``. Their stderr may hold progress bars, step lines and one line per epoch;
it must hold no traceback and no line of Ray's (worker prefixes ``(... pid=...)``, the
placement-group cleaner, ``TrainingReport(...)`` reprs, C++ core-worker lines, Ray's logger
lines, Python warnings). Ray's lines go to ``RUN_DIR/logs/<command>.log`` instead, and
``-v`` puts them back on the terminal.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TIMEOUT_S = 600
#: Lines of Ray's (or of its libraries) that must not reach a default run's terminal.
RAY_INTERNAL = re.compile(
    r"Traceback|pid=\d|PlacementGroupCleaner|TrainingReport\(|core_worker|raylet|"
    r"Token authentication|Started a local Ray instance|Warning:|\.py:\d+|"
    r"\d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|ERROR)|ray\.(train|data|_private)")


def run_cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_memory_monitor_refresh_ms="0",
               PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "pinsage_ray.cli", *map(str, argv)],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)


def screen_lines(stderr: str) -> list[str]:
    """The lines a terminal ends up showing (progress bars redraw with carriage returns)."""
    return [part.strip() for line in stderr.splitlines() for part in line.split("\r")
            if part.strip()]


def assert_products_only(proc: subprocess.CompletedProcess, command: str) -> None:
    assert proc.returncode == 0, f"{command} failed:\n{proc.stderr[-3000:]}"
    bad = [line for line in screen_lines(proc.stderr) if RAY_INTERNAL.search(line)]
    assert not bad, f"{command}: Ray-internal lines on stderr:\n" + "\n".join(bad[:20])


@pytest.fixture(scope="module")
def pipeline(planted_graph, tmp_path_factory) -> dict:
    """train -> embed -> index -> evaluate through the CLI, each a fresh process."""
    base = tmp_path_factory.mktemp("console")
    run = base / "run"
    procs = {"train": run_cli("train", planted_graph, run, "--num-epochs", "2",
                              "--batches-per-epoch", "4", "--batch-size", "32",
                              "--num-shared-negatives", "32", "--num-workers", "1", cwd=base)}
    for command, extra in (("embed", ()), ("index", ()), ("evaluate", ("-k", "10"))):
        procs[command] = run_cli(command, run, *extra, cwd=base)
    return {"run": run, "procs": procs}


@pytest.mark.parametrize("command", ["train", "embed", "index", "evaluate"])
def test_a_successful_command_shows_no_ray_internals(pipeline, command):
    assert_products_only(pipeline["procs"][command], command)


def test_train_prints_epochs_and_a_summary_and_logs_ray_to_the_run(pipeline):
    run, proc = pipeline["run"], pipeline["procs"]["train"]
    screen = screen_lines(proc.stderr)
    for epoch in (1, 2):
        assert any(line.startswith(f"epoch {epoch}/2: loss ") for line in screen), screen
    out = proc.stdout
    assert "trained 2 epoch(s)" in out and f"model:   {run}/model" in out, out
    assert f"next: pinsage-ray embed {run}" in out, out
    log = (run / "logs" / "train.log").read_text()
    assert f"{run}/logs/train.log" in out and "Ray's worker logs in" in out, out
    assert "Started a local Ray instance" in log, log[-2000:]  # Ray's lines: in the file
    assert re.search(r"epoch 2/2: loss", log)


def test_embed_index_evaluate_summaries(pipeline):
    import json

    run, procs = pipeline["run"], pipeline["procs"]
    # the "next:" hint may go to either stream; the summary is on stdout
    assert f"next: pinsage-ray index {run}" in procs["embed"].stdout + procs["embed"].stderr
    found = re.search(r"recall@10 ([01]\.\d+) against exact search", procs["index"].stdout)
    assert found, procs["index"].stdout
    manifest = json.loads((run / "index" / "manifest.json").read_text())
    assert float(found.group(1)) == round(manifest["hnsw_recall_at_k"], 3), manifest
    assert f"next: pinsage-ray recommend {run} --item " in (procs["index"].stdout
                                                            + procs["index"].stderr)
    assert "| pinsage |" in procs["evaluate"].stdout


def test_recommend_prints_the_librarys_answers(pipeline):
    """``recommend`` for two items and a group: its stdout JSON equals ``Recommender``'s
    answers on the same run (ids in order, scores within 1e-5)."""
    import json

    from pinsage_ray.recommender import Recommender

    run = pipeline["run"]
    rec = Recommender.load(run)
    items = [rec.ids[3].item(), rec.ids[40].item()]
    group = [rec.ids[i].item() for i in (7, 8, 90)]
    proc = run_cli("recommend", run, "--item", items[0], "--item", items[1], "--group-items",
                   ",".join(map(str, group)), "-k", "6", cwd=run.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(answers) == 3, proc.stdout
    want = [("item", i, "similar", rec.similar_items(i, 6)) for i in items]
    want.append(("group_items", group, "recommended", rec.recommend_for_group(group, 6)))
    for got, (key, query, field, expected) in zip(answers, want):
        assert got[key] == query
        assert [i for i, _ in got[field]] == [i for i, _ in expected], (got, expected)
        assert np.abs(np.array([s for _, s in got[field]])
                      - np.array([s for _, s in expected])).max() < 1e-5
        assert len(got[field]) == 6


def test_quickstart_shows_steps_not_ray(tmp_path):
    proc = run_cli("quickstart", "--workdir", tmp_path / "qs", "--items", "300", "--groups",
                   "250", "--epochs", "1", "--num-shards", "1", cwd=tmp_path)
    assert_products_only(proc, "quickstart")
    screen = screen_lines(proc.stderr)
    assert "2/5 training 1 epochs (Ray Train, 1 walk shards)" in screen, screen
    assert any(line.startswith("epoch 1/1: loss ") for line in screen), screen
    assert f"logs: {tmp_path / 'qs' / 'logs' / 'quickstart.log'}" in proc.stdout, proc.stdout


def test_verbose_puts_ray_back_on_the_terminal(planted_graph, tmp_path):
    from pinsage_ray.graph import GraphStore

    item = GraphStore(planted_graph).item_ids[0].as_py()
    proc = run_cli("-v", "neighbors", planted_graph, "--item", item, "--num-shards", "1",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Started a local Ray instance" in proc.stderr, proc.stderr[-3000:]
    assert f'"item": "{item}"' in proc.stdout
