"""``prepare`` on Ray Data: the same graph directory, built by many processes.

``prepare(..., engine="ray")`` (or ``"auto"`` for inputs of at least
:data:`AUTO_RAY_MIN_BYTES` bytes of files) runs here instead of in one process:

1. **Read and check** in parallel: one Ray Data task per CSV file or run of Parquet row
   groups (at most :data:`FRAGMENT_ROWS` rows, and fewer when the input is small for the
   cluster: :func:`fragment_rows`) reads its rows with the whole input's schema
   and runs the local engine's checks (:func:`inputs.validate_interactions`) on them.
   Errors name the file and the line/row within it exactly as the local engine does; when
   several blocks are bad, the driver keeps the error the local engine would raise (first
   check in its order, then first row).
2. **Encode groups**: Ray Data's ``sort`` by group puts all rows of a group in one block (the
   guarantee ``GroupedData.map_groups`` builds on; checked here), each block's distinct ids
   are a run of the sorted ids, and their counts give every block its offset.
3. **Encode items and merge edges**: the same with a sort by item, with one marker row per
   feature item so feature-only items get their ids in order; each block then merges its
   duplicate (item, group) rows with the local engine's ``merge_edges`` (rows in input
   order, so the float sums are bit-identical).
4. **Group order**: Ray Data's ``sort`` of the merged edges by (group, time, first row) or
   (group, item), the local engine's group CSR order.
   Item features, when given, take a fourth sort: by item position
   (:mod:`pinsage_ray.graph.prepare_features`).
5. **Write**: the driver streams the sorted blocks, one at a time, into the same ``.npy``
   files (bytes and sha256 as ``np.save`` writes them) inside ``_io.atomic_directory``, so a
   failure at any step leaves no graph directory.

Driver memory: the final files' per-node arrays (``*_indptr`` and the degrees: 16 bytes per
item and per group; ``item_ids``/``group_ids``: 8 bytes per id, or the strings) and one sorted
block at a time (at most 36 bytes per edge of that block: codes, weight, time, first row; or
one block of feature vectors). Its object-store pages count in the driver's RSS as shared
memory, bounded by the node's object store. No edge-sized array and no feature table lives in
the driver's heap: item features given as a file or folder are read, checked and aligned by
tasks (:mod:`pinsage_ray.graph.prepare_features`); a table or DataFrame passed in memory is
aligned in the driver, which holds it already. Ray's object store holds the rows between
steps (spilled to disk when full). Measured in docs/scaling.md.

Row numbers in errors are exact: a fragment knows its file and first row, so a message names
``part-1.csv line 3`` as the local engine does. An error in one worker aborts the Ray Data
job; the driver then checks every fragment again (:func:`prepare_blocks.check_fragment`) and
raises the error the local engine would. One difference: an existing ``graph_dir`` without
``overwrite`` is refused before any work rather than after the input checks.
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
from pinsage_ray.data.types import RawDataset
from pinsage_ray.graph import inputs
from pinsage_ray.graph import prepare_blocks as blocks
from pinsage_ray.graph import prepare_features as features
from pinsage_ray.graph.inputs import InputError
from pinsage_ray.graph.prepare_write import NpyStream
from pinsage_ray.graph.prepare_write import write_csr as _write_csr
from pinsage_ray.graph.store import FORMAT_NAME, FORMAT_VERSION, GraphStore

logger = logging.getLogger(__name__)

__all__ = ["AUTO_RAY_MIN_BYTES", "ENGINES", "pick_engine", "prepare_ray"]

#: ``engine="auto"`` runs on Ray from this many bytes of input files: about 100M rows of
#: Parquet at the 20 bytes per row measured with weights and timestamps, where the local
#: engine needs about 9.5 GB (95 bytes per row). Below it one process is faster: Ray Data's
#: three sorts cost seconds each even on tiny inputs (docs/scaling.md).
AUTO_RAY_MIN_BYTES = 2 << 30
ENGINES = ("auto", "local", "ray")
#: Rows read by one task at most (whole Parquet row groups; a CSV file is one task).
FRAGMENT_ROWS = 1 << 20
#: Below ``FRAGMENT_ROWS``, Parquet input is cut into at least this many fragments per CPU
#: of the cluster (down to :data:`FRAGMENT_MIN_ROWS` rows each), so the rows a task or a sort
#: partition holds, and with them each process's memory, shrink as nodes are added.
FRAGMENTS_PER_CPU = 2
FRAGMENT_MIN_ROWS = 1 << 16


def fragment_rows(total_rows: int, cpus: float) -> int:
    """Rows per fragment for ``total_rows`` of Parquet on a cluster of ``cpus`` CPUs."""
    share = -(-int(total_rows) // (FRAGMENTS_PER_CPU * max(int(cpus), 1)))
    return int(min(FRAGMENT_ROWS, max(FRAGMENT_MIN_ROWS, share)))


def pick_engine(source: Any, engine: str) -> str:
    """``"local"`` or ``"ray"`` for ``prepare(source, engine=engine)``."""
    if engine not in ENGINES:
        raise ValueError(f"prepare(engine={engine!r}): expected one of {list(ENGINES)}")
    is_path = isinstance(source, (str, os.PathLike)) and not isinstance(source, RawDataset)
    if not is_path:
        if engine == "ray":
            raise ValueError(f"prepare(engine='ray') reads Parquet/CSV files; got "
                             f"<{type(source).__name__}>: write it to Parquet first, or use "
                             "engine='local'")
        return "local"
    if engine != "auto":
        return engine
    try:
        size = input_bytes(os.fspath(source))
    except OSError:
        return "local"  # the local engine reports the missing input
    return "ray" if size >= AUTO_RAY_MIN_BYTES else "local"


def input_bytes(path: str) -> int:
    """Total size of an input file, or of the files under an input folder."""
    fs, resolved = _io.resolve(path)
    info = fs.get_file_info(resolved)
    if info.type == _io.pafs.FileType.File:
        return int(info.size)
    if info.type == _io.pafs.FileType.NotFound:
        return 0
    return sum(int(i.size or 0) for i in fs.get_file_info(
        _io.pafs.FileSelector(resolved, recursive=True)) if i.type == _io.pafs.FileType.File)


@dataclass
class _Files:
    """An input's files and Parquet row groups, before they are cut into fragments."""

    files: list  # (file index, path, [(row group id, rows)] or None for CSV)
    fmt: str
    fs: Any
    root: str
    schema: pa.Schema

    @property
    def parquet_rows(self) -> int:
        return sum(n for _, _, groups in self.files for _, n in (groups or ()))

    def fragments(self, max_rows: int = FRAGMENT_ROWS) -> list[blocks.Fragment]:
        """Runs of whole row groups of at most ``max_rows`` rows (a CSV file: one fragment)."""
        frags: list[blocks.Fragment] = []
        for index, path, groups in self.files:
            if groups is None:
                frags.append(blocks.Fragment(index, path, (), 0))
                continue
            start, run, rows = 0, [], 0
            for group, n in groups:
                if run and rows + n > max_rows:
                    frags.append(blocks.Fragment(index, path, tuple(run), start))
                    start, run, rows = start + rows, [], 0
                run.append(group)
                rows += n
            frags.append(blocks.Fragment(index, path, tuple(run), start))
        return frags


