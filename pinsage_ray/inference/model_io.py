"""Reading a trained model directory (``run_dir/model``) and its run's inference artefacts.

Layout of a run directory after ``train`` and ``embed``::

    run_dir/model/               model.pt, model.json (configs, graph_dir, epoch, metrics,
                                 size + sha256 of the other two files),
                                 item_ids.parquet (contiguous id -> original id)
    run_dir/inference/neighbors/ ids.npy, weights.npy, manifest.json (walk params, seed)
    run_dir/inference/layers/    h0, t0, h1, ... one VectorStore per layer (cold start reads them)
    run_dir/embeddings/          Parquet: item (original id), embedding (list<float32>)
                                 + _manifest.json (model epoch, dim, count, seed, sha256;
                                 the underscore keeps Parquet readers from reading it)
    run_dir/index/               HNSW index (see pinsage_ray.index)
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from pinsage_ray import _io
from pinsage_ray.training.checkpoint import (MODEL_FIX, CheckpointError, load_model_state,
                                             read_meta)

logger = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A trained encoder with what is needed to use it."""

    encoder: Any  # PinSageEncoder (eval mode)
    meta: dict[str, Any]
    graph_dir: str
    run_dir: str

    @property
    def neighbor_config(self) -> dict[str, Any]:
        return self.meta["train_config"]["neighbors"]


def run_path(run_dir: str | os.PathLike, *parts: str) -> str:
    text = os.fspath(run_dir)
    base = text if "://" in text else os.path.abspath(text)
    return _io.join(base, *parts) if parts else base


def load_model(run_dir: str | os.PathLike, graph_dir: str | None = None) -> LoadedModel:
    """Load ``run_dir/model`` (the best checkpoint copied there by ``train``).

    Args:
        run_dir: a run directory from :func:`pinsage_ray.train`.
        graph_dir: override the graph directory recorded at training time (e.g. the same graph
            copied to shared storage).

    Raises:
        FileNotFoundError: no trained model in ``run_dir``.
        CheckpointError: ``model.json`` or ``model.pt`` is corrupted (size or sha256 differs
            from ``model.json``'s record), or ``model.pt`` is not a weights-only file.
    """
    from pinsage_ray.model.encoder import ModelConfig, PinSageEncoder

    fs, model_dir = _io.resolve(run_path(run_dir, "model"))
    meta_path = _io.join(model_dir, "model.json")
    if not _io.exists(fs, meta_path):
        raise FileNotFoundError(
            f"run_dir {os.fspath(run_dir)!r} has no trained model (missing model/model.json); "
            "run `pinsage-ray train GRAPH_DIR RUN_DIR` first")
    meta = read_meta(fs, meta_path, MODEL_FIX)
    try:
        encoder = PinSageEncoder(ModelConfig.from_dict(meta["model_config"]))
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{meta_path}: no valid model_config ({err!r}); {MODEL_FIX}") \
            from None
    state = load_model_state(fs, model_dir, meta)  # weights only, sizes and sha256 checked
    try:
        encoder.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(f"{_io.join(model_dir, 'model.pt')}: does not fit model.json's "
                              f"model_config ({str(err).splitlines()[0]}); {MODEL_FIX}") from None
    encoder.eval()
    return LoadedModel(encoder, meta, graph_dir or meta["graph_dir"], run_path(run_dir))


def save_neighbors(directory: str, ids: np.ndarray, weights: np.ndarray, info: dict) -> None:
    """Write the inference neighbourhood table atomically."""
    with _io.atomic_directory(directory, overwrite=True) as tmp:
        fs, _ = _io.resolve(directory)
        files = {"ids.npy": _io.write_npy(fs, _io.join(tmp, "ids.npy"), ids),
                 "weights.npy": _io.write_npy(fs, _io.join(tmp, "weights.npy"), weights)}
        _io.write_json(fs, _io.join(tmp, "manifest.json"), {**info, "files": files})


def neighbors_manifest(directory: str) -> dict | None:
    fs, path = _io.resolve(directory)
    manifest = _io.join(path, "manifest.json")
    return _io.read_json(fs, manifest) if _io.exists(fs, manifest) else None


def read_neighbor_rows(directory: str, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[start, stop)`` of the neighbourhood table (one ranged read per array)."""
    fs, path = _io.resolve(directory)
    return (_io.read_npy_rows(fs, _io.join(path, "ids.npy"), start, stop),
            _io.read_npy_rows(fs, _io.join(path, "weights.npy"), start, stop))
