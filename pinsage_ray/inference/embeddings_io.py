"""Reading ``run_dir/embeddings``: all of it, or one row range without the rest.

``embed`` writes the embeddings as Parquet parts (``item`` + ``embedding`` list<float>) and a
checksummed ``_manifest.json`` listing them; rows are in part-name order. Every reader checks
a part against its manifest entry (size and sha256) before parsing it, so a truncated or
bit-flipped part is named rather than half-read.

* :func:`load_embeddings` concatenates every part (the :class:`~pinsage_ray.Recommender`
  and the evaluation read it this way);
* :func:`embedding_layout` lists the parts with their row counts (Parquet footers only) and
  :func:`read_embedding_rows` reads rows ``[lo, hi)`` from just the parts that hold them: the
  partitioned index build (:mod:`pinsage_ray.inference.index_build`) gives each task one
  range, so no process reads every embedding.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pinsage_ray import _io
from pinsage_ray.inference.model_io import run_path

__all__ = ["EmbeddingsError", "embedding_layout", "load_embeddings", "read_embedding_rows"]


class EmbeddingsError(ValueError):
    """``run_dir/embeddings`` is incomplete or corrupted; re-run ``pinsage-ray embed``."""


def _manifest(run_dir: str | os.PathLike) -> tuple[Any, str, dict[str, Any], str]:
    """``(filesystem, embeddings path, manifest, fix text)``; the manifest's fields checked."""
    fs, path = _io.resolve(run_path(run_dir, "embeddings"))
    manifest_path = _io.join(path, "_manifest.json")
    if not _io.exists(fs, manifest_path):
        raise FileNotFoundError(f"{path}: no embeddings; run `pinsage-ray embed RUN_DIR` first")
    fix = f"re-run `pinsage-ray embed {run_dir}`"
    try:
        manifest = _io.read_json(fs, manifest_path)
        int(manifest["count"]), int(manifest["dim"]), dict(manifest["files"])
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as err:
        raise EmbeddingsError(f"{manifest_path}: unreadable ({type(err).__name__}: {err}); "
                              f"{fix}") from None
    return fs, path, manifest, fix


def _read_part(fs: Any, path: str, name: str, expected: dict, fix: str) -> pa.Table:
    part = _io.join(path, name)
    _io.verify_file(fs, part, expected, fix, error=EmbeddingsError)
    try:
        return pq.read_table(part, filesystem=fs)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise EmbeddingsError(f"{part}: not a readable Parquet file ({err}); {fix}") from None


def _to_arrays(table: pa.Table | None, count: int, dim: int, where: str,
               fix: str) -> tuple[pa.Array, np.ndarray]:
    if table is None or table.num_rows != count or not {"item", "embedding"} <= set(
            table.column_names):
        raise EmbeddingsError(f"{where}: parts hold {0 if table is None else table.num_rows} "
                              f"rows (columns item, embedding expected), manifest says {count}; "
                              f"{fix}")
    values = table.column("embedding").combine_chunks().flatten()
    if len(values) != count * dim:
        raise EmbeddingsError(f"{where}: {len(values)} values for {count} x {dim} embeddings; "
                              f"{fix}")
    emb = values.to_numpy(zero_copy_only=False).reshape(count, dim).astype(np.float32)
    return table.column("item").combine_chunks(), emb


def load_embeddings(run_dir: str | os.PathLike) -> tuple[pa.Array, np.ndarray]:
    """``(original item ids, float32 (N, D))`` from ``run_dir/embeddings``.

    Checked before use: ``_manifest.json`` parses; every part it lists exists with the size
    and sha256 recorded when ``embed`` wrote it (so a truncated or bit-flipped part is caught
    even where it would still parse); the parts hold ``count`` rows of ``dim`` values.

    Raises:
        FileNotFoundError: no embeddings yet.
        EmbeddingsError: naming the damaged file; re-running ``pinsage-ray embed`` fixes it.
    """
    fs, path, manifest, fix = _manifest(run_dir)
    files = manifest["files"]
    tables = [_read_part(fs, path, name, files[name], fix) for name in sorted(files)]
    table = pa.concat_tables(tables) if tables else None
    return _to_arrays(table, int(manifest["count"]), int(manifest["dim"]), path, fix)


def embedding_layout(run_dir: str | os.PathLike) -> dict[str, Any]:
    """``{"count", "dim", "parts": [(name, rows), ...]}`` in row order (Parquet footers only).

    Raises:
        EmbeddingsError: the parts' row counts do not add up to the manifest's ``count``.
    """
    fs, path, manifest, fix = _manifest(run_dir)
    parts = []
    for name in sorted(manifest["files"]):
        part = _io.join(path, name)
        try:
            rows = pq.ParquetFile(part, filesystem=fs).metadata.num_rows
        except (pa.ArrowException, OSError, ValueError) as err:
            raise EmbeddingsError(f"{part}: not a readable Parquet file ({err}); {fix}") from None
        parts.append((name, int(rows)))
    count = int(manifest["count"])
    if sum(r for _, r in parts) != count:
        raise EmbeddingsError(f"{path}: parts hold {sum(r for _, r in parts)} rows, manifest "
                              f"says {count}; {fix}")
    return {"count": count, "dim": int(manifest["dim"]), "parts": parts}


def read_embedding_rows(run_dir: str | os.PathLike, lo: int,
                        hi: int) -> tuple[pa.Array, np.ndarray]:
    """Rows ``[lo, hi)`` of the embeddings, reading (and verifying) only the parts holding them.

    Raises:
        ValueError: the range is not inside ``[0, count]``.
        EmbeddingsError: a part it reads is damaged.
    """
    layout = embedding_layout(run_dir)
    if not 0 <= lo <= hi <= layout["count"]:
        raise ValueError(f"rows [{lo}, {hi}) are outside the {layout['count']} embeddings")
    fs, path, manifest, fix = _manifest(run_dir)
    tables, start = [], 0
    for name, rows in layout["parts"]:
        end = start + rows
        if end > lo and start < hi:
            t = _read_part(fs, path, name, manifest["files"][name], fix)
            tables.append(t.slice(max(lo - start, 0), min(hi, end) - max(lo, start)))
        start = end
    table = pa.concat_tables(tables) if tables else None
    if table is None and hi == lo:
        return pa.array([], type=pa.int64()), np.zeros((0, layout["dim"]), np.float32)
    return _to_arrays(table, hi - lo, layout["dim"], f"{path} rows [{lo}, {hi})", fix)