def _files(path: str) -> _Files:
    """The input's files (with their row groups), format, filesystem, path and schema."""
    import pyarrow.dataset as pads

    fs, resolved = _io.resolve(path)
    info = fs.get_file_info(resolved)
    if info.type == _io.pafs.FileType.NotFound:
        raise FileNotFoundError(f"input {path!r} does not exist")
    fmt = inputs._input_format(fs, resolved, info, path)
    try:
        dataset = pads.dataset(resolved, filesystem=fs, format=fmt)
        files = [(index, f.path, None if fmt != "parquet" else
                  [(g.id, g.num_rows) for g in f.row_groups])
                 for index, f in enumerate(dataset.get_fragments())]
    except (pa.ArrowException, OSError, ValueError) as err:
        text = " ".join(str(err).split())[:300]
        raise InputError(f"input {path!r}: cannot be read as {fmt} ({text}); check the file "
                         "is a complete, valid Parquet/CSV file") from None
    return _Files(files, fmt, fs, resolved, dataset.schema)


def _cluster_fragments(files: _Files) -> list[blocks.Fragment]:
    """``files`` cut for the running Ray cluster (:func:`fragment_rows`)."""
    import ray

    return files.fragments(fragment_rows(files.parquet_rows,
                                         ray.cluster_resources().get("CPU", 1)))


