"""Helpers shared by the benchmark scripts in this folder (plain Python, no test framework).

Every benchmark does the same five things: records what machine it ran on (and how busy that
machine was), refuses to measure for the committed results on a busy machine or from
uncommitted code (:func:`guard_machine`; ``--force-busy`` / ``--allow-dirty`` override it and
the JSON says so), times a function a few times and keeps the median, writes its numbers to
``benchmarks/results/NAME.json`` and refreshes its own section of ``benchmarks/RESULTS.md``.

Import it from a script in this folder with ``from _common import ...`` (Python puts the
script's folder first on ``sys.path``).

JSON written by :func:`write_results`::

    {"benchmark": NAME,
     "machine": {...},                       # machine_info(), guard and load_average_end
     "metrics": [{"name", "value", "unit", "higher_is_better"}, ...],
     "extra": {...}}                         # optional: settings, raw repeats, notes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RESULTS_MD = BENCH_DIR / "RESULTS.md"

RESULTS_MD_HEADER = """# Benchmark results

Numbers from the scripts in this folder (see [README.md](README.md)), each on the machine
named in its section. Every section is rewritten by its script's latest run; the raw numbers
(every repeat, settings, machine) are in `results/NAME.json`.
"""


# --------------------------------------------------------------------------- machine
def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, check=True,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        # Results written by an earlier benchmark in the same session are not code: a
        # changed results/ or RESULTS.md does not make the measured commit dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!benchmarks/results", ":!benchmarks/RESULTS.md"],
                               cwd=REPO, check=True, capture_output=True, text=True,
                               timeout=10).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity; all of them where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """What the benchmark runs on; call it at the start (records the starting load average),
    then :func:`guard_machine`.

    :func:`write_results` adds ``load_average_end``. Package versions come from the installed
    distributions' metadata, so nothing (torch, Ray) is imported here.
    """
    mem = _mem_total_bytes()
    return {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable_cores(),
        "memory_total_gib": round(mem / 2**30, 1) if mem else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "torch": _version("torch"),
        "ray": _version("ray"),
        "pinsage_ray": _version("pinsage-ray"),
        "git_commit": _git_commit(),
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
        "_jiffies_start": _cpu_jiffies(),
        "threads_env": {k: os.environ.get(k) for k in
                        ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")},
    }


# --------------------------------------------------------------------------- guard
def add_guard_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--force-busy`` and ``--allow-dirty`` (read by :func:`guard_machine`)."""
    parser.add_argument("--force-busy", action="store_true",
                        help="write results even though the 1-minute load average at the start "
                             "exceeded the usable core count; the JSON records it")
    parser.add_argument("--allow-dirty", action="store_true",
                        help="write results from a working tree with uncommitted changes; the "
                             "JSON records it")


def guard_machine(machine: dict[str, Any], args: argparse.Namespace, *,
                  committed: bool) -> dict[str, Any]:
    """Check, before any work, that a run meant for the committed results is worth keeping.

    Call it right after :func:`machine_info`. With ``committed`` (the run will write
    ``results/NAME.json`` and RESULTS.md, not scratch output) it exits when the 1-minute load
    average at the start exceeds the usable cores (unless ``args.force_busy``) or when the
    commit is ``+dirty`` (unless ``args.allow_dirty``). It always records
    ``machine["guard"]``, which :func:`write_results` and :func:`merge_results` require before
    writing into ``RESULTS_DIR``. Returns ``machine``.
    """
    for flag in ("force_busy", "allow_dirty"):
        if not hasattr(args, flag):
            raise TypeError(f"args has no {flag!r}: call add_guard_args(parser) on the "
                            "script's parser")
    cores = machine.get("cpus_usable") or machine.get("cpu_count") or 1
    load = machine.get("load_average_start")
    busy = bool(load) and load[0] > cores
    dirty = str(machine.get("git_commit") or "").endswith("+dirty")
    if committed and busy and not args.force_busy:
        sys.exit(f"refusing to measure for benchmarks/results: 1-min load average {load[0]:.2f} "
                 f"at the start exceeds the {cores} usable cores; wait for a quiet machine or "
                 "pass --force-busy")
    if committed and dirty and not args.allow_dirty:
        sys.exit(f"refusing to measure for benchmarks/results: commit "
                 f"{machine.get('git_commit')} has uncommitted changes; commit first or pass "
                 "--allow-dirty")
    machine["guard"] = {"committed": bool(committed), "load_limit": cores,
                        "forced_busy": busy and bool(args.force_busy),
                        "allowed_dirty": dirty and bool(args.allow_dirty)}
    return machine


