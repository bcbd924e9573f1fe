"""Small artefacts for the fault catalogue: a graph, a run, and ways to damage copies of them.

:func:`build_fixtures` writes, in a few seconds and without Ray, what every ``pinsage-ray``
command reads: interaction and feature tables, a prepared graph, and a run directory as
``train``, ``embed`` and ``index`` leave it. The run's model is an *untrained* encoder written
by the same :func:`~pinsage_ray.training.checkpoint.write_model_dir` that ``train`` uses: bad
input handling does not depend on the weights, and skipping training keeps the catalogue fast
enough to run in CI (tests/test_bad_inputs.py) as well as in ``bench_faults.py``.

The damage helpers (:func:`truncate`, :func:`flip_byte`, :func:`pickle_payload`...) act on
files of a per-case copy, never on the shared fixtures.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def build_fixtures(root: str | os.PathLike) -> dict[str, Path]:
    """Write the shared fixtures under ``root``; returns their paths by name.

    Names: ``inter`` (interactions Parquet, int ids), ``feats`` (features Parquet),
    ``graph`` (its graph), ``graph2`` (a different graph: fewer items), ``run`` (model,
    val_pairs, inference, embeddings and index of an untrained model on ``graph``).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pinsage_ray.data.synthetic import SyntheticConfig, generate_synthetic
    from pinsage_ray.graph import prepare
    from pinsage_ray.inference.pipeline import embed
    from pinsage_ray.recommender import build_index

    root = Path(root).resolve()
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    ds = generate_synthetic(SyntheticConfig(num_items=120, num_groups=90, num_communities=4,
                                            mean_group_size=6.0, feature_dim=8, seed=3))
    pq.write_table(ds.interactions.select(["item", "group"]), data / "interactions.parquet")
    pq.write_table(ds.item_features, data / "features.parquet")
    prepare(ds, root / "graph")
    pq.write_table(ds.interactions.select(["item", "group"]).slice(0, 200), data / "small.parquet")
    prepare(data / "small.parquet", root / "graph2")
    run = root / "run"
    _write_untrained_run(root / "graph", run)
    items = ds.interactions.column("item").to_numpy()[:20]
    pq.write_table(pa.table({"query": items[:10], "positive": items[10:20]}),
                   run / "val_pairs.parquet")
    embed(run, mode="local")
    build_index(run)
    return {"inter": data / "interactions.parquet", "feats": data / "features.parquet",
            "graph": root / "graph", "graph2": root / "graph2", "run": run}


def _write_untrained_run(graph: Path, run: Path) -> None:
    """``run/model`` and ``run/run.json`` as ``train`` writes them, from an untrained encoder."""
    import pyarrow as pa
    import torch

    from pinsage_ray import _io
    from pinsage_ray.graph import GraphStore
    from pinsage_ray.model.encoder import PinSageEncoder
    from pinsage_ray.training import TrainConfig
    from pinsage_ray.training.checkpoint import write_model_dir
    from pinsage_ray.training.trainer import model_config_for

    store = GraphStore(graph)
    cfg = TrainConfig.preset("paper", hidden_dim=16, embedding_dim=16,
                             neighbors={"num_walks": 20, "top_t": 5})
    mc = model_config_for(store, cfg)
    torch.manual_seed(0)
    encoder = PinSageEncoder(mc)
    run.mkdir(parents=True, exist_ok=True)
    (run / "run.json").write_text(json.dumps({"train_config": cfg.to_dict(),
                                              "graph_dir": str(graph)}))
    write_model_dir(str(run / "model"), encoder.state_dict(),
                    _io.parquet_bytes(pa.table({"id": store.item_ids})),
                    {"model_config": mc.to_dict(), "train_config": cfg.to_dict(),
                     "graph_dir": str(graph), "epoch": 0, "metrics": {}, "pairs": {}})


# --------------------------------------------------------------------------- damage
def copy(src: Path, dst: Path) -> Path:
    """A private copy of a fixture directory to damage."""
    shutil.copytree(src, dst)
    return dst


