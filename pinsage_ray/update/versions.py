"""Versions of a run's serving state, and the atomic switch between them.

A run directory after ``train``, ``embed`` and ``index`` is version 0: its graph is the
training graph (``model/model.json``'s ``graph_dir``), its artefacts are ``inference/``,
``embeddings/`` and ``index/`` of the run itself. Each ``update`` writes version ``n`` as::

    run_dir/updates/v0001/graph/                  the updated graph directory
                         inference/neighbors/     ids.npy, weights.npy, counts.npy, manifest
                         inference/layers/h{k},t{k}  every item's layer outputs
                         inference/output.npy     every item's embedding (removed included)
                         embeddings/              live items, the layout ``embed`` writes
                         index/                   the HNSW index, removed items marked deleted
                         update.json              what changed, what was recomputed, timings
    run_dir/updates/CURRENT                       {"version": "v0001"}

A version is built under ``updates/.tmp-v0001`` and renamed into place when complete, then
``CURRENT`` is replaced (write a temp file, rename: atomic on a local disk). Until that
rename every reader sees the previous version; a crash leaves at most a ``.tmp-`` directory,
which the next update removes before it starts again. A version directory has the same
layout as a run (``embeddings/``, ``index/``), so ``Recommender.load(version_dir)`` loads it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from pinsage_ray.inference.model_io import run_path

logger = logging.getLogger(__name__)

UPDATES = "updates"
CURRENT = "CURRENT"
_VERSION = re.compile(r"^v(\d{4,})$")


@dataclass(frozen=True)
class Version:
    """Where one version's artefacts live.

    Attributes:
        name: ``"v0"`` for the run itself, else ``"v0001"``...
        root: the directory holding ``embeddings/`` and ``index/``.
        graph_dir: its graph directory.
    """

    name: str
    root: str
    graph_dir: str

    @property
    def number(self) -> int:
        return 0 if self.name == "v0" else int(self.name[1:])

    @property
    def neighbors(self) -> str:
        return os.path.join(self.root, "inference", "neighbors")

    @property
    def layers(self) -> str:
        return os.path.join(self.root, "inference", "layers")

    @property
    def index(self) -> str:
        return os.path.join(self.root, "index")


def _local(run_dir: str | os.PathLike) -> Path:
    path = run_path(run_dir)
    if "://" in path:
        raise ValueError(f"run_dir={os.fspath(run_dir)!r}: updates are written to a local run "
                         "directory (an atomic rename is needed); copy the run locally first")
    return Path(path)


def version_dir(run_dir: str | os.PathLike, name: str) -> Path:
    return _local(run_dir) / UPDATES / name


def current_version(run_dir: str | os.PathLike, training_graph: str) -> Version:
    """The version readers should use: ``updates/CURRENT``'s, or the run itself (v0)."""
    root = _local(run_dir)
    pointer = root / UPDATES / CURRENT
    if not pointer.exists():
        return Version("v0", str(root), training_graph)
    try:
        name = json.loads(pointer.read_text())["version"]
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{pointer}: unreadable ({err!r}); write {{\"version\": \"vNNNN\"}} "
                         "naming a directory under updates/, or delete it to use version 0"
                         ) from None
    path = root / UPDATES / name
    if not _VERSION.match(str(name)) or not (path / "update.json").exists():
        raise ValueError(f"{pointer}: names version {name!r}, which is not a complete version "
                         f"directory under {root / UPDATES}")
    return Version(name, str(path), str(path / "graph"))


def current_root(run_dir: str | os.PathLike) -> str:
    """The directory holding the current ``embeddings/`` and ``index/`` (the run for v0)."""
    path = run_path(run_dir)
    if "://" in path or not (Path(path) / UPDATES / CURRENT).exists():
        return path
    return current_version(run_dir, "").root


def next_version_name(current: Version) -> str:
    """The version after ``current``."""
    return f"v{current.number + 1:04d}"


def fresh_temp(run_dir: str | os.PathLike, name: str, current: int) -> Path:
    """An empty ``updates/.tmp-<name>``. Left-overs of an interrupted update are removed
    first: temp directories, and versions newer than the ``current`` one (renamed into place
    but never made current: the crash came between the two renames of :func:`commit`)."""
    base = _local(run_dir) / UPDATES
    base.mkdir(parents=True, exist_ok=True)
    for stale in base.iterdir():
        m = _VERSION.match(stale.name)
        if stale.name.startswith(".tmp-") or (m and int(m.group(1)) > current):
            logger.info("removing %s, left by an interrupted update", stale)
            shutil.rmtree(stale)
    tmp = base / f".tmp-{name}"
    tmp.mkdir()
    return tmp


def commit(run_dir: str | os.PathLike, tmp: Path, name: str) -> Path:
    """Rename ``tmp`` to ``updates/<name>`` and make it current (the commit point)."""
    base = _local(run_dir) / UPDATES
    final = base / name
    os.replace(tmp, final)
    pointer_tmp = base / f".{CURRENT}.tmp"
    pointer_tmp.write_text(json.dumps({"version": name}))
    os.replace(pointer_tmp, base / CURRENT)
    logger.info("update committed: %s is current", final)
    return final


def check_keep_versions(keep: object) -> None:
    """``keep_versions`` must be an integer >= 1 (the current version counts as one)."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep_versions={keep!r}; expected an integer >= 1 (the current "
                         "version counts as one and is always kept)")


def prune(run_dir: str | os.PathLike, current: int, keep: int) -> list[str]:
    """Delete complete versions older than the ``keep`` newest (``current`` counts as one).

    The run itself (v0) is never deleted. ``keep=2`` leaves the previous version for replicas
    that have not switched yet (they hold what they serve in memory, so even a deleted
    directory does not disturb one that is mid-swap). Returns the names deleted.
    """
    check_keep_versions(keep)
    base = _local(run_dir) / UPDATES
    gone = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        m = _VERSION.match(path.name)
        if m and int(m.group(1)) <= current - keep:
            shutil.rmtree(path)
            gone.append(path.name)
    if gone:
        logger.info("removed old versions %s (keeping %d)", gone, keep)
    return gone
