"""An update's layer passes through Ray Data (``update_run(mode="ray")``).

The same recomputation as :func:`pinsage_ray.update.layers.update_layers` (layer ``k`` only
for the items of ``C_k``, every other row read from the base version's stored outputs), run
as ``embed --mode ray`` runs inference: ``K + 1`` Ray Data passes whose actors each take a
chunk of item ids ``[c * chunk, (c + 1) * chunk)`` and write that chunk's rows of ``h_k`` and
``t_k`` as parts of the new version's layer stores (:mod:`pinsage_ray.inference.vectors`), so
no process holds a whole layer. In a chunk, the rows of ``C_k`` are computed with the
per-layer functions of :mod:`pinsage_ray.inference.layerwise` (the pass reads the new
version's layer ``k - 1``, written by the previous pass), the other rows are copied from the
base version's layer ``k``: each version stays self-contained. The last pass writes the
output rows the same way (store ``out``), which the driver gathers for the index step.

What the actors read comes from the version's temp directory: the new graph and
neighbourhoods, plus two arrays the driver writes there (``update_change.npy``, int8
``(K + 1, N)`` the masks ``C_0..C_K``; ``update_node_ids.npy``, each item's id for the
model, :func:`pinsage_ray.update.layers.node_ids`), deleted once the passes are done. The
run directory must be on a filesystem every node of the cluster reads (as for the update's
walk shards).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

import numpy as np

from pinsage_ray.graph.store import GraphStore
from pinsage_ray.inference import layerwise
from pinsage_ray.inference.embeddings_io import read_embedding_rows
from pinsage_ray.inference.model_io import load_model, read_neighbor_rows
from pinsage_ray.inference.vectors import VectorStore, write_part

logger = logging.getLogger(__name__)

CHANGE_FILE, IDS_FILE = "update_change.npy", "update_node_ids.npy"


class _UpdateLayerPass:
    """Layer ``layer`` of an update for one chunk of item ids (a Ray Data actor).

    Args:
        run_dir: the run (its trained model).
        version_dir: the new version's (temp) directory.
        base_root: the base version's directory (the run itself for version 0).
        base_layers: the base version's layer stores (``inference/layers``).
        layer: 0..K; K is the output layer.
        chunk_size: items per chunk; n_old: items of the base version.
    """

    def __init__(self, run_dir: str, version_dir: str, base_root: str, base_layers: str,
                 layer: int, chunk_size: int, n_old: int) -> None:
        import torch

        torch.set_num_threads(1)
        self.encoder = load_model(run_dir).encoder
        self.layer, self.chunk_size, self.n_old = layer, chunk_size, n_old
        self.num_layers = self.encoder.num_layers
        self.graph = GraphStore(os.path.join(version_dir, "graph"))
        self.n = self.graph.num_items
        inf = os.path.join(version_dir, "inference")
        self.change = np.load(os.path.join(inf, CHANGE_FILE), mmap_mode="r")[layer]
        self.node_ids = np.load(os.path.join(inf, IDS_FILE), mmap_mode="r")
        self.nb_dir = os.path.join(inf, "neighbors")
        self.layers_dir = os.path.join(inf, "layers")
        if layer > 0:  # the previous pass's output: every row of the new version
            self.h_prev = VectorStore(os.path.join(self.layers_dir, f"h{layer - 1}"), self.n)
            self.t_prev = VectorStore(os.path.join(self.layers_dir, f"t{layer - 1}"), self.n)
        if layer < self.num_layers:
            self.base_h = VectorStore(os.path.join(base_layers, f"h{layer}"), n_old)
            self.base_t = VectorStore(os.path.join(base_layers, f"t{layer}"), n_old)
        self.base_root = base_root
        self.base_output = os.path.join(base_root, "inference", "output.npy")

    def _old_output(self, ids: np.ndarray) -> np.ndarray:
        """Stored embeddings of ``ids`` (all < n_old), from the base version."""
        lo, hi = int(ids.min()), int(ids.max()) + 1
        if os.path.exists(self.base_output):  # an update version: every item, id order
            rows = np.load(self.base_output, mmap_mode="r")[lo:hi]
        else:  # the run itself: embed's Parquet parts, checked to be in id order
            got, rows = read_embedding_rows(self.base_root, lo, hi)
            want = self.graph.item_ids.slice(lo, hi - lo)
            if got.to_pylist() != want.to_pylist():
                raise ValueError(f"{self.base_root}/embeddings: rows [{lo}, {hi}) are not the "
                                 "graph's items in id order; re-run `pinsage-ray embed "
                                 f"{self.base_root}` before updating")
        return np.asarray(rows[ids - lo], dtype=np.float32)

    def _conv(self, rows: np.ndarray) -> np.ndarray:
        lo, hi = int(rows.min()), int(rows.max()) + 1
        nb_ids, nb_w = read_neighbor_rows(self.nb_dir, lo, hi)
        nb_ids, nb_w = nb_ids[rows - lo], nb_w[rows - lo]
        return layerwise.conv_layer_rows(self.encoder, self.layer - 1, self.h_prev.gather(rows),
                                         self.t_prev.gather(np.maximum(nb_ids, 0)), nb_ids, nb_w)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        (chunk,) = np.asarray(batch["id"], dtype=np.int64)  # batch_size=1: one chunk
        ids = np.arange(chunk * self.chunk_size, min((chunk + 1) * self.chunk_size, self.n),
                        dtype=np.int64)
        changed = np.asarray(self.change[ids[0]:ids[-1] + 1], dtype=bool)
        rows, kept = ids[changed], ids[~changed]
        if len(kept) and kept[-1] >= self.n_old:
            raise RuntimeError(f"layer {self.layer}: new item {int(kept[-1])} is not in the "
                               "change set; rerun the update")
        if self.layer == self.num_layers:
            out = np.zeros((len(ids), self.encoder.config.embedding_dim), dtype=np.float32)
            if len(rows):
                out[changed] = layerwise.output_layer_rows(self.encoder, self._conv(rows),
                                                           self.node_ids[rows])
            if len(kept):
                out[~changed] = self._old_output(kept)
            write_part(os.path.join(self.layers_dir, "out"), ids, out)
            return {"chunk": [int(chunk)], "computed": [len(rows)]}
        if self.layer == 0:
            h_new = np.zeros((0, 0), np.float32)
            if len(rows):
                lo, hi = int(rows[0]), int(rows[-1]) + 1
                deg = np.diff(self.graph.array_rows("item_indptr", lo, hi + 1))[rows - lo]
                feats = (self.graph.array_rows("item_features", lo, hi)[rows - lo]
                         if self.graph.feature_dim else None)
                h_new = layerwise.input_layer_rows(self.encoder, self.node_ids[rows], feats,
                                                   np.log1p(deg.astype(np.float32)))
        else:
            h_new = self._conv(rows) if len(rows) else np.zeros((0, 0), np.float32)
        h = np.zeros((len(ids), self.base_h.dim), dtype=np.float32)
        t = np.zeros((len(ids), self.base_t.dim), dtype=np.float32)
        if len(rows):
            h[changed] = h_new
            t[changed] = layerwise.transform_rows(self.encoder, self.layer, h_new)
        if len(kept):
            h[~changed], t[~changed] = self.base_h.gather(kept), self.base_t.gather(kept)
        write_part(os.path.join(self.layers_dir, f"h{self.layer}"), ids, h)
        write_part(os.path.join(self.layers_dir, f"t{self.layer}"), ids, t)
        return {"chunk": [int(chunk)], "computed": [len(rows)]}


def update_layers_ray(run_dir: str, version_dir: str, base_root: str, base_layers: str,
                      change: list[np.ndarray], node_ids: np.ndarray, n_old: int, *,
                      batch_size: int = 8192, num_actors: int = 1) -> tuple[np.ndarray, list[int]]:
    """Run the ``K + 1`` passes; returns (every item's embedding, rows recomputed per layer).

    Leaves ``version_dir/inference/layers/h{k}``, ``t{k}`` for ``k < K`` (every row).
    """
    import ray
    import ray.data

    from pinsage_ray.inference.pipeline import _check_once
    from pinsage_ray.ray_utils import init_ray, ray_console_on

    init_ray()
    if not ray_console_on():
        ray.data.DataContext.get_current().enable_progress_bars = False
    n = len(node_ids)
    inf = os.path.join(version_dir, "inference")
    layers_dir = os.path.join(inf, "layers")
    shutil.rmtree(layers_dir, ignore_errors=True)  # a retried update starts clean
    np.save(os.path.join(inf, CHANGE_FILE), np.stack(change).astype(np.int8))
    np.save(os.path.join(inf, IDS_FILE), np.asarray(node_ids, dtype=np.int64))
    chunks = -(-n // batch_size)
    kwargs = {"run_dir": run_dir, "version_dir": version_dir, "base_root": base_root,
              "base_layers": base_layers, "chunk_size": batch_size, "n_old": n_old}
    recomputed = []
    for layer in range(len(change)):
        ds = ray.data.range(chunks).map_batches(
            _UpdateLayerPass, fn_constructor_kwargs={**kwargs, "layer": layer}, batch_size=1,
            batch_format="numpy", num_cpus=0.5, compute=ray.data.ActorPoolStrategy(size=num_actors))
        done = [b for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
        got = np.concatenate([b["chunk"] for b in done]) if done else np.zeros(0, np.int64)
        _check_once(got, chunks, f"update layer {layer} (chunks)")
        recomputed.append(int(sum(int(b["computed"].sum()) for b in done)))
        logger.info("update layer %d: %d of %d rows recomputed", layer, recomputed[-1], n)
    emb = VectorStore(os.path.join(layers_dir, "out"), n).gather(np.arange(n))
    shutil.rmtree(os.path.join(layers_dir, "out"))
    for name in (CHANGE_FILE, IDS_FILE):
        os.remove(os.path.join(inf, name))
    return emb, recomputed
