"""``update_run``: new interactions, features and removals in, a new version of a run out.

The steps (each cost grows with the change, not the graph; see the issue "fresh embeddings
in minutes"):

1. merge the input into the current graph, keeping every existing id
   (:mod:`pinsage_ray.update.graph_delta`);
2. find the items whose walks can read a changed row and rerun only their walks, with the
   run's inference seed and walk parameters (:mod:`pinsage_ray.update.affected`);
3. recompute layer ``k`` only where its inputs changed, reading every other row from the
   stored layer outputs (:mod:`pinsage_ray.update.layers`);
4. write the embeddings and update the HNSW index in place (add new items, replace changed
   vectors, mark removed items deleted), re-measure its recall;
5. commit the version atomically (:mod:`pinsage_ray.update.versions`).

The model is the trained one, unchanged: PinSage is inductive, so new items are embedded from
their features and neighbourhoods, without an id vector.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from pinsage_ray import _io
from pinsage_ray.graph import inputs
from pinsage_ray.graph.inputs import InputError
from pinsage_ray.graph.store import GraphStore
from pinsage_ray.inference.model_io import load_model, neighbors_manifest, read_neighbor_rows
from pinsage_ray.inference.vectors import VectorStore, write_part
from pinsage_ray.update import affected, graph_delta, index_update, versions
from pinsage_ray.inference.pipeline import LOCAL_MAX_ITEMS
from pinsage_ray.update.layers import node_ids, update_layers
from pinsage_ray.update.layers_ray import update_layers_ray

logger = logging.getLogger(__name__)


@dataclass
class UpdateResult:
    """What an update did.

    Attributes:
        version: the new version's name (``v0001``...) and ``path`` its directory.
        num_items, new_items, removed_items: item counts of the new graph.
        affected_items: items whose walks were rerun (neighbourhood may change).
        neighborhoods_changed: of those, items whose stored neighbourhood did change.
        recomputed: rows recomputed per layer ``[h0, h1, ..., output]``.
        seconds: per step, and ``total``.
    """

    version: str
    path: str
    num_items: int
    new_items: int
    removed_items: int
    affected_items: int
    neighborhoods_changed: int
    recomputed: list[int]
    seconds: dict[str, float] = field(default_factory=dict)
    index: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _read(value: Any, argument: str) -> tuple[pa.Table, str]:
    table = inputs.as_table(value, argument)
    if table is not None:
        return table, inputs.Source(f"<{type(value).__name__}>")
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{argument}=<{type(value).__name__}>: expected a Parquet/CSV path, a "
                        "pyarrow Table or a pandas DataFrame")
    return inputs.read_input(os.fspath(value))


def _removals(remove_items: Any) -> pa.Array | None:
    if remove_items is None:
        return None
    if isinstance(remove_items, (str, os.PathLike)):
        table, origin = _read(remove_items, "remove_items")
        if "item" not in table.column_names:
            raise InputError(f"{origin}: a removal list needs an 'item' column; found "
                             f"{table.column_names}")
        return table.column("item").combine_chunks()
    if isinstance(remove_items, pa.Array):
        return remove_items
    return pa.array(list(remove_items))


def update_run(run_dir: str | os.PathLike, new_interactions: Any, *, item_features: Any = None,
               remove_items: Any = None, columns: dict[str, str] | None = None,
               num_shards: int = 0, mode: str = "auto", num_actors: int = 1,
               batch_size: int = 8192, keep_versions: int = 2,
               _after_step: Any = None) -> UpdateResult:
    """Apply new interactions (and features, removals) to a run as a new, current version.

    Args:
        run_dir: a run where ``train``, ``embed`` and ``index`` have run (local directory).
        new_interactions: what ``prepare`` accepts: a Parquet/CSV path, a pyarrow Table or a
            pandas DataFrame with ``item``, ``group``, optional ``weight``/``timestamp``.
            Items and groups may be existing or new.
        item_features: features of the new items (every new item needs a row, as in
            ``prepare``), optionally new rows for existing items.
        remove_items: original item ids to remove (a list, array, or a file/table with an
            ``item`` column): they lose every edge and leave neighbourhoods and the index.
        columns: the input's own column names by role, as ``prepare(columns=...)``.
        num_shards: walk shards (Ray actors) for the affected items' walks; 0 = in process.
            Both give identical neighbourhoods.
        mode: where the layers are recomputed, as ``embed``'s ``mode``: 'local' (one
            process, every layer in memory), 'ray' (Ray Data passes that read and write layer
            parts, :mod:`pinsage_ray.update.layers_ray`), or 'auto' (local up to
            ``LOCAL_MAX_ITEMS`` items). Both give the same embeddings.
        num_actors, batch_size: actor-pool size and items per chunk of the Ray Data passes.
        keep_versions: versions kept after this one commits, itself included (older
            ``updates/vNNNN`` directories are deleted; the run itself is version 0 and stays).
            2 keeps the previous version for replicas still switching.

    Returns:
        An :class:`UpdateResult`; ``Recommender.load(run_dir)`` now serves the new version.

    Raises:
        InputError: bad rows (naming file, row and column), as ``prepare``; nothing is
            written.
        KeyError: a removed item that is not in the graph.
    """
    t_all = time.perf_counter()
    seconds: dict[str, float] = {}
    mark = [time.perf_counter()]

    def step(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - mark[0], 4)
        mark[0] = now
        if _after_step is not None:  # fault injection in tests
            _after_step(name)

    versions.check_keep_versions(keep_versions)  # before any work, not at the prune
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 0:
        raise ValueError(f"num_shards={num_shards!r}; expected 0 (in process) or a positive "
                         "number of walk shards")
    if mode not in ("auto", "local", "ray"):
        raise ValueError(f"mode={mode!r}; use 'auto', 'local' (one process) or 'ray' (Ray "
                         "Data passes)")
    for name, value in (("num_actors", num_actors), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}; expected an integer >= 1")
    columns = inputs.check_columns(columns)
    table, origin = _read(new_interactions, "update_run(new_interactions=...)")
    table = inputs.map_columns(table, columns, origin)
    inputs.validate_interactions(table, origin)
    feats, feats_origin = None, ""
    if item_features is not None:
        feats, feats_origin = _read(item_features, "update_run(item_features=...)")
        feats = inputs.rename_item(feats, inputs.feature_item_column(feats.column_names, columns))
    remove = _removals(remove_items)

    model = load_model(run_dir)
    base = versions.current_version(run_dir, model.graph_dir)
    digest = _fingerprint(table, feats, remove)
    done = _already_applied(base, digest)
    if done is not None:
        logger.info("update: these inputs are already applied (version %s); nothing to do",
                    base.name)
        return done
    old = GraphStore(base.graph_dir)
    name = versions.next_version_name(base)
    had_updates = versions.version_dir(run_dir, "").exists()
    tmp = versions.fresh_temp(run_dir, name, base.number)
    try:
        result = _build(model, base, old, table, origin, feats, feats_origin, remove, tmp,
                        step, num_shards, (mode, num_actors, batch_size))
    except BaseException:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if not had_updates:  # bad input leaves the run as it was
            shutil.rmtree(tmp.parent, ignore_errors=True)
        raise
    seconds["total"] = round(time.perf_counter() - t_all, 4)
    result.seconds = seconds
    fs, _ = _io.resolve(str(tmp))
    _io.write_json(fs, str(tmp / "update.json"), {**result.as_dict(), "inputs_sha256": digest,
                                                    "base": base.name})
    step("write")
    result.path = str(versions.commit(run_dir, tmp, name))
    versions.prune(run_dir, base.number + 1, keep_versions)
    logger.info("update %s: %d items (%d new, %d removed), walks rerun for %d, layers "
                "recomputed %s, %.2fs", name, result.num_items, result.new_items,
                result.removed_items, result.affected_items, result.recomputed,
                seconds["total"])
    return result


def _build(model: Any, base: versions.Version, old: GraphStore, table: pa.Table, origin: str,
           feats: pa.Table | None, feats_origin: str, remove: pa.Array | None, tmp: Any,
           step: Any, num_shards: int, layer_pass: tuple[str, int, int]) -> UpdateResult:
    graph_dir = str(tmp / "graph")
    delta = graph_delta.merge_graph(old, table, origin, feats, feats_origin, remove, graph_dir)
    new = GraphStore(graph_dir)
    if delta.num_items > delta.old_items and new.feature_dim == 0:
        raise InputError(f"{origin}: {delta.num_items - delta.old_items} new item(s), but the "
                         "model was trained without item features, so a new item has no input "
                         "vector; retrain with features to add items by update")
    step("graph")

    nb_info = neighbors_manifest(base.neighbors)
    if nb_info is None:
        raise FileNotFoundError(f"{base.neighbors}: no stored neighbourhoods; run `pinsage-ray "
                                f"embed {model.run_dir}` first")
    nc = {k: nb_info[k] for k in ("num_walks", "walk_length", "restart_prob", "top_t")}
    n, n_old = delta.num_items, delta.old_items
    if delta.weighted_changed:  # walks pick edges another way: every walk may change
        hit = np.ones(n, dtype=bool)
    else:
        hit = affected.affected_items(new, delta.changed_items, delta.changed_groups,
                                      nc["walk_length"])
    old_ids, old_w = read_neighbor_rows(base.neighbors, 0, n_old)
    nb_ids = np.full((n, nc["top_t"]), -1, dtype=np.int64)
    nb_w = np.zeros((n, nc["top_t"]), dtype=np.float32)
    nb_ids[:n_old], nb_w[:n_old] = old_ids, old_w
    rows = np.flatnonzero(hit)
    fresh = affected.neighbourhoods_of(graph_dir, rows, seed=int(nb_info["seed"]),
                                       num_shards=num_shards, **nc)
    nb_changed = np.zeros(n, dtype=bool)
    nb_changed[rows] = ((nb_ids[rows] != fresh.ids) | (nb_w[rows] != fresh.weights)).any(axis=1)
    nb_ids[rows], nb_w[rows] = fresh.ids, fresh.weights
    counts = _counts(base, n, n_old, rows, fresh.counts, nc["top_t"])
    fs, _ = _io.resolve(str(tmp))
    nb_dir = str(tmp / "inference" / "neighbors")
    fs.create_dir(nb_dir, recursive=True)
    files = {f"{k}.npy": _io.write_npy(fs, os.path.join(nb_dir, f"{k}.npy"), a)
             for k, a in (("ids", nb_ids), ("weights", nb_w), ("counts", counts))}
    _io.write_json(fs, os.path.join(nb_dir, "manifest.json"),
                   {**{k: v for k, v in nb_info.items() if k != "files"},
                    "graph_dir": graph_dir, "files": files})
    step("neighborhoods")

    enc = model.encoder
    degree = new.degrees("item")
    trained = GraphStore(model.graph_dir).degrees("item")
    ids = node_ids(n, degree, trained)
    old_deg = old.degrees("item")
    old_node = node_ids(n_old, old_deg, trained)
    c0 = np.zeros(n, dtype=bool)
    c0[n_old:] = True
    c0[:n_old] = (degree[:n_old] != old_deg) | (ids[:n_old] != old_node)
    c0 |= delta.features_changed
    change = affected.layer_change_sets(c0, nb_changed, nb_ids, enc.num_layers)
    mode, num_actors, batch_size = layer_pass
    if mode == "auto":
        mode = "local" if n <= LOCAL_MAX_ITEMS else "ray"
    if mode == "ray":
        emb, recomputed = update_layers_ray(model.run_dir, str(tmp), base.root, base.layers,
                                            change, ids, n_old, batch_size=batch_size,
                                            num_actors=num_actors)
    else:
        old_h = [VectorStore(os.path.join(base.layers, f"h{k}"), n_old).gather(np.arange(n_old))
                 for k in range(enc.num_layers)]
        old_t = [VectorStore(os.path.join(base.layers, f"t{k}"), n_old).gather(np.arange(n_old))
                 for k in range(enc.num_layers)]
        old_emb = _old_embeddings(base, old)
        feats_all = new.features()
        lay = update_layers(enc, old_h, old_t, old_emb, None if feats_all is None
                            else np.asarray(feats_all), degree, ids, nb_ids, nb_w, change)
        layers_dir = str(tmp / "inference" / "layers")
        everyone = np.arange(n)
        for k in range(enc.num_layers):
            write_part(os.path.join(layers_dir, f"h{k}"), everyone, lay.h[k])
            write_part(os.path.join(layers_dir, f"t{k}"), everyone, lay.t[k])
        emb, recomputed = lay.embeddings, lay.recomputed
    _io.write_npy(fs, str(tmp / "inference" / "output.npy"), emb)
    step("layers")

    live = ~delta.removed
    index_update.write_embeddings(str(tmp / "embeddings"), new.item_ids, emb, live, model,
                                  nb_info["seed"])
    step("embeddings")
    report = index_update.update_index(base.index, str(tmp / "index"), emb, new.item_ids,
                                       n_old, change[-1], delta.removed)
    step("index")
    return UpdateResult(tmp.name[len(".tmp-"):], str(tmp), n, n - n_old,
                        int(delta.removed.sum()), int(hit.sum()), int(nb_changed.sum()),
                        recomputed, index=report)


def _fingerprint(table: pa.Table, feats: pa.Table | None, remove: pa.Array | None) -> str:
    """sha256 of the inputs (Arrow IPC bytes): a rerun of an applied update is a no-op."""
    import hashlib

    h = hashlib.sha256()
    for t in (table, feats, None if remove is None else pa.table({"item": remove})):
        if t is None:
            h.update(b"-")
            continue
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as writer:
            writer.write_table(t)
        h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def _already_applied(base: versions.Version, digest: str) -> UpdateResult | None:
    """The current version's result when it was made from exactly these inputs."""
    path = os.path.join(base.root, "update.json")
    if base.number == 0 or not os.path.exists(path):
        return None
    fs, _ = _io.resolve(path)
    report = _io.read_json(fs, path)
    if report.pop("inputs_sha256", None) != digest:
        return None
    report.pop("base", None)
    report["path"] = base.root
    return UpdateResult(**report)


def _counts(base: versions.Version, n: int, n_old: int, rows: np.ndarray,
            fresh: np.ndarray, top_t: int) -> np.ndarray:
    """Raw visit counts of the new table (version 0 stores none: -1 there, until rerun)."""
    out = np.full((n, top_t), -1, dtype=np.int64)
    path = os.path.join(base.neighbors, "counts.npy")
    if os.path.exists(path):
        out[:n_old] = np.load(path)
    out[rows] = fresh
    return out


def _old_embeddings(base: versions.Version, old: GraphStore) -> np.ndarray:
    """float32 (N_old, D): every item's stored embedding, in contiguous-id order."""
    path = os.path.join(base.root, "inference", "output.npy")
    if os.path.exists(path):
        return np.load(path)
    from pinsage_ray.inference.pipeline import load_embeddings

    ids, emb = load_embeddings(base.root)
    n = old.num_items
    if len(ids) < n or ids.slice(0, n).to_pylist() != old.item_ids.to_pylist():
        raise ValueError(f"{base.root}/embeddings: rows are not the graph's items in id order; "
                         f"re-run `pinsage-ray embed {base.root}` before updating")
    return emb[:n]
