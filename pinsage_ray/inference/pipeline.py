"""``embed``: layer-wise inference of every item on Ray Data (paper section 3.4).

The paper's MapReduce inference computes each layer once for all nodes. Here each layer is a
Ray Data pass (``map_batches`` over item-id batches, an actor pool holding the model):

* pass 0 computes the input layer ``h0`` of every item and the neighbour transform
  ``t0 = ReLU(Q_0 h0 + q_0)`` of the first convolution (the "map" of the next layer);
* pass k (1..K) gathers, *by item id*, ``t_{k-1}`` of each item's importance neighbours and the
  item's own ``h_{k-1}``, pools and combines them into ``h_k`` (and ``t_k`` for the next
  layer); pass K finishes with the dense output layers and writes the embeddings.

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
import pyarrow.parquet as pq

from pinsage_ray import _io
from pinsage_ray.graph.store import GraphStore
from pinsage_ray.inference import layerwise
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

    def __init__(self, run_dir: str, graph_dir: str, layer: int) -> None:
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

    def _rows(self, name: str, lo: int, hi: int) -> np.ndarray:
        fs, path = self.graph.fs, _io.join(self.graph.path, f"{name}.npy")
        return _io.read_npy_rows(fs, path, lo, hi)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        ids = np.sort(np.asarray(batch["id"], dtype=np.int64))
        lo, hi = int(ids[0]), int(ids[-1]) + 1
        if self.layer in (0, self.num_layers):
            deg = np.diff(self._rows("item_indptr", lo, hi + 1))[ids - lo]
            node_ids = layerwise.inference_ids(ids, deg)  # -1: degree 0, no trained id
        if self.layer == 0:
            feats = (self._rows("item_features", lo, hi)[ids - lo]
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
        return pa.table({"id": ids, "item": self.item_ids.take(pa.array(ids)),
                         "embedding": _list_column(emb)})


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
    if mode == "local":
        table = _embed_local(model, store, nb_dir, show_progress)
        tables = [table]
    else:
        tables = _embed_ray(model, store, batch_size, num_actors, show_progress)
    with _io.atomic_directory(out_dir, overwrite=True) as tmp:
        fs, _ = _io.resolve(out_dir)
        files = {}
        for k, t in enumerate(tables):
            name = f"part-{k:05d}.parquet"
            files[name] = _io.write_parquet(fs, _io.join(tmp, name), t)
        count = sum(t.num_rows for t in tables)
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


def _embed_ray(model: LoadedModel, store: GraphStore, batch_size: int,
               num_actors: int, show_progress: bool = False) -> list[pa.Table]:
    import ray
    import ray.data
    from tqdm import tqdm

    from pinsage_ray.ray_utils import init_ray, ray_console_on

    init_ray()
    if not ray_console_on():  # Ray Data's bars name its operators: show one bar per pass
        ray.data.DataContext.get_current().enable_progress_bars = False
    _fresh_layers_dir(model)
    out: list[pa.Table] = []
    passes = tqdm(range(model.encoder.num_layers + 1), desc="embed (Ray Data passes)",
                  unit="layer", disable=not show_progress or ray_console_on())
    for layer in passes:
        ds = ray.data.range(store.num_items).map_batches(
            _LayerPass, fn_constructor_kwargs={"run_dir": model.run_dir,
                                               "graph_dir": model.graph_dir, "layer": layer},
            batch_size=batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=num_actors), num_cpus=0.5)
        if layer < model.encoder.num_layers:
            done = [b["id"] for b in ds.iter_batches(batch_size=None, batch_format="numpy")]
            _check_once(np.concatenate(done) if done else np.zeros(0, np.int64),
                        store.num_items, f"layer {layer}")
            logger.info("layer %d done for %d items", layer, store.num_items)
        else:
            out = [pa.Table.from_batches([b]) if isinstance(b, pa.RecordBatch) else b
                   for b in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    table = pa.concat_tables(out)
    _check_once(table.column("id").to_numpy(), store.num_items, "output layer")
    order = np.argsort(table.column("id").to_numpy())  # contiguous-id order: deterministic
    return [table.take(pa.array(order)).drop_columns(["id"])]


def _check_once(ids: np.ndarray, num_items: int, what: str) -> None:
    """Every item id in [0, num_items) exactly once (a retried batch must not add rows)."""
    counts = np.bincount(np.asarray(ids, dtype=np.int64), minlength=num_items)
    if len(counts) != num_items or (counts != 1).any():
        missing, twice = int((counts[:num_items] == 0).sum()), int((counts > 1).sum())
        raise RuntimeError(f"{what}: {missing} of {num_items} items missing and {twice} "
                           "computed more than once; rerun `pinsage-ray embed`")


def load_embeddings(run_dir: str | os.PathLike) -> tuple[pa.Array, np.ndarray]:
    """``(original item ids, float32 (N, D))`` from ``run_dir/embeddings``.

    Checked before use: ``_manifest.json`` parses; every part it lists exists with the size
    and sha256 recorded when ``embed`` wrote it (so a truncated or bit-flipped part is caught
    even where it would still parse); the parts hold ``count`` rows of ``dim`` values.

    Raises:
        FileNotFoundError: no embeddings yet.
        EmbeddingsError: naming the damaged file; re-running ``pinsage-ray embed`` fixes it.
    """
    fs, path = _io.resolve(run_path(run_dir, "embeddings"))
    manifest_path = _io.join(path, "_manifest.json")
    if not _io.exists(fs, manifest_path):
        raise FileNotFoundError(f"{path}: no embeddings; run `pinsage-ray embed RUN_DIR` first")
    fix = f"re-run `pinsage-ray embed {run_dir}`"
    try:
        manifest = _io.read_json(fs, manifest_path)
        files, count, dim = manifest["files"], int(manifest["count"]), int(manifest["dim"])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise EmbeddingsError(f"{manifest_path}: unreadable ({type(err).__name__}: {err}); "
                              f"{fix}") from None
    tables = []
    for name in sorted(files):
        part = _io.join(path, name)
        _io.verify_file(fs, part, files[name], fix, error=EmbeddingsError)
        try:
            tables.append(pq.read_table(part, filesystem=fs))
        except (pa.ArrowException, OSError, ValueError) as err:
            raise EmbeddingsError(f"{part}: not a readable Parquet file ({err}); {fix}") from None
    table = pa.concat_tables(tables) if tables else None
    if table is None or table.num_rows != count or not {"item", "embedding"} <= set(
            table.column_names):
        raise EmbeddingsError(f"{path}: parts hold {0 if table is None else table.num_rows} rows "
                              f"(columns item, embedding expected), manifest says {count}; {fix}")
    values = table.column("embedding").combine_chunks().flatten()
    if len(values) != count * dim:
        raise EmbeddingsError(f"{path}: {len(values)} values for {count} x {dim} embeddings; "
                              f"{fix}")
    emb = values.to_numpy(zero_copy_only=False).reshape(count, dim).astype(np.float32)
    return table.column("item").combine_chunks(), emb


class EmbeddingsError(ValueError):
    """``run_dir/embeddings`` is incomplete or corrupted; re-run ``pinsage-ray embed``."""
