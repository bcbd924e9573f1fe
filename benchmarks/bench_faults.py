#!/usr/bin/env python
"""Fault benchmark: does every bad input end in one clean error, and nothing left behind?

Scenario groups, one function each, each returning its metrics and per-case details:

* :func:`bad_inputs` (issue 12, part 3): every case of ``faults_catalogue.py`` (malformed,
  truncated and bit-flipped files, wrong types, NaN/inf, unknown ids, empty inputs,
  out-of-range flags, missing or foreign directories, a pickle payload where weights are
  expected) across ``prepare``, ``train``, ``embed``, ``index``, ``recommend`` and
  ``evaluate``, each run as a ``python -m pinsage_ray.cli`` subprocess. Clean means exit code
  2, stderr one ``pinsage-ray CMD: error: ...`` line and no traceback, the output path as it
  was before (absent, or byte-identical), and no payload run. Metrics ``bad_inputs_tried``,
  ``bad_inputs_clean``.
* :func:`injected_faults` (issue 12, part 2): every scenario of ``fault_scenarios.py`` on a
  Ray cluster of a head and two worker nodes on this machine: a walk shard's node removed
  mid-request (with and without a replacement node), a Train worker process killed and a
  Train worker's node removed mid-run, a Ray Data inference actor killed mid-pass, and the
  ``pinsage-ray train`` driver SIGKILLed mid-epoch and rerun. Each result is compared with a
  fault-free run. Metrics ``faults_injected`` (faults that hit running work),
  ``faults_survived``, ``wrong_answers`` (results differing from the fault-free run) and
  ``items_lost`` (results missing or duplicated: queries, epochs, items).

Writes ``benchmarks/results/faults.json`` and the ``faults`` section of
``benchmarks/RESULTS.md`` (``--quick``: every 4th case, written under ``.bench_cache/quick``).
``--groups`` runs some groups only and keeps the other groups' metrics and details from the
existing ``faults.json`` (each group records the commit and time it ran at).

    python benchmarks/bench_faults.py            # about 15 min on 2 busy cores
    python benchmarks/bench_faults.py --groups injected_faults   # about 6-10 min
    python benchmarks/bench_faults.py --quick --in-process
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")  # as in the tests
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "120")

import argparse  # noqa: E402
import collections  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import _fault_fixtures as fixtures  # noqa: E402
import faults_catalogue  # noqa: E402
from _common import (REPO, RESULTS_DIR, add_guard_args, guard_machine, load_note,  # noqa: E402
                     machine_info, markdown_table, metric, metrics_table, publish,
                     setup_logging)

NAME = "faults"
log = logging.getLogger("bench_faults")


def bad_inputs(workdir: Path, args: argparse.Namespace) -> tuple[list[dict], dict[str, Any]]:
    """Run the bad-input catalogue; ``(metrics, {"cases": [...]})``."""
    t0 = time.perf_counter()
    fx = fixtures.build_fixtures(workdir / "fixtures")
    log.info("fixtures built in %.1fs", time.perf_counter() - t0)
    cases = faults_catalogue.all_cases()
    if args.quick:
        cases = cases[::4]
    if args.only:
        cases = [c for c in cases if any(s in c.name for s in args.only)]
    runner: Callable = (fixtures.run_in_process if args.in_process else
                        lambda argv: fixtures.run_subprocess(argv, workdir, args.timeout))
    results = []
    for i, case in enumerate(cases):
        r = fixtures.run_case(case, fx, workdir / f"case-{i:03d}", runner)
        results.append(r)
        log.info("%-4s %-40s %s", "ok" if r["clean"] else "BAD", case.name,
                 r["verdict"] if not r["clean"] else f"{r['seconds']}s")
    clean = sum(r["clean"] for r in results)
    metrics = [metric("bad_inputs_tried", len(results), "cases"),
               metric("bad_inputs_clean", clean, "cases")]
    return metrics, {"cases": results}


def injected_faults(workdir: Path, args: argparse.Namespace
                    ) -> tuple[list[dict], dict[str, Any]]:
    """Run every fault scenario on a fresh multi-node cluster; ``(metrics, {"scenarios"})``."""
    import fault_scenarios

    outcomes = fault_scenarios.run_all(workdir)
    metrics = [
        metric("faults_injected", sum(o.injected for o in outcomes), "faults"),
        metric("faults_survived", sum(bool(o.injected and o.survived) for o in outcomes),
               "faults"),
        metric("wrong_answers", sum(o.wrong_answers for o in outcomes), "results",
               higher_is_better=False),
        metric("items_lost", sum(o.items_lost for o in outcomes), "items",
               higher_is_better=False),
    ]
    return metrics, {"scenarios": [o.to_dict() for o in outcomes]}


#: Scenario groups run by this benchmark, in order; each returns (metrics, details).
GROUPS: dict[str, Callable[[Path, argparse.Namespace], tuple[list[dict], dict[str, Any]]]] = {
    "bad_inputs": bad_inputs,
    "injected_faults": injected_faults,
}
#: The metric names each group writes (to keep the others' when only some groups run).
GROUP_METRICS = {
    "bad_inputs": ("bad_inputs_tried", "bad_inputs_clean"),
    "injected_faults": ("faults_injected", "faults_survived", "wrong_answers", "items_lost"),
}

SCENARIO_TEXT = {
    "walk_node_lost_replaced": "walk shard's node removed mid-request, replacement added",
    "walk_node_lost_no_capacity": "walk shard's node removed mid-request, no replacement",
    "train_worker_killed": "Train worker process SIGKILLed in epoch 2 (after epoch 1's "
                           "checkpoint)",
    "train_node_lost": "Train worker's node removed in epoch 2, replacement added",
    "embed_actor_killed": "Ray Data inference actor SIGKILLed mid-pass",
    "driver_killed": "`pinsage-ray train` SIGKILLed in epoch 2, same command rerun",
}


def _evidence(o: dict) -> str:
    """The one-line proof of a scenario's outcome for RESULTS.md."""
    d = o["detail"]
    if d.get("error") and not o["survived"] and o["name"] != "walk_node_lost_no_capacity":
        return f"error: {str(d['error'])[:160]}"
    if o["name"] == "walk_node_lost_replaced":
        return (f"{d['recoveries']} request retry; same answer for all 400 queries "
                f"{d['seconds_after_fault']} s after the fault")
    if o["name"] == "walk_node_lost_no_capacity":
        return (f"`{str(d['error']).split(':', 1)[0]}` naming shard 0 after "
                f"{d['error_seconds_after_fault']} s (recovery_timeout_s "
                f"{d['recovery_timeout_s']:g}); same answer once a node returned")
    if o["name"] == "embed_actor_killed":
        return (f"{d.get('unique')} of {d.get('items')} items once; max abs diff "
                f"{d.get('max_abs_diff', float('nan')):.1e} vs fault-free")
    return (f"epochs {d.get('epochs')}, {d.get('checkpoints')} checkpoints; final state "
            f"max abs diff {d.get('max_state_diff', float('nan')):.1e} vs uninterrupted")