def _feature_input(path: str, columns: dict[str, str]) -> features.FeatureInput:
    files = _files(path)
    return features.FeatureInput(path, files,
                                 inputs.feature_item_column(files.schema.names, columns))


def prepare_ray(source: str | os.PathLike, graph_dir: str | os.PathLike, *,
                item_features: Any = None, overwrite: bool = False,
                columns: dict[str, str] | None = None) -> GraphStore:
    """:func:`pinsage_ray.graph.prepare.prepare` on Ray (same arguments, same result).

    Raises:
        InputError, FileNotFoundError, FileExistsError: as the local engine.
    """
    import ray
    import ray.data

    from pinsage_ray.ray_utils import init_ray

    t0 = time.perf_counter()
    columns = inputs.check_columns(columns)
    user_path = os.fspath(source)
    name = os.path.basename(user_path.rstrip("/"))
    files = _files(user_path)
    fmt, fs, root, schema = files.fmt, files.fs, files.root, files.schema
    origin = inputs.Source(user_path, fmt, fs, root)
    feats, feats_origin, feats_src = None, f"{origin} (item_features)", None
    if item_features is not None:
        feats = inputs.as_table(item_features, "prepare(item_features=...)")
        feats_origin = f"<{type(item_features).__name__}> (item_features)"
        if feats is None:  # a file or folder: read by tasks (prepare_features)
            feats_src = _feature_input(os.fspath(item_features), columns)
    if feats is not None:
        feats = inputs.rename_item(feats, inputs.feature_item_column(feats.column_names, columns))
    out_fs, final = _io.resolve(graph_dir)
    if _io.exists(out_fs, final) and not overwrite:  # fail before the work, as atomic_directory
        raise FileExistsError(f"{final!r} already exists; pass overwrite=True (CLI: "
                              "--overwrite) to replace it or choose another directory.")
    init_ray()
    frags = _cluster_fragments(files)
    if feats_src is not None:
        feats_src.frags = _cluster_fragments(feats_src.files)
    args = (fmt, fs, schema, user_path, user_path, root, columns)

    def read(batch: dict) -> pa.Table:
        frag = frags[int(batch["id"][0])]
        rows_origin = blocks.FileRows(user_path, fmt, fs, root, frag)
        return blocks.clean_rows(blocks.read_fragment(frag, fmt, fs, schema, user_path),
                                 columns, rows_origin)

    try:
        rows = (ray.data.range(len(frags), override_num_blocks=max(len(frags), 1))
                .map_batches(read, batch_size=1, batch_format="numpy").materialize())
    except Exception:
        _raise_first_error(frags, args)
        raise
    rows_read = rows.count()
    if rows_read == 0:
        raise InputError(f"{origin}: no interactions (empty input); nothing to build a graph from")
    mapped = inputs.map_columns(schema.empty_table(), columns, origin).schema
    has_times, weighted = "timestamp" in mapped.names, "weight" in mapped.names
    item_type = pa.int64() if pa.types.is_integer(mapped.field("item").type) else pa.string()
    # Groups: sorted blocks hold whole groups; offsets from each block's distinct count.
    by_group, kept = _in_key_order(rows.map_batches(blocks.drop_zero, batch_format="pyarrow")
                                   .sort("group").to_arrow_refs(), "group", strict=True)
    del rows
    if kept == 0:
        raise InputError(f"{origin}: every row has weight 0; nothing to build a graph from")
    offsets = _offsets(ray.get([_remote(_distinct).remote(r, "group") for r in by_group]))
    enc = [_remote(blocks.encode_groups).options(num_returns=2).remote(r, o)
           for r, o in zip(by_group, offsets)]
    group_id_refs = [e[1] for e in enc]
    encoded = ray.data.from_arrow_refs([e[0] for e in enc])
    feature_rows, dim = None, 0
    if feats_src is not None:  # checked and converted by tasks, one per fragment
        checked = features.read_features(feats_src, item_type)
        if checked is None:  # a fragment failed a check: the whole table's checks raise below
            feats, feats_origin = features.read_whole(feats_src)
        else:
            feature_rows, dim = checked
            encoded = encoded.union(ray.data.from_arrow_refs(
                [_remote(features.markers).remote(r, has_times) for r in feature_rows]))
    if feats is not None:  # every feature item, as a marker row (gcode -1)
        ids = inputs.feature_only_items(feats, pa.array([], type=item_type), feats_origin)
        # The checks that do not need the graph's ids, now rather than after two more sorts.
        inputs.feature_matrix(feats, ids, feats_origin, check_only=True)
        encoded = encoded.union(ray.data.from_arrow(_markers(ids, has_times)))
    group_ids = pa.concat_arrays(ray.get(group_id_refs))
    n_groups = len(group_ids)

    # Items: encode, merge duplicate edges per block (whole items per block).
    by_item, _ = _in_key_order(encoded.sort("item").to_arrow_refs(), "item", strict=True)
    offsets = _offsets(ray.get([_remote(_distinct).remote(r, "item") for r in by_item]))
    merged = [_remote(blocks.encode_items_and_merge).options(num_returns=3).remote(
        r, o, n_groups, weighted) for r, o in zip(by_item, offsets)]
    counts = ray.get([m[2] for m in merged])
    item_ids = pa.concat_arrays(ray.get([m[1] for m in merged]))
    n_items, n_edges = len(item_ids), sum(c["edges"] for c in counts)
    feature_only = n_items - sum(c["items_with_edges"] for c in counts)
    edge_refs = [m[0] for m in merged]
    group_key = ["gcode", "t", "fseq"] if has_times else ["gcode", "icode"]
    by_group_edges, _ = _in_key_order(
        ray.data.from_arrow_refs(edge_refs).sort(group_key).to_arrow_refs(), group_key,
        strict=False)

    report = {"duplicate_rows_merged": int(kept - n_edges), "rows_read": int(rows_read),
              "zero_weight_rows_dropped": int(rows_read - kept)}
    feature_matrix = (inputs.feature_matrix(feats, item_ids, feats_origin)
                      if feats is not None else None)
    if feature_matrix is not None:
        dim = int(feature_matrix.shape[1])
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION, "name": name,
        "source": str(origin), "num_items": n_items, "num_groups": n_groups,
        "num_edges": int(n_edges), "feature_only_items": int(feature_only),
        "feature_dim": dim,
        "has_timestamps": has_times, "item_id_type": str(item_ids.type),
        "group_id_type": str(group_ids.type), "report": report, "files": {},
    }
    with _io.atomic_directory(graph_dir, overwrite=overwrite) as tmp:
        files = manifest["files"]
        if feature_rows is not None:  # first: a duplicate or missing row is an input error
            stream = NpyStream(out_fs, _io.join(tmp, "item_features.npy"), np.float32,
                                (n_items, dim))
            try:
                aligned = features.align_features(feature_rows, item_ids, dim, stream)
            finally:
                stream.stream.close()
            if not aligned:
                features.raise_local_error(feats_src, item_ids)
            files["item_features.npy"] = stream.close()
        item_stats, any_weight = _write_csr(out_fs, tmp, "item", edge_refs, n_items, n_edges,
                                          files, times=False)
        group_stats, _ = _write_csr(out_fs, tmp, "group", by_group_edges, n_groups, n_edges,
                                  files, times=has_times)
        if feature_matrix is not None:
            files["item_features.npy"] = _io.write_npy(
                out_fs, _io.join(tmp, "item_features.npy"), feature_matrix)
        for side, ids in (("item", item_ids), ("group", group_ids)):
            files[f"{side}_ids.parquet"] = _io.write_parquet(
                out_fs, _io.join(tmp, f"{side}_ids.parquet"), pa.table({"id": ids}))
        manifest["weighted"] = any_weight
        manifest["stats"] = {"item_degree": item_stats, "group_degree": group_stats}
        manifest["prepare_seconds"] = round(time.perf_counter() - t0, 3)
        _io.write_json(out_fs, _io.join(tmp, "manifest.json"), manifest)
    logger.info("prepared %s on Ray: %d items (%d feature-only), %d groups, %d edges from %d "
                "fragments in %.1fs", graph_dir, n_items, feature_only, n_groups, n_edges,
                len(frags), manifest["prepare_seconds"])
    return GraphStore(graph_dir)


