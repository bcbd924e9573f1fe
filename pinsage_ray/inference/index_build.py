"""Build the item index from ``run_dir/embeddings``: one HNSW index, or one per partition.

:func:`build_run_index` is what ``build_index`` / ``pinsage-ray index`` run. With
``partitions=1`` it loads every embedding and builds one
:class:`~pinsage_ray.index.HNSWIndex` in this process (the simple path, fine to tens of
millions of items on one machine). With ``partitions=P > 1`` it builds a
:class:`~pinsage_ray.index.PartitionedIndex` for graphs whose embeddings should not meet in
one process: P Ray tasks (``SPREAD`` over the nodes, 1 CPU each) each read only their own
contiguous row range of the embeddings (:func:`~pinsage_ray.inference.embeddings_io.read_embedding_rows`),
build their partition's index (own ``ef`` tuning and HNSW-or-exact choice) and write it
straight into the index's temp directory; the driver handles only per-partition summaries
and writes the partitioned manifest last, then the temp directory replaces ``run_dir/index``
(a URI: published with the manifests last), so a failed or killed build leaves the old index.

The run directory must be where every task can read and write it: a URI (``s3://...``) or a
filesystem shared by the nodes, as for ``embed``. ``engine="local"`` builds the partitions one
after another in this process (no Ray), with the same result.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from typing import Any


from pinsage_ray import _io
from pinsage_ray.index import HNSWConfig, HNSWIndex, PartitionedIndex, partition_bounds
from pinsage_ray.index._hnsw_io import MANIFEST_FILE, check_replaceable
from pinsage_ray.index.partitioned import part_dir_name, partitioned_manifest
from pinsage_ray.inference.embeddings_io import embedding_layout, load_embeddings, read_embedding_rows
from pinsage_ray.inference.model_io import run_path

logger = logging.getLogger(__name__)

ENGINES = ("ray", "local")


def build_part(run_dir: str, lo: int, hi: int, config: dict[str, Any], out: str) -> dict[str, Any]:
    """Index rows ``[lo, hi)`` of the embeddings and save it at ``out``; a summary back."""
    start = time.perf_counter()
    ids, emb = read_embedding_rows(run_dir, lo, hi)
    index = HNSWIndex.build(emb, ids.to_numpy(zero_copy_only=False), HNSWConfig(**config))
    index.save(out)
    return {"dir": out.rstrip("/").rsplit("/", 1)[-1], "count": len(index),
            "search": index.search, "ef": index.ef, "recall_at_k": index.recall_at_k,
            "seconds": time.perf_counter() - start, "node": _node_id()}


def _node_id() -> str | None:
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - informational only
        return None


def build_run_index(run_dir: str | os.PathLike, config: HNSWConfig | None = None, *,
                    partitions: int = 1, engine: str = "ray",
                    show_progress: bool = False) -> HNSWIndex | PartitionedIndex:
    """Build and save ``run_dir/index`` from ``run_dir/embeddings``; returns the index.

    Args:
        run_dir: the run (local, shared, or a URI).
        config: HNSW settings, applied to every partition.
        partitions: 1 for one index; P > 1 for P partitions of near-equal size.
        engine: ``'ray'`` (one task per partition) or ``'local'`` (in this process); used
            only when ``partitions > 1``.
        show_progress: a progress bar (one index: insertions; partitions: tasks done).
    """
    config = config or HNSWConfig()
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r}; expected one of {ENGINES}")
    target = run_path(run_dir, "index")
    if partitions == 1:
        ids, emb = load_embeddings(run_dir)
        index = HNSWIndex.build(emb, ids.to_numpy(zero_copy_only=False), config,
                                show_progress=show_progress)
        index.save(target)
        return index
    layout = embedding_layout(run_dir)
    bounds = partition_bounds(layout["count"], partitions)
    check_replaceable(target)  # as a single index's save does
    with _io.atomic_directory(target, overwrite=True) as tmp:
        outs = [_io.uri_for(target, _io.join(tmp, part_dir_name(p)))  # tasks resolve these
                for p in range(partitions)]
        jobs = [(str(run_dir), int(lo), int(hi), asdict(config), out)
                for lo, hi, out in zip(bounds[:-1], bounds[1:], outs)]
        summaries = _run(jobs, engine, show_progress)
        fs, _ = _io.resolve(target)
        entries = [{"dir": s["dir"], "count": s["count"],
                    "manifest_sha256": _io.sha256_of(fs, _io.join(tmp, s["dir"], MANIFEST_FILE))}
                   for s in summaries]
        _io.write_json(fs, _io.join(tmp, MANIFEST_FILE), partitioned_manifest(
            entries, layout["count"], layout["dim"], config.space, bounds=bounds.tolist(),
            build={"engine": engine, "seconds_per_partition": [s["seconds"] for s in summaries],
                   "nodes": [s["node"] for s in summaries]}))
    logger.info("partitioned index: %d items in %d partitions (%s), searches %s", layout["count"],
                partitions, engine, sorted({s["search"] for s in summaries}))
    from pinsage_ray.index import load_index

    return load_index(target)


def _run(jobs: list[tuple], engine: str, show_progress: bool) -> list[dict[str, Any]]:
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="index partitions", unit="part", disable=not show_progress)
    try:
        if engine == "local":
            out = []
            for job in jobs:
                out.append(build_part(*job))
                bar.update(1)
            return out
        import ray

        from pinsage_ray.ray_utils import init_ray

        init_ray()
        task = ray.remote(num_cpus=1, max_retries=2)(build_part)
        refs = [task.options(scheduling_strategy="SPREAD").remote(*job) for job in jobs]
        pending = list(refs)
        while pending:  # results are small summaries; the indexes went to storage
            ready, pending = ray.wait(pending, num_returns=1)
            ray.get(ready)  # raise a task's error now
            bar.update(1)
        return ray.get(refs)
    finally:
        bar.close()
