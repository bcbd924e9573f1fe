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
* Injected faults (node loss, killed workers and actors, a killed driver; metrics
  ``faults_injected``, ``faults_survived``, ``wrong_answers``, ``items_lost``) are another
  group, to be added beside :func:`bad_inputs` and listed in :data:`GROUPS`.

Writes ``benchmarks/results/faults.json`` and the ``faults`` section of
``benchmarks/RESULTS.md`` (``--quick``: every 4th case, written under ``.bench_cache/quick``).

    python benchmarks/bench_faults.py            # about 5-10 min on 2 busy cores
    python benchmarks/bench_faults.py --quick --in-process
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse  # noqa: E402
import collections  # noqa: E402
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
from _common import (REPO, load_note, machine_info, markdown_table, metric,  # noqa: E402
                     metrics_table, publish)

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


#: Scenario groups run by this benchmark, in order; each returns (metrics, details).
GROUPS: dict[str, Callable[[Path, argparse.Namespace], tuple[list[dict], dict[str, Any]]]] = {
    "bad_inputs": bad_inputs,
}


def markdown(metrics: list[dict], machine: dict, extra: dict) -> str:
    cases = extra["groups"]["bad_inputs"]["cases"]
    by_cmd: dict[str, list[dict]] = collections.defaultdict(list)
    for r in cases:
        by_cmd[r["command"]].append(r)
    rows = [[f"`{cmd}`", len(rs), sum(r["clean"] for r in rs)] for cmd, rs in by_cmd.items()]
    bad = [r for r in cases if not r["clean"]]
    lines = [
        "## Faults: bad inputs (`bench_faults.py`)", "",
        f"{machine['cpu_model']}, {machine['cpus_usable']} usable cores; commit "
        f"{machine['git_commit']}; {extra['total_seconds']:.0f} s. {load_note(machine)}", "",
        "Each case runs `python -m pinsage_ray.cli ...` in a fresh process. Clean: exit code 2, "
        "one `pinsage-ray CMD: error: ...` line on stderr (no traceback), the output path "
        "absent or byte-identical afterwards, and no pickle payload run. Cases: "
        "`benchmarks/faults_catalogue.py`; every case's error line is in "
        "`results/faults.json`.", "",
        metrics_table(metrics, {"bad_inputs_tried": (40, ">= 40")}), "",
        markdown_table(["command", "cases", "clean"], rows), "",
    ]
    if bad:
        lines.append("Not clean: " + "; ".join(f"`{r['name']}` ({r['verdict']})" for r in bad))
    else:
        lines.append("Every case was clean.")
    lines += ["", "Injected faults (node loss, killed workers/actors/driver) are not in this "
              "benchmark yet."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="every 4th case; results under .bench_cache/quick")
    p.add_argument("--in-process", action="store_true",
                   help="call pinsage_ray.cli.main in this process (fast; for debugging)")
    p.add_argument("--only", nargs="+", help="only cases whose name contains one of these")
    p.add_argument("--timeout", type=float, default=300, help="seconds per case")
    p.add_argument("--workdir", help="keep the cases' files here (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    machine = machine_info()
    t0 = time.perf_counter()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-faults-"))
    metrics: list[dict] = []
    extra: dict[str, Any] = {"args": vars(args), "groups": {}}
    try:
        for name, group in GROUPS.items():
            group_metrics, details = group(workdir / name, args)
            metrics += group_metrics
            extra["groups"][name] = details
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    extra["total_seconds"] = time.perf_counter() - t0
    partial = args.quick or args.only or args.in_process
    publish(NAME, metrics, machine, extra, markdown(metrics, machine, extra),
            REPO / ".bench_cache" / "quick" if partial else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