def _remote(fn: Any) -> Any:
    """``ray.remote(fn)``, made once per process (Ray is imported only when used)."""
    if fn not in _REMOTES:
        import ray

        _REMOTES[fn] = ray.remote(fn)
    return _REMOTES[fn]


_REMOTES: dict[Any, Any] = {}


def _distinct(table: pa.Table, key: str) -> int:
    import pyarrow.compute as pc

    return len(pc.unique(table.column(key)))


def _offsets(counts: list[int]) -> list[int]:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64).tolist()


def _in_key_order(refs: list, key: str | list[str], *, strict: bool) -> tuple[list, int]:
    """Non-empty sorted blocks in key order, and their rows. ``strict``: no key value may span
    two blocks (what Ray Data's sort gives and ``map_groups`` relies on; checked here)."""
    import ray

    summaries = ray.get([_remote(blocks.key_summary).remote(r, key) for r in refs])
    kept = sorted(((s, r) for s, r in zip(summaries, refs) if s[0]), key=lambda sr: sr[0][1])
    for (a, _), (b, _) in zip(kept, kept[1:]):
        if a[2] > b[1] or (strict and a[2] == b[1]):
            raise RuntimeError(f"Ray Data's sort by {key!r} split key {b[1]} across blocks; "
                               "prepare(engine='ray') needs whole keys per block: use "
                               "engine='local' and report this Ray version")
    return [r for _, r in kept], sum(s[0] for s, _ in kept)


def _markers(ids: pa.Array, has_times: bool) -> pa.Table:
    """One row per feature item, marked by ``gcode == -1`` (dropped after encoding)."""
    n = len(ids)
    cols: dict[str, Any] = {"item": ids, "w": np.zeros(n)}
    if has_times:
        cols["t"] = np.zeros(n, dtype=np.int64)
    cols["seq"] = np.full(n, -1, dtype=np.int64)
    cols["gcode"] = np.full(n, -1, dtype=np.int64)
    return pa.table(cols)


def _raise_first_error(frags: list[blocks.Fragment], args: tuple) -> None:
    """Raise the error the local engine would raise, if any fragment has one."""
    import ray

    found = [e for e in ray.get([_remote(blocks.check_fragment).remote(f, *args)
                                 for f in frags]) if e is not None]
    if found:
        raise InputError(min(found)[2]) from None
