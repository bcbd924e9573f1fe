"""The benchmarks' results guard (``benchmarks/_common.py``, issue 20 item 8).

Results in ``benchmarks/results/`` must come from committed code on a quiet machine:
``guard_machine`` refuses a committed run whose 1-minute load at the start exceeds the usable
cores (unless ``--force-busy``) or whose commit is ``+dirty`` (unless ``--allow-dirty``), and
records what it allowed; ``write_results`` / ``merge_results`` refuse to write into the
committed results folder for a run that skipped it. Every benchmark script takes both flags
and calls ``guard_machine`` on ``machine_info()``'s record.

Pure logic: no Ray, no benchmark is run. ``_common.py`` is loaded from its path; the scripts
set environment variables when imported, so their parsers are exercised in a subprocess.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
SCRIPTS = sorted(BENCH.glob("bench_*.py")) + [BENCH / "tune_quality.py"]
KNOWN = {"bench_faults.py", "bench_inference.py", "bench_quality.py", "bench_scale.py",
         "bench_serve.py", "bench_train.py", "bench_walks.py", "tune_quality.py"}


def _load_common():
    spec = importlib.util.spec_from_file_location("bench_common_under_test", BENCH / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load_common()


def _machine(load: float, cores: int = 2, commit: str = "abc1234") -> dict:
    return {"cpus_usable": cores, "cpu_count": cores, "git_commit": commit,
            "load_average_start": [load, load, load]}


def _args(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    common.add_guard_args(parser)
    return parser.parse_args(list(flags))


@pytest.fixture
def results_dir(tmp_path, monkeypatch) -> Path:
    """The committed results folder, moved to a temp dir so no test can touch the real one."""
    committed = tmp_path / "results"
    monkeypatch.setattr(common, "RESULTS_DIR", committed)
    return committed


# --------------------------------------------------------------------------- busy machine
def test_busy_start_is_refused_without_force_busy():
    machine = _machine(3.6)
    with pytest.raises(SystemExit) as exit_:
        common.guard_machine(machine, _args(), committed=True)
    message = str(exit_.value.code)
    assert "3.60" in message and "2 usable cores" in message
    assert "wait for a quiet machine or pass --force-busy" in message
    assert "guard" not in machine


def test_busy_start_with_force_busy_is_recorded():
    machine = common.guard_machine(_machine(3.6), _args("--force-busy"), committed=True)
    assert machine["guard"] == {"committed": True, "load_limit": 2, "forced_busy": True,
                                "allowed_dirty": False}
    assert "--force-busy" in common.load_note(machine)


def test_quiet_start_passes_and_is_not_marked_forced():
    machine = common.guard_machine(_machine(1.9), _args("--force-busy"), committed=True)
    assert machine["guard"]["forced_busy"] is False
    assert "--force-busy" not in common.load_note(machine)


def test_scratch_run_is_never_refused_and_says_so():
    machine = common.guard_machine(_machine(9.0, commit="abc1234+dirty"), _args(),
                                   committed=False)
    assert machine["guard"] == {"committed": False, "load_limit": 2, "forced_busy": False,
                                "allowed_dirty": False}


# --------------------------------------------------------------------------- dirty tree
def test_dirty_tree_is_refused_without_allow_dirty():
    machine = _machine(0.1, commit="abc1234+dirty")
    with pytest.raises(SystemExit) as exit_:
        common.guard_machine(machine, _args(), committed=True)
    message = str(exit_.value.code)
    assert "abc1234+dirty" in message and "commit first or pass --allow-dirty" in message
    assert "guard" not in machine


def test_dirty_tree_with_allow_dirty_is_recorded():
    machine = common.guard_machine(_machine(0.1, commit="abc1234+dirty"),
                                   _args("--allow-dirty"), committed=True)
    assert machine["guard"]["allowed_dirty"] is True
    assert machine["guard"]["forced_busy"] is False
    assert "--allow-dirty" in common.load_note(machine)


def test_clean_tree_is_not_marked_dirty():
    machine = common.guard_machine(_machine(0.1), _args("--allow-dirty"), committed=True)
    assert machine["guard"]["allowed_dirty"] is False


def test_parser_without_the_flags_is_a_clear_error():
    with pytest.raises(TypeError, match="add_guard_args"):
        common.guard_machine(_machine(0.1), argparse.Namespace(), committed=True)


# --------------------------------------------------------------------------- writes
def _metrics() -> list[dict]:
    return [common.metric("x_per_s", 1.0, "1/s")]


def test_scratch_writes_need_no_guard(tmp_path, results_dir):
    path = common.write_results("probe", _metrics(), _machine(9.0), results_dir=tmp_path)
    assert json.loads(path.read_text())["metrics"][0]["name"] == "x_per_s"
    merged = common.merge_results("probe", [common.metric("y", 2.0, "s", False)],
                                  _machine(9.0), "more", {"a": 1}, results_dir=tmp_path)
    assert {m["name"] for m in json.loads(merged.read_text())["metrics"]} == {"x_per_s", "y"}
    assert not results_dir.exists()


@pytest.mark.parametrize("guard", [None, "scratch"])
def test_committed_write_without_a_committed_guard_raises(results_dir, guard):
    machine = _machine(0.1)
    if guard == "scratch":
        common.guard_machine(machine, _args(), committed=False)
    with pytest.raises(RuntimeError, match="guard_machine"):
        common.write_results("probe", _metrics(), machine)
    with pytest.raises(RuntimeError, match="guard_machine"):  # as bench_quality passes it
        common.write_results("probe", _metrics(), machine, results_dir=results_dir)
    with pytest.raises(RuntimeError, match="guard_machine"):
        common.merge_results("probe", _metrics(), machine, "more", {})
    assert not results_dir.exists()


def test_guarded_committed_write_records_the_guard(results_dir):
    machine = common.guard_machine(_machine(3.6), _args("--force-busy"), committed=True)
    path = common.write_results("probe", _metrics(), machine)
    assert path.parent == results_dir
    assert json.loads(path.read_text())["machine"]["guard"]["forced_busy"] is True


# --------------------------------------------------------------------------- every script
def test_every_benchmark_script_is_covered():
    assert KNOWN <= {p.name for p in SCRIPTS}


def test_every_script_parser_takes_the_guard_flags():
    """Each script's ``parse_args`` (in a subprocess: importing a script sets env vars)."""
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(BENCH)!r})
        out = {{}}
        for name in {[p.stem for p in SCRIPTS]!r}:
            module = __import__(name)
            argv = ["--force-busy", "--allow-dirty"] + (["p1"] if name == "tune_quality" else [])
            args = module.parse_args(argv)
            out[name] = [args.force_busy, args.allow_dirty]
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=BENCH.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got == {p.stem: [True, True] for p in SCRIPTS}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name) and n.func.id == name]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_machine_info_goes_straight_through_guard_machine(script):
    """``guard_machine(machine_info(), args, committed=...)``: no run can measure unguarded."""
    tree = ast.parse(script.read_text())
    infos = _calls(tree, "machine_info")
    assert infos, f"{script.name} never calls machine_info()"
    guarded = {id(g.args[0]) for g in _calls(tree, "guard_machine")
               if g.args and any(k.arg == "committed" for k in g.keywords)}
    assert all(id(call) in guarded for call in infos), (
        f"{script.name}: a machine_info() call is not wrapped in guard_machine(..., committed=)")
