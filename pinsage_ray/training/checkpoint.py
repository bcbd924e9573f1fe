"""Training checkpoints and model directories without pickle.

A run directory lives on shared storage, and every worker that resumes a run loads its
checkpoint. ``torch.load(weights_only=False)`` unpickles, so whoever can write to the run
directory could run code on every such worker. Here nothing is unpickled:

* ``state.pt`` holds tensors and plain containers only (the encoder's, optimiser's and LR
  scheduler's state dicts) and is read with ``torch.load(weights_only=True)``;
* ``state.json`` holds everything else (epoch, metrics history, configs) and, per data file
  of the checkpoint, its size and sha256 recorded at write time.

Every file is written under a temp name and renamed into place, ``state.json`` last, so a
checkpoint without ``state.json`` was never finished. Loading checks, before torch parses
anything, that ``state.json`` is valid JSON and that each listed file exists with the
recorded size and sha256 (a truncated or bit-flipped ``state.pt`` is caught even where it
would still parse), then loads with ``weights_only=True``: a pickle payload (a class with
``__reduce__``) is refused without running. Every failure is a :class:`CheckpointError`
naming the file and what to do. Checkpoints written before ``state.json`` existed (all state
in ``state.pt``) still load, also with ``weights_only=True``.

``run_dir/model`` (what inference reads) gets the same treatment: ``model.json`` records the
size and sha256 of ``model.pt`` and ``item_ids.parquet`` (:func:`write_model_dir`,
:func:`load_model_state`).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from typing import Any

from pinsage_ray import _io

logger = logging.getLogger(__name__)

STATE_FILE = "state.pt"
META_FILE = "state.json"
#: Keys of a checkpoint's state that are tensors (state.pt); the rest goes to state.json.
TENSOR_KEYS = ("model", "optimizer", "scheduler")
SNAPSHOT_FILE = "checkpoint_manager_snapshot.json"  # Ray Train's index of a run's checkpoints


class CheckpointError(ValueError):
    """A checkpoint or model file is missing, corrupted, or not a weights-only file."""


#: What to do about a bad checkpoint, and about a bad ``run_dir/model``.
CHECKPOINT_FIX = ("restore the checkpoint from a copy, or start the run over: delete "
                  "RUN_DIR/train (or use a new run_dir) and rerun `pinsage-ray train`")
MODEL_FIX = ("restore RUN_DIR/model from a copy, or retrain into a new run_dir "
             "(`pinsage-ray train GRAPH_DIR NEW_RUN_DIR`)")


def _write_atomic(path: str, data: bytes) -> dict:
    """Write ``data`` to local ``path`` via a temp name + rename; return its size/sha256."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}