def truncate(path: Path, fraction: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def flip_byte(path: Path, from_end: int = 8) -> Path:
    """Invert one byte ``from_end`` bytes before the end (data, not a header)."""
    data = bytearray(path.read_bytes())
    data[len(data) - from_end] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def rehash(manifest: Path, name: str, directory: Path | None = None) -> None:
    """Record ``name``'s current size and sha256 in a manifest's ``files`` (a forged
    manifest: the content is bad but the checksums agree)."""
    meta = json.loads(manifest.read_text())
    data = ((directory or manifest.parent) / name).read_bytes()
    meta["files"][name].update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    manifest.write_text(json.dumps(meta))


class _Payload:
    """Unpickling this runs ``os.makedirs(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple]:
        return (os.makedirs, (self.marker,))


def pickle_payload(path: Path, marker: Path) -> Path:
    """Write a torch file at ``path`` whose unpickling would create ``marker``."""
    import torch

    torch.save({"model": _Payload(marker)}, path)
    return path


def crafted_checkpoint(run: Path, argv_config: Any, marker: Path | None) -> Path:
    """Make ``run`` look like a run that resumes from one checkpoint (as Ray Train leaves it).

    ``argv_config`` is the TrainConfig the resuming command will use (so run.json matches);
    with ``marker`` the checkpoint's ``state.pt`` is a pickle payload (checksums forged to
    match), else a valid checkpoint truncated in half.
    """
    import torch

    from pinsage_ray.training.checkpoint import save_checkpoint

    meta = json.loads((run / "run.json").read_text())
    meta["train_config"] = argv_config.to_dict()
    (run / "run.json").write_text(json.dumps(meta, default=list))
    ckpt = run / "train" / "checkpoint_2026-01-01_00-00-00.000000"
    ckpt.mkdir(parents=True)
    state = torch.load(run / "model" / "model.pt", weights_only=True)
    save_checkpoint(str(ckpt), {"model": state, "epoch": 1, "history": [{"epoch": 1}]})
    if marker is not None:
        pickle_payload(ckpt / "state.pt", marker)
        rehash(ckpt / "state.json", "state.pt")
    else:
        truncate(ckpt / "state.pt")
    (run / "train" / "checkpoint_manager_snapshot.json").write_text(json.dumps(
        {"latest_checkpoint_result": {"checkpoint_dir_name": ckpt.name, "metrics": {}}}))
    return ckpt


# --------------------------------------------------------------------------- running a case
ERROR_LINE = re.compile(r"^pinsage-ray( [a-z]+)?: error: \S")


def snapshot(path: Path | None) -> dict[str, str] | None:
    """sha256 of every file under ``path`` (None when absent): 'untouched' means equal."""
    if path is None or not path.exists():
        return None
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def judge(rc: int, stderr: str, before: Any, after: Any, marker: Path | None) -> str:
    """'clean', or why not: exit code 2, one ``pinsage-ray CMD: error: ...`` line on stderr
    and no traceback, the output path as it was, and no payload run."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    if "Traceback" in stderr:
        return "traceback"
    if rc != 2:
        return f"exit code {rc}"
    if len(lines) != 1 or not ERROR_LINE.match(lines[0]):
        return f"stderr has {len(lines)} lines, not one error line"
    if before != after:
        return "output path changed"
    if marker is not None and marker.exists():
        return "the payload ran"
    return "clean"


def run_subprocess(argv: list[str], cwd: Path, timeout: float = 300) -> tuple[int, str]:
    """``python -m pinsage_ray.cli ARGV`` in a fresh process: (exit code, stderr)."""
    import subprocess
    import sys

    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_memory_monitor_refresh_ms": "0"}
    try:
        proc = subprocess.run([sys.executable, "-m", "pinsage_ray.cli", *argv], cwd=cwd,
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"timed out after {timeout}s"
    return proc.returncode, proc.stderr


def run_in_process(argv: list[str]) -> tuple[int, str]:
    """``pinsage_ray.cli.main(ARGV)`` here, stderr captured. An exception escaping ``main``
    is returned as a traceback (exit code 1), as the shell would show it."""
    import contextlib
    import io
    import traceback

    from pinsage_ray.cli import main

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except Exception:  # noqa: BLE001 - this is what is being measured
        return 1, err.getvalue() + traceback.format_exc()
    return rc, err.getvalue()


def run_case(case: Any, fx: dict[str, Path], tmp: Path, runner: Any) -> dict[str, Any]:
    """Build ``case`` in ``tmp``, run it with ``runner(argv)`` and judge it."""
    import time

    tmp.mkdir(parents=True, exist_ok=True)
    argv, out, marker = case.make(fx, tmp)
    argv = [str(a) for a in argv]
    before = snapshot(out)
    t0 = time.perf_counter()
    rc, stderr = runner(argv)
    verdict = judge(rc, stderr, before, snapshot(out), marker)
    lines = [line for line in stderr.splitlines() if line.strip()]
    return {"name": case.name, "command": case.command, "what": case.what,
            "clean": verdict == "clean", "verdict": verdict, "exit_code": rc,
            "error": lines[-1][:300] if lines else "", "seconds": round(time.perf_counter() - t0, 2)}