def _check_guarded(machine: dict[str, Any], target_dir: Path) -> None:
    """Refuse a write into the committed ``RESULTS_DIR`` from a run that skipped the guard."""
    if target_dir.resolve() != RESULTS_DIR.resolve():
        return  # scratch output: --quick runs and tests
    guard = machine.get("guard")
    if not guard or not guard.get("committed"):
        raise RuntimeError(
            f"machine has guard={guard!r}: before writing into {RESULTS_DIR}, call "
            "guard_machine(machine, args, committed=True) right after machine_info() (or "
            "write scratch output with results_dir=...)")


def finish_machine(machine: dict[str, Any]) -> dict[str, Any]:
    """Add the end-of-run load average, the machine's CPU use over the run (this process
    included) and the end time. Idempotent: keeps the first call's values."""
    machine.setdefault("load_average_end", load_average())
    start, end = machine.pop("_jiffies_start", None), _cpu_jiffies()
    if start and end and end[1] > start[1]:
        machine["cpu_busy_fraction_during_run"] = round((end[0] - start[0]) / (end[1] - start[1]), 3)
    machine.setdefault("finished_utc", datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return machine


def load_note(machine: dict[str, Any]) -> str:
    """One sentence on how busy the machine was (from the recorded load averages)."""
    start, end = machine.get("load_average_start"), machine.get("load_average_end")
    cores = machine.get("cpus_usable") or machine.get("cpu_count") or 1
    if not start:
        return "Load average not available on this OS."
    parts = [f"load average (1/5/15 min) {'/'.join(f'{x:.2f}' for x in start)} at the start"]
    if end:
        parts.append(f"{'/'.join(f'{x:.2f}' for x in end)} at the end")
    worst = max(start[0], end[0] if end else 0.0)
    if worst < 0.25 * cores:
        state = "the machine was otherwise close to idle"
    elif worst < 0.75 * cores:
        state = "other work was running, taking part of the machine"
    else:
        state = (f"the machine was busy (1-min load {worst:.2f} on {cores} cores, this run "
                 "included), so timings are likely pessimistic")
    busy = machine.get("cpu_busy_fraction_during_run")
    tail = (f" Over the run the machine's CPUs were {busy:.0%} busy (all processes, this "
            "benchmark included)." if busy is not None else "")
    guard = machine.get("guard") or {}
    if guard.get("forced_busy"):
        tail += (f" Run with `--force-busy`: the 1-min load at the start exceeded the "
                 f"{guard.get('load_limit')} usable cores.")
    if guard.get("allowed_dirty"):
        tail += (f" Run with `--allow-dirty`: commit {machine.get('git_commit')} had "
                 "uncommitted changes.")
    return f"{', '.join(parts)}; {state}.{tail}"


def peak_rss_bytes() -> dict[str, int]:
    """Peak resident memory of this process and of its finished children (bytes, Linux)."""
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss is KiB on Linux
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale,
            "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * scale}


# --------------------------------------------------------------------------- logging
def setup_logging() -> None:
    """INFO lines with a clock to stderr: every benchmark logs its progress the same way."""
    import logging

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")


# --------------------------------------------------------------------------- timing
def median_of(fn: Callable[[], Any], repeats: int = 3, *,
              warmup: int = 0) -> tuple[float, list[float]]:
    """Wall-clock seconds of ``fn()``: ``(median, all repeats)`` after ``warmup`` untimed calls."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats}; expected >= 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def metric(name: str, value: float, unit: str, higher_is_better: bool = True) -> dict[str, Any]:
    """One entry of the ``metrics`` list."""
    v = float(value)
    return {"name": name, "value": v if math.isfinite(v) else None, "unit": unit,
            "higher_is_better": bool(higher_is_better)}


# --------------------------------------------------------------------------- output
def _atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_results(name: str, metrics: Iterable[dict[str, Any]], machine: dict[str, Any],
                  extra: dict[str, Any] | None = None, *,
                  results_dir: Path | None = None) -> Path:
    """Write ``results/NAME.json`` atomically (temp file + rename); return its path.

    Into the committed ``RESULTS_DIR`` only when ``machine`` passed :func:`guard_machine`
    (RuntimeError otherwise); a scratch ``results_dir`` needs no guard.
    """
    target = results_dir or RESULTS_DIR
    _check_guarded(machine, target)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"benchmark name {name!r}: use letters, digits, '_', '.', '-'")
    metrics = list(metrics)
    for m in metrics:
        missing = {"name", "value", "unit", "higher_is_better"} - set(m)
        if missing:
            raise ValueError(f"metric {m!r} lacks {sorted(missing)}; build it with metric()")
    doc: dict[str, Any] = {"benchmark": name, "machine": finish_machine(machine),
                           "metrics": metrics}
    if extra is not None:
        doc["extra"] = extra
    path = target / f"{name}.json"
    _atomic_write_text(path, json.dumps(doc, indent=2, default=_json_default) + "\n")
    return path


def merge_results(name: str, metrics: Iterable[dict[str, Any]], machine: dict[str, Any],
                  extra_key: str, extra: dict[str, Any], *,
                  results_dir: Path | None = None) -> Path:
    """Add (or replace, by name) ``metrics`` in an existing ``results/NAME.json`` and put
    ``extra`` under ``extra[extra_key]`` with its own machine record; the file's other
    metrics, extras and machine are kept (a second script contributing to one benchmark).
    Like :func:`write_results`, it needs a guarded ``machine`` for ``RESULTS_DIR``."""
    target = results_dir or RESULTS_DIR
    _check_guarded(machine, target)
    path = target / f"{name}.json"
    doc = json.loads(path.read_text()) if path.exists() else {"benchmark": name, "metrics": []}
    new = list(metrics)
    names = {m["name"] for m in new}
    doc["metrics"] = [m for m in doc.get("metrics", []) if m["name"] not in names] + new
    doc.setdefault("machine", finish_machine(dict(machine)))
    doc.setdefault("extra", {})[extra_key] = {**extra, "machine": finish_machine(machine)}
    _atomic_write_text(path, json.dumps(doc, indent=2, default=_json_default) + "\n")
    return path


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def update_results_md(name: str, markdown_section: str, *, path: Path | None = None) -> Path:
    """Replace (or append) the section between ``<!-- BEGIN NAME -->`` and ``<!-- END NAME -->``.

    The file is created with a short header when missing; other sections are left untouched.
    """
    path = path or RESULTS_MD
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{markdown_section.strip()}\n{end}"
    text = path.read_text() if path.exists() else RESULTS_MD_HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    _atomic_write_text(path, text if text.endswith("\n") else text + "\n")
    return path


def fmt_value(value: float | None, unit: str = "") -> str:
    """Human-readable number: 12.3M, 45.6k, 0.512."""
    if value is None:
        return "n/a"
    a = abs(value)
    if unit == "ratio" or a < 1000:
        return f"{value:.3g}"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{value / div:.3g}{suffix}"
    return f"{value:.3g}"


def markdown_table(headers: list[str], rows: Iterable[Iterable[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |",
             "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(metrics: Iterable[dict[str, Any]],
                  targets: dict[str, tuple[float, str]] | None = None) -> str:
    """Markdown table ``metric | value | unit | target | met?``.

    ``targets`` maps a metric name to ``(threshold, text)``; met means value >= threshold for
    higher-is-better metrics and value <= threshold otherwise.
    """
    targets = targets or {}
    rows = []
    for m in metrics:
        target, met = "-", "-"
        if m["name"] in targets:
            threshold, text = targets[m["name"]]
            target = text
            if m["value"] is None:
                met = "n/a"
            else:
                ok = m["value"] >= threshold if m["higher_is_better"] else m["value"] <= threshold
                met = "yes" if ok else "**no**"
        rows.append([f"`{m['name']}`", fmt_value(m["value"], m["unit"]), m["unit"], target, met])
    return markdown_table(["metric", "value", "unit", "target", "met?"], rows)


def publish(name: str, metrics: list[dict[str, Any]], machine: dict[str, Any],
            extra: dict[str, Any], markdown_section: str,
            scratch_dir: Path | None = None) -> None:
    """Write results JSON + RESULTS.md section and print them.

    With ``scratch_dir`` (quick or partial runs) both go there, never over the committed
    results.
    """
    if scratch_dir is not None:
        json_path = write_results(name, metrics, machine, extra, results_dir=scratch_dir)
        md_path = update_results_md(name, markdown_section, path=scratch_dir / "RESULTS.md")
    else:
        json_path = write_results(name, metrics, machine, extra)
        md_path = update_results_md(name, markdown_section)
    print(markdown_section)
    print(f"\nwrote {json_path} and {md_path} in {extra['total_seconds']:.0f} s")
    width = max((len(m["name"]) for m in metrics), default=10) + 2
    for m in metrics:
        print(f"{m['name']:<{width}} {fmt_value(m['value'], m['unit']):>10} {m['unit']}")