def tensor_bytes(obj: Any) -> bytes:
    """``torch.save`` of tensors / plain containers, as bytes."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def save_checkpoint(directory: str, state: dict[str, Any],
                    extra_files: dict[str, bytes] | None = None) -> None:
    """Write a checkpoint into the local ``directory``.

    Args:
        directory: an existing local directory (Ray Train copies it to storage).
        state: ``model``/``optimizer``/``scheduler`` state dicts (to ``state.pt``) and
            JSON-serialisable fields (epoch, history, configs: to ``state.json``).
        extra_files: more files to write and checksum, e.g. ``{"item_ids.parquet": b"..."}``.
    """
    tensors = {k: state[k] for k in TENSOR_KEYS if k in state}
    meta = {k: v for k, v in state.items() if k not in TENSOR_KEYS}
    files = {STATE_FILE: _write_atomic(os.path.join(directory, STATE_FILE),
                                       tensor_bytes(tensors))}
    for name, data in (extra_files or {}).items():
        files[name] = _write_atomic(os.path.join(directory, name), data)
    meta["files"] = files
    text = json.dumps(meta, indent=1, sort_keys=True, default=_io._json_default)
    _write_atomic(os.path.join(directory, META_FILE), text.encode())  # last: marks it complete


def verify_file(fs: Any, path: str, expected: dict, fix: str) -> None:
    """:func:`pinsage_ray._io.verify_file` raising :class:`CheckpointError`."""
    _io.verify_file(fs, path, expected, fix, error=CheckpointError)


def load_tensors(fs: Any, path: str, map_location: Any = "cpu", *,
                 fix: str = CHECKPOINT_FIX) -> Any:
    """``torch.load(weights_only=True)`` of ``path``; any failure is a :class:`CheckpointError`.

    A pickle payload is refused by torch's weights-only unpickler before anything runs.
    """
    import pickle

    import torch

    try:
        if isinstance(fs, _io.pafs.LocalFileSystem):
            return torch.load(path, map_location=map_location, weights_only=True)
        with fs.open_input_file(path) as f:
            return torch.load(io.BytesIO(f.read()), map_location=map_location,
                              weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[-1][:200] if str(err).strip() else ""
        raise CheckpointError(
            f"{path}: refused to load: it holds pickled Python objects, not only tensors "
            f"({first}). Nothing in it was run. Only load checkpoints written by pinsage-ray; "
            f"{fix}") from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file is missing; {fix}") from None
    except Exception as err:  # torch/miniz/unicode errors of a damaged file
        raise CheckpointError(f"{path}: cannot be read as a tensor file ({type(err).__name__}); "
                              f"it is corrupted or truncated; {fix}") from None


def read_meta(fs: Any, path: str, fix: str = CHECKPOINT_FIX) -> dict:
    """A JSON object from ``path``, or a :class:`CheckpointError` naming it."""
    try:
        meta = _io.read_json(fs, path)
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); it is corrupted; "
                              f"{fix}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: expected a JSON object; {fix}")
    return meta


def load_checkpoint(directory: str | os.PathLike, map_location: Any = "cpu", *,
                    tensors: bool = True) -> dict[str, Any]:
    """Verify and load a checkpoint written by :func:`save_checkpoint` (or an older one).

    Args:
        directory: the checkpoint directory (local path or URI).
        map_location: passed to ``torch.load``.
        tensors: False returns only the ``state.json`` fields (files still verified).

    Returns:
        The state: ``model``, ``optimizer``, ``scheduler`` (when ``tensors``) plus ``epoch``,
        ``history``, ``train_config``, ``model_config``.

    Raises:
        CheckpointError: a file is missing, truncated, corrupted, or holds pickled objects.
    """
    fs, path = _io.resolve(directory)
    meta_path, state_path = _io.join(path, META_FILE), _io.join(path, STATE_FILE)
    if not _io.exists(fs, meta_path):  # written before state.json: all state in state.pt
        if not _io.exists(fs, state_path):
            raise CheckpointError(f"{path}: no {STATE_FILE} / {META_FILE}; not a pinsage-ray "
                                  f"checkpoint; {CHECKPOINT_FIX}")
        return dict(_check_state(load_tensors(fs, state_path, map_location), state_path))
    meta = read_meta(fs, meta_path)
    files = meta.pop("files", None)
    if not isinstance(files, dict) or STATE_FILE not in files:
        raise CheckpointError(f"{meta_path}: lists no files; {CHECKPOINT_FIX}")
    for name, expected in files.items():
        verify_file(fs, _io.join(path, name), expected, CHECKPOINT_FIX)
    if not tensors:
        return meta
    state = _check_state(load_tensors(fs, state_path, map_location), state_path)
    return {**meta, **{k: state[k] for k in TENSOR_KEYS if k in state}}


def _check_state(state: Any, path: str) -> dict:
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path}: holds no model state dict; {CHECKPOINT_FIX}")
    return state


def latest_checkpoint(run_dir: str | os.PathLike) -> str | None:
    """The checkpoint Ray Train resumes ``run_dir`` from (its ``train/`` snapshot), or None."""
    fs, path = _io.resolve(run_dir)
    snap = _io.join(path, "train", SNAPSHOT_FILE)
    if not _io.exists(fs, snap):
        return None
    try:
        latest = _io.read_json(fs, snap).get("latest_checkpoint_result") or {}
    except (ValueError, UnicodeDecodeError, AttributeError) as err:
        raise CheckpointError(f"{snap}: not valid JSON ({err}); delete RUN_DIR/train to start "
                              "the run over, or use a new run_dir") from None
    name = latest.get("checkpoint_dir_name")
    return _io.join(path, "train", name) if name else None


def check_resumable(run_dir: str | os.PathLike) -> None:
    """Before training resumes ``run_dir``: load its latest checkpoint as a worker would.

    A corrupted or crafted checkpoint then fails here, once, with a :class:`CheckpointError`,
    instead of on every Ray Train worker and retry.
    """
    ckpt = latest_checkpoint(run_dir)
    if ckpt is not None:
        load_checkpoint(ckpt)
        logger.info("resuming from %s (verified)", ckpt)


def write_model_dir(model_dir: str, state_dict: dict, item_ids_parquet: bytes,
                    meta: dict[str, Any]) -> None:
    """Write ``run_dir/model`` atomically: ``model.pt`` (weights only), ``item_ids.parquet``
    and ``model.json`` (``meta`` plus each file's size and sha256)."""
    fs, _ = _io.resolve(model_dir)
    with _io.atomic_directory(model_dir, overwrite=True) as tmp:
        files = {"model.pt": _io.write_bytes(fs, _io.join(tmp, "model.pt"),
                                             tensor_bytes(state_dict)),
                 "item_ids.parquet": _io.write_bytes(fs, _io.join(tmp, "item_ids.parquet"),
                                                     item_ids_parquet)}
        _io.write_json(fs, _io.join(tmp, "model.json"), {**meta, "files": files})


def load_model_state(fs: Any, model_dir: str, meta: dict) -> dict:
    """The encoder's state dict from ``model_dir/model.pt``, verified against ``meta``.

    ``model.json`` files written before checksums existed are loaded unverified (still
    weights-only).
    """
    path = _io.join(model_dir, "model.pt")
    files = meta.get("files")
    if isinstance(files, dict):
        for name, expected in files.items():
            verify_file(fs, _io.join(model_dir, name), expected, MODEL_FIX)
    state = load_tensors(fs, path, fix=MODEL_FIX)
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no state dict; {MODEL_FIX}")
    return state
