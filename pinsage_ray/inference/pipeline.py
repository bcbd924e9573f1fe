"""``embed``: layer-wise inference of every item on Ray Data (paper section 3.4).

The paper's MapReduce inference computes each layer once for all nodes. Here each layer is a
Ray Data pass (``map_batches`` over item-id batches, an actor pool holding the model):

* pass 0 computes the input layer ``h0`` of every item and the neighbour transform
  ``t0 = ReLU(Q_0 h0 + q_0)`` of the first convolution (the "map" of the next layer);
* pass k (1..K) gathers, *by item id*, ``t_{k-1}`` of each item's importance neighbours and the
  item's own ``h_{k-1}``, pools and combines them into ``h_k`` (and ``t_k`` for the next
  layer); pass K finishes with the dense output layers and writes the embeddings: its input
  rows are chunk numbers, so the actor computing chunk c (items ``[c * batch_size, ...)``)
  writes Parquet part c itself and this process only collects the parts' checksums for
  ``_manifest.json`` (part order is item order; no process holds every embedding).

Layer outputs live on disk as :class:`~pinsage_ray.inference.vectors.VectorStore` parts, so
no process holds a whole layer: memory per actor is one batch plus the parts it reads. The
importance neighbourhoods come once from the walk service (fixed by ``seed``) and are stored
with the run. ``mode="local"`` runs the same per-layer functions in one process with every
layer in memory (about ``3 * N * hidden * 4`` bytes): the simple path for graphs up to a few
million items; ``mode="auto"`` picks it up to ``LOCAL_MAX_ITEMS`` items.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pinsage_ray import _io
from pinsage_ray.graph.store import GraphStore
from pinsage_ray.inference import layerwise
from pinsage_ray.inference.embeddings_io import EmbeddingsError, load_embeddings  # noqa: F401 (re-exported)
from pinsage_ray.inference.model_io import (LoadedModel, load_model, neighbors_manifest,
                                            read_neighbor_rows, run_path, save_neighbors)
from pinsage_ray.inference.vectors import VectorStore, write_part

logger = logging.getLogger(__name__)

LOCAL_MAX_ITEMS = 200_000
DEFAULT_SEED = 1234567  # the evaluation neighbourhoods of training use the same seed


@dataclass
class EmbedResult:
    """Where the embeddings went and what they are."""

    path: str
    count: int
    dim: int
    seconds: float
    mode: str


def compute_neighbors(model: LoadedModel, *, num_shards: int = 0, seed: int = DEFAULT_SEED,
                      overwrite: bool = False) -> str:
    """Importance neighbourhoods of all items, once per run (reused when params match)."""
    from pinsage_ray.sampling import open_walker

    out = run_path(model.run_dir, "inference", "neighbors")
    nc = model.neighbor_config
    info = {"seed": seed, "graph_dir": model.graph_dir, **nc}
    existing = neighbors_manifest(out)
    if existing is not None and not overwrite:
        if {k: existing.get(k) for k in info} == info:
            return out
    with open_walker(model.graph_dir, num_shards=num_shards) as walker:
        nb = walker.importance_neighbors(
            np.arange(walker.num_items), num_walks=nc["num_walks"], walk_length=nc["walk_length"],
            restart_prob=nc["restart_prob"], top_t=nc["top_t"], seed=seed)
    save_neighbors(out, nb.ids, nb.weights, info)
    return out


class _LayerPass:
    """One layer of inference for a batch of item ids (a Ray Data actor)."""

    def __init__(self, run_dir: str, graph_dir: str, layer: int, out_dir: str | None = None,
                 chunk_size: int = 0) -> None:
        import torch

        torch.set_num_threads(1)
        self.model = load_model(run_dir, graph_dir)
        self.encoder = self.model.encoder
        self.layer, self.num_layers = layer, self.encoder.num_layers
        store = GraphStore(graph_dir)
        self.n = store.num_items
        self.graph = store
        self.layers_dir = run_path(run_dir, "inference", "layers")
        self.nb_dir = run_path(run_dir, "inference", "neighbors")
        if layer > 0:
            self.h_prev = VectorStore(_io.join(self.layers_dir, f"h{layer - 1}"), self.n)
            self.t_prev = VectorStore(_io.join(self.layers_dir, f"t{layer - 1}"), self.n)
        if layer == self.num_layers:
            self.item_ids = store.item_ids
        # the output pass: each input row is a chunk number c (items [c*chunk_size, ...)),
        # written as embeddings part c, so part order is item order with no gather at the end
        self.out_dir, self.chunk_size = out_dir, chunk_size

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        if self.chunk_size:
            (chunk,) = np.asarray(batch["id"], dtype=np.int64)  # batch_size=1: one chunk
            ids = np.arange(chunk * self.chunk_size,
                            min((chunk + 1) * self.chunk_size, self.n), dtype=np.int64)
        else:
            ids = np.sort(np.asarray(batch["id"], dtype=np.int64))
        lo, hi = int(ids[0]), int(ids[-1]) + 1
        if self.layer in (0, self.num_layers):
            deg = np.diff(self.graph.array_rows("item_indptr", lo, hi + 1))[ids - lo]
            node_ids = layerwise.inference_ids(ids, deg)  # -1: degree 0, no trained id
        if self.layer == 0:
            feats = (self.graph.array_rows("item_features", lo, hi)[ids - lo]
                     if self.graph.feature_dim else None)
            h = layerwise.input_layer_rows(self.encoder, node_ids, feats, np.log1p(deg))
        else:
            nb_ids, nb_w = read_neighbor_rows(self.nb_dir, lo, hi)
            nb_ids, nb_w = nb_ids[ids - lo], nb_w[ids - lo]
            h = layerwise.conv_layer_rows(self.encoder, self.layer - 1, self.h_prev.gather(ids),
                                          self.t_prev.gather(np.maximum(nb_ids, 0)), nb_ids,
                                          nb_w)
        if self.layer < self.num_layers:
            write_part(_io.join(self.layers_dir, f"h{self.layer}"), ids, h)
            write_part(_io.join(self.layers_dir, f"t{self.layer}"), ids,
                       layerwise.transform_rows(self.encoder, self.layer, h))
            return {"id": ids}
        emb = layerwise.output_layer_rows(self.encoder, h, node_ids)
        table = pa.table({"item": self.item_ids.take(pa.array(ids)),
                          "embedding": _list_column(emb)})
        name = f"part-{int(chunk):05d}.parquet"  # a retried chunk rewrites its own part
        fs, path = _io.resolve(self.out_dir)
        meta = _io.write_parquet(fs, _io.join(path, name), table)
        return {"chunk": [int(chunk)], "name": [name], "rows": [len(ids)],
                "bytes": [meta["bytes"]], "sha256": [meta["sha256"]]}


def _list_column(emb: np.ndarray) -> pa.Array:
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    offsets = np.arange(0, emb.size + 1, emb.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(emb.ravel()))


def embed(run_dir: str | os.PathLike, *, graph_dir: str | None = None, mode: str = "auto",
          num_shards: int = 0, batch_size: int = 8192, num_actors: int = 1,
          seed: int = DEFAULT_SEED, show_progress: bool | None = None) -> EmbedResult:
    """Embed every item of the graph with the trained model in ``run_dir``.

    Args:
        run_dir: run directory from :func:`pinsage_ray.train`.
        graph_dir: override the training graph's location.
        mode: 'ray' (Ray Data passes), 'local' (one process) or 'auto'.
        num_shards: walk shards for the neighbourhood pass (0 = in process).
        batch_size: items per Ray Data batch.
        num_actors: actor-pool size per pass.
        seed: seed of the inference neighbourhoods (deterministic output).
        show_progress: progress bars on stderr; None (default): when stderr is a terminal
            (:func:`pinsage_ray.console.progress_default`).

    Returns:
        An :class:`EmbedResult`; the Parquet files are in ``run_dir/embeddings``.
    """
    if mode not in ("auto", "ray", "local"):
        raise ValueError(f"mode={mode!r}; use 'auto', 'ray' or 'local'")
    for name, value, low in (("batch_size", batch_size, 1), ("num_actors", num_actors, 1),
                             ("num_shards", num_shards, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}={value!r}; expected an integer >= {low}")
    from pinsage_ray.console import progress_default

    show_progress = progress_default(show_progress)
    t0 = time.perf_counter()
    model = load_model(run_dir, graph_dir)
    store = GraphStore(model.graph_dir)
    _check_graph_fits(model, store)
    if mode == "auto":
        mode = "local" if store.num_items <= LOCAL_MAX_ITEMS else "ray"
    nb_dir = compute_neighbors(model, num_shards=num_shards, seed=seed)
    out_dir = run_path(run_dir, "embeddings")
    with _io.atomic_directory(out_dir, overwrite=True) as tmp:
        fs, _ = _io.resolve(out_dir)
        if mode == "local":
            table = _embed_local(model, store, nb_dir, show_progress)
            files = {"part-00000.parquet": _io.write_parquet(
                fs, _io.join(tmp, "part-00000.parquet"), table)}
        else:  # the actors write the parts; this process sees their checksums only
            files = _embed_ray(model, store, batch_size, num_actors, show_progress,
                               _io.uri_for(out_dir, tmp))  # the actors resolve it themselves
        count = store.num_items
        _io.write_json(fs, _io.join(tmp, "_manifest.json"), {
            "count": count, "dim": model.encoder.embedding_dim, "seed": seed, "mode": mode,
            "model_epoch": model.meta.get("epoch"), "graph_dir": model.graph_dir,
            "neighbors": model.neighbor_config, "files": files})
    seconds = time.perf_counter() - t0
    logger.info("embedded %d items (%s mode) in %.1fs -> %s", count, mode, seconds, out_dir)
    return EmbedResult(out_dir, count, model.encoder.embedding_dim, seconds, mode)


def _check_graph_fits(model: LoadedModel, store: GraphStore) -> None:
    """Refuse a graph the model was not trained on (another item count or feature width)."""
    mc = model.meta["model_config"]
    want = (int(mc.get("num_items", store.num_items)), int(mc.get("feature_dim", 0)))
    if want != (store.num_items, store.feature_dim):
        raise ValueError(
            f"graph {store.uri!r} has {store.num_items} items and feature_dim "
            f"{store.feature_dim}, but the model in {model.run_dir!r} was trained on "
            f"{want[0]} items, feature_dim {want[1]}; pass the training graph (--graph-dir)")


def _fresh_layers_dir(model: LoadedModel) -> str:
    layers_dir = run_path(model.run_dir, "inference", "layers")
    fs, path = _io.resolve(layers_dir)
    if _io.exists(fs, path):
        fs.delete_dir(path)
    return layers_dir


def _embed_local(model: LoadedModel, store: GraphStore, nb_dir: str,
                 show_progress: bool) -> pa.Table:
    ids, weights = read_neighbor_rows(nb_dir, 0, store.num_items)
    feats = store.features()
    layers_dir = _fresh_layers_dir(model)
    all_ids = np.arange(store.num_items)

    def keep_layer(k: int, h: np.ndarray, t: np.ndarray) -> None:
        write_part(_io.join(layers_dir, f"h{k}"), all_ids, h)
        write_part(_io.join(layers_dir, f"t{k}"), all_ids, t)

    emb = layerwise.embed_all(model.encoder, None if feats is None else np.asarray(feats),
                              store.degrees("item"), ids, weights, show_progress=show_progress,
                              layer_sink=keep_layer)
    return pa.table({"item": store.item_ids, "embedding": _list_column(emb)})


def _embed_ray(model: LoadedModel, store: GraphStore, batch_size: int, num_actors: int,
               show_progress: bool, out_dir: str) -> dict[str, dict[str, Any]]:
    """K + 1 Ray Data passes; the last writes embeddings part c (items ``[c * batch_size,
    ...)``) into ``out_dir`` from the actor that computed it. Returns the manifest's files."""
    import ray
    import ray.data
    from tqdm import tqdm

    from pinsage_ray.ray_utils import init_ray, ray_console_on

    init_ray()
    if not ray_console_on():  # Ray Data's bars name its operators: show one bar per pass
        ray.data.DataContext.get_current().enable_progress_bars = False
    _fresh_layers_dir(model)
    files: dict[str, dict[str, Any]] = {}
    passes = tqdm(range(model.encoder.num_layers + 1), desc="embed (Ray Data passes)",
                  unit="layer", disable=not show_progress or ray_console_on())
    kwargs = {"run_dir": model.run_dir, "graph_dir": model.graph_dir}
    options = {"batch_format": "numpy", "num_cpus": 0.5,
               "compute": ray.data.ActorPoolStrategy(size=num_actors)}
    for layer in passes:
        if layer < model.encoder.num_layers:
            ds = ray.data.range(store.num_items).map_batches(
                _LayerPass, fn_constructor_kwargs={**kwargs, "layer": layer},
                batch_size=batch_size, **options)
            done = [b["id"] for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
            _check_once(np.concatenate(done) if done else np.zeros(0, np.int64),
                        store.num_items, f"layer {layer}")
            logger.info("layer %d done for %d items", layer, store.num_items)
            continue
        chunks = -(-store.num_items // batch_size)
        ds = ray.data.range(chunks).map_batches(
            _LayerPass, fn_constructor_kwargs={**kwargs, "layer": layer, "out_dir": out_dir,
                                               "chunk_size": batch_size},
            batch_size=1, **options)
        written = {}
        for b in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for c, name, rows, size, sha in zip(b["chunk"], b["name"], b["rows"], b["bytes"],
                                                 b["sha256"]):
                written[int(c)] = int(rows)
                files[str(name)] = {"bytes": int(size), "sha256": str(sha)}
        got = np.array(sorted(written), dtype=np.int64)
        _check_once(got, chunks, "output layer (chunks)")
        if sum(written.values()) != store.num_items:
            raise RuntimeError(f"output layer: {sum(written.values())} rows written for "
                               f"{store.num_items} items; rerun `pinsage-ray embed`")
    return files


def _check_once(ids: np.ndarray, num_items: int, what: str) -> None:
    """Every item id in [0, num_items) exactly once (a retried batch must not add rows)."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=num_items)
    if len(counts) != num_items or (counts != 1).any():
        missing, twice = int((counts[:num_items] == 0).sum()), int((counts > 1).sum())
        raise RuntimeError(f"{what}: {missing} of {num_items} items missing and {twice} "
                           "computed more than once; rerun `pinsage-ray embed`")
