"""Saving items added to a trained run (cold start) into the run itself.

:meth:`pinsage_ray.Recommender.add_items` embeds new items in memory; :meth:`Recommender.
save_added_items` keeps them, in three steps, each atomic (written under a temp name, then
renamed into place), ordered so that a crash at any point leaves a run that loads:

1. :func:`append_embeddings` writes the new rows as the run's next embeddings part
   (``embeddings/part-NNNNN.parquet``; nothing lists it yet, so a crash here leaves an unused
   file);
2. it then replaces ``embeddings/_manifest.json`` with one that lists the part, with the size
   and sha256 that ``load_embeddings`` verifies: from here on the embeddings hold the new
   items (the commit point);
3. the caller saves the index (``HNSWIndex.save``: a temp directory renamed into place).

A crash between 2 and 3 leaves an index older than the embeddings: ``Recommender.load``
refuses it, and ``pinsage-ray index RUN_DIR`` rebuilds it from the embeddings, added items
included. Re-running ``pinsage-ray embed`` recomputes the embeddings of the graph's items and
drops added ones (add them again, or prepare a graph that holds them).
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

import numpy as np
import pyarrow as pa

from pinsage_ray import _io
from pinsage_ray.inference.model_io import run_path

logger = logging.getLogger(__name__)

MANIFEST = "_manifest.json"


def embeddings_table(ids: np.ndarray, emb: np.ndarray) -> pa.Table:
    """``item`` + ``embedding`` (list<float>) rows, the layout ``embed`` writes."""
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    offsets = np.arange(0, emb.size + 1, emb.shape[1], dtype=np.int32)
    return pa.table({"item": pa.array(ids.tolist()),
                     "embedding": pa.ListArray.from_arrays(pa.array(offsets),
                                                           pa.array(emb.ravel()))})


def append_embeddings(run_dir: str | os.PathLike, ids: np.ndarray,
                      emb: np.ndarray) -> dict[str, Any]:
    """Add rows to ``run_dir/embeddings`` as a new part (steps 1-2 of the module docstring).

    Args:
        run_dir: the run.
        ids: (M,) original ids of the new items.
        emb: float32 (M, D) their embeddings.

    Returns:
        ``{"part": path of the new part, "count": rows now in the embeddings}``.
    """
    fs, path = _io.resolve(run_path(run_dir, "embeddings"))
    manifest = _io.read_json(fs, _io.join(path, MANIFEST))
    if emb.ndim != 2 or emb.shape[1] != int(manifest["dim"]) or len(ids) != len(emb):
        raise ValueError(f"embeddings of shape {emb.shape} for {len(ids)} ids; expected "
                         f"(M, {manifest['dim']}) with one id per row")
    files = dict(manifest["files"])
    k = len(files)
    while f"part-{k:05d}.parquet" in files:
        k += 1
    name = f"part-{k:05d}.parquet"  # sorts after the existing parts: rows keep their order
    table = embeddings_table(np.asarray(ids), emb)
    if files:  # the new part's id column must concatenate with the existing parts'
        import pyarrow.parquet as pq

        first = _io.join(path, sorted(files)[0])
        item_type = pq.read_schema(first, filesystem=fs).field("item").type
        table = table.set_column(0, "item", table.column("item").cast(item_type))
    part = _io.join(path, name)
    files[name] = _write_then_rename(fs, part, lambda p: _io.write_parquet(fs, p, table))
    manifest.update(files=files, count=int(manifest["count"]) + len(ids),
                    added_items=int(manifest.get("added_items", 0)) + len(ids))
    _write_then_rename(fs, _io.join(path, MANIFEST),
                       lambda p: _io.write_json(fs, p, manifest))  # the commit point
    logger.info("saved %d added items into %s (%s)", len(ids), path, name)
    return {"part": part, "count": manifest["count"]}


def _write_then_rename(fs: Any, final: str, write: Any) -> Any:
    """``write(temp path)``, then rename the temp file to ``final`` (replacing it)."""
    tmp = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        out = write(tmp)
        fs.move(tmp, final)
    except BaseException:
        if _io.exists(fs, tmp):
            fs.delete_file(tmp)
        raise
    return out