def markdown(metrics: list[dict], machine: dict, extra: dict) -> str:
    lines = ["## Faults (`bench_faults.py`)", "",
             f"{machine['cpu_model']}, {machine['cpus_usable']} usable cores; commit "
             f"{machine['git_commit']}; {extra['total_seconds']:.0f} s "
             f"(groups run: {', '.join(extra['groups_run'])}). {load_note(machine)}", "",
             metrics_table(metrics, {"bad_inputs_tried": (40, ">= 40"),
                                     "wrong_answers": (0, "0"), "items_lost": (0, "0")}), ""]
    groups = extra["groups"]
    if "injected_faults" in groups:
        lines += _markdown_injected(groups["injected_faults"])
    if "bad_inputs" in groups:
        lines += _markdown_bad_inputs(groups["bad_inputs"])
    return "\n".join(lines)


def _markdown_injected(group: dict) -> list[str]:
    rows = [[SCENARIO_TEXT.get(o["name"], o["name"]), o["injected"],
             "yes" if o["survived"] else "**no**", o["wrong_answers"], o["items_lost"],
             f"{o['seconds']:.0f}", _evidence(o)] for o in group["scenarios"]]
    ran = group.get("ran", {})
    return [
        "### Injected faults", "",
        "On `ray.cluster_utils.Cluster`: a head with no CPUs and two worker nodes, each with "
        "its own raylet and object store, 1 CPU and one unit of `pinsage_shard` and "
        "`pinsage_trainer` (`fault_scenarios.py`; the same scenarios are the tests in "
        "`tests/multinode/test_faults.py`). Each fault hits running work; the result is "
        "compared with a fault-free run: the walk answer of 400 queries, the final model "
        "of a 2-worker, 3-epoch run (state dict within 1e-6) and its epochs, every embedded "
        f"item. Ran at commit {ran.get('git_commit', '?')}, {ran.get('started_utc', '?')}.",
        "",
        markdown_table(["fault", "injected", "survived", "wrong", "lost", "s", "evidence"],
                       rows), "",
    ]


def _markdown_bad_inputs(group: dict) -> list[str]:
    cases = group["cases"]
    by_cmd: dict[str, list[dict]] = collections.defaultdict(list)
    for r in cases:
        by_cmd[r["command"]].append(r)
    rows = [[f"`{cmd}`", len(rs), sum(r["clean"] for r in rs)] for cmd, rs in by_cmd.items()]
    bad = [r for r in cases if not r["clean"]]
    ran = group.get("ran", {})
    lines = [
        "### Bad inputs", "",
        "Each case runs `python -m pinsage_ray.cli ...` in a fresh process. Clean: exit code 2, "
        "one `pinsage-ray CMD: error: ...` line on stderr (no traceback), the output path "
        "absent or byte-identical afterwards, and no pickle payload run. Cases: "
        "`benchmarks/faults_catalogue.py`; every case's error line is in "
        f"`results/faults.json`. Ran at commit {ran.get('git_commit', '?')}, "
        f"{ran.get('started_utc', '?')}.", "",
        markdown_table(["command", "cases", "clean"], rows), "",
    ]
    if bad:
        lines.append("Not clean: " + "; ".join(f"`{r['name']}` ({r['verdict']})" for r in bad))
    else:
        lines.append("Every case was clean.")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="every 4th case; results under .bench_cache/quick")
    p.add_argument("--in-process", action="store_true",
                   help="call pinsage_ray.cli.main in this process (fast; for debugging)")
    p.add_argument("--only", nargs="+", help="only cases whose name contains one of these")
    p.add_argument("--timeout", type=float, default=300, help="seconds per case")
    p.add_argument("--workdir", help="keep the cases' files here (default: a temp dir)")
    p.add_argument("--groups", nargs="+", choices=list(GROUPS), default=list(GROUPS),
                   help="run only these groups; the others' results are kept from the "
                        "existing faults.json")
    add_guard_args(p)
    return p.parse_args(argv)


def _previous(path: Path) -> dict[str, Any]:
    """The committed results (to keep the groups not run this time), or {}."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = parse_args(argv)
    partial = bool(args.quick or args.only or args.in_process)  # scratch output
    machine = guard_machine(machine_info(), args, committed=not partial)
    t0 = time.perf_counter()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-faults-"))
    metrics: list[dict] = []
    extra: dict[str, Any] = {"args": vars(args), "groups": {}, "groups_run": args.groups}
    ran = {"git_commit": machine.get("git_commit"), "started_utc": machine.get("started_utc")}
    try:
        for name, group in GROUPS.items():
            if name not in args.groups:
                continue
            group_metrics, details = group(workdir / name, args)
            metrics += group_metrics
            extra["groups"][name] = {**details, "ran": ran}
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    extra["total_seconds"] = time.perf_counter() - t0
    if set(args.groups) != set(GROUPS) and not partial:  # keep the other groups' results
        prev = _previous(RESULTS_DIR / f"{NAME}.json")
        for name in GROUPS:
            old = prev.get("extra", {}).get("groups", {}).get(name)
            if name in args.groups or old is None:
                continue
            old.setdefault("ran", {"git_commit": prev["machine"].get("git_commit"),
                                   "started_utc": prev["machine"].get("started_utc")})
            extra["groups"][name] = old
            metrics += [m for m in prev.get("metrics", []) if m["name"] in GROUP_METRICS[name]]
        order = [n for names in GROUP_METRICS.values() for n in names]
        metrics.sort(key=lambda m: order.index(m["name"]) if m["name"] in order else 99)
    publish(NAME, metrics, machine, extra, markdown(metrics, machine, extra),
            REPO / ".bench_cache" / "quick" if partial else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
