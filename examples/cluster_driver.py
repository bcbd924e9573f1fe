"""A driver for a ``ray up`` cluster: prepare -> train -> embed -> index, then a summary.

Submit it as a Ray job from the repo root (see docs/cluster.md and examples/README.md)::

    ray job submit --address http://127.0.0.1:8265 --working-dir . -- \\
        python examples/cluster_driver.py --input s3://bucket/raw/interactions \\
        --graph-dir s3://bucket/pinsage/graph --run-dir s3://bucket/pinsage/runs/exp1 \\
        --num-workers 4 --use-gpu --num-shards 8 --epochs 5

Every path may be local or a URI that pyarrow opens (``s3://``, ``gs://``). On a cluster the
graph and run directories must be on storage every node reads (shard actors, Train workers and
Ray Data actors open them by path). Stages:

1. **prepare** ``--input`` (Parquet/CSV file or folder: ``item``, ``group`` [, ``weight``,
   ``timestamp``]; optional ``--features``) into ``--graph-dir``, skipped when the graph
   directory already has a manifest (prepare once, train many times);
2. **train** with Ray Train (``--num-workers`` data-parallel workers, optionally on GPUs; walks
   served by ``--num-shards`` shard actors); rerunning with the same ``--run-dir`` and config
   resumes from the last checkpoint;
3. **embed** every item with layer-wise inference as Ray Data passes (``--embed-mode ray``);
4. **index**: HNSW over the embeddings, built in the driver's memory and saved to
   ``RUN_DIR/index`` (``build_index`` uploads it to an ``s3://`` run directory itself).

The summary (printed; as JSON with ``--summary-json``) has the graph, the per-epoch metrics,
timings and related items for the most connected items. Run it locally with
``--address local`` and local paths (see examples/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

logger = logging.getLogger("cluster_driver")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", help="interactions: Parquet/CSV file or folder, local or s3:// "
                   "(not needed when --graph-dir already holds a graph)")
    p.add_argument("--features", help="optional item features Parquet (item + list column "
                   "or numeric columns)")
    p.add_argument("--graph-dir", required=True, help="graph directory (shared storage)")
    p.add_argument("--run-dir", required=True, help="run directory (shared storage)")
    p.add_argument("--address", default=os.environ.get("RAY_ADDRESS", "auto"),
                   help="Ray address: 'auto' joins the cluster this runs on, 'local' starts "
                        "a private local instance")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs of a local instance (--address local only)")
    p.add_argument("--num-workers", type=int, default=1, help="Ray Train workers")
    p.add_argument("--use-gpu", action="store_true", help="one GPU per Train worker")
    p.add_argument("--num-shards", type=int, default=0,
                   help="walk-service shard actors for training and inference (0 = none)")
    p.add_argument("--preset", default="items", choices=["items", "groups", "paper"],
                   help="training recipe (docs/quality.md); the flags below override it")
    p.add_argument("--epochs", type=int, default=None, help="default: the preset's (5)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="queries per batch per worker (default: the preset's)")
    p.add_argument("--batches-per-epoch", type=int, default=None,
                   help="0 = one pass over the training pairs (the presets' default)")
    p.add_argument("--lr", type=float, default=None, help="default: the preset's")
    p.add_argument("--train-config", help="JSON file of further TrainConfig fields (over "
                   "the preset; the flags above override it)")
    p.add_argument("--embed-mode", choices=["ray", "local", "auto"], default="ray")
    p.add_argument("--embed-actors", type=int, default=2, help="Ray Data actors per layer")
    p.add_argument("--embed-batch-size", type=int, default=8192)
    p.add_argument("--examples", type=int, default=3,
                   help="print related items for this many of the most connected items")
    p.add_argument("--summary-json", help="also write the summary to this local file")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def is_remote(path: str) -> bool:
    return "://" in path


def path_exists(path: str) -> bool:
    """Whether a local path or URI exists (a file or a directory)."""
    import pyarrow.fs as pafs

    if is_remote(path):
        fs, inner = pafs.FileSystem.from_uri(path)
    else:
        fs, inner = pafs.LocalFileSystem(), os.path.abspath(path)
    return fs.get_file_info(inner).type != pafs.FileType.NotFound


def train_config(args: argparse.Namespace) -> Any:
    """TrainConfig: the ``--preset``, ``--train-config`` JSON over it, the flags on top."""
    from pinsage_ray.training import TrainConfig

    fields: dict[str, Any] = {}
    if args.train_config:
        with open(args.train_config) as f:
            fields = json.load(f)
    fields.update(num_workers=args.num_workers, use_gpu=args.use_gpu,
                  num_shards=args.num_shards, seed=args.seed)
    given = {"num_epochs": args.epochs, "batch_size": args.batch_size,
             "batches_per_epoch": args.batches_per_epoch, "lr": args.lr}
    fields.update({k: v for k, v in given.items() if v is not None})
    return TrainConfig.preset(args.preset, **fields)


def stage_prepare(args: argparse.Namespace) -> Any:
    from pinsage_ray.graph import GraphStore, prepare

    manifest = args.graph_dir.rstrip("/") + "/manifest.json"
    if path_exists(manifest):
        logger.info("graph %s exists: prepare skipped", args.graph_dir)
        return GraphStore(args.graph_dir), True
    if not args.input:
        raise SystemExit(f"--graph-dir {args.graph_dir!r} holds no graph yet: give --input")
    logger.info("preparing %s -> %s", args.input, args.graph_dir)
    return prepare(args.input, args.graph_dir, item_features=args.features), False


def stage_index(run_dir: str) -> Any:
    """Build and save ``RUN_DIR/index`` (local or a URI); returns a Recommender over it."""
    from pinsage_ray.recommender import Recommender, build_index

    build_index(run_dir)
    return Recommender.load(run_dir)


def related_examples(store: Any, rec: Any, count: int) -> list[dict[str, Any]]:
    """Related items of the ``count`` items with the most groups (titles when known)."""
    import numpy as np

    if count <= 0:
        return []
    top = np.argsort(-store.degrees("item"), kind="stable")[:count]
    items = store.item_ids.take(top).to_pylist()
    meta = store.metadata()
    title = (dict(zip(meta.column("item").to_pylist(), meta.column("title").to_pylist()))
             if meta is not None and "title" in meta.column_names else {})
    rows = rec.similar_items_batch(items, k=5)
    return [{"item": i, **({"title": title[i]} if i in title else {}),
             "similar": [{"item": j, **({"title": title[j]} if j in title else {}),
                          "score": round(s, 4)} for j, s in row]}
            for i, row in zip(items, rows)]


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a few readable lines (the JSON form goes to ``--summary-json``)."""
    g, tr, ix = summary["graph"], summary["train"], summary["index"]
    lines = [f"graph {g['dir']}: {g['items']} items, {g['groups']} groups, {g['edges']} edges, "
             f"{g['feature_dim']} features{' (reused)' if g['reused'] else ''}",
             f"train {tr['run_dir']}: {tr['workers']} worker(s), gpu={tr['use_gpu']}, "
             f"{tr['shards']} walk shard(s); best epoch {tr['best_epoch']}"]
    for m in tr["history"]:
        lines.append(f"  epoch {m['epoch']}: loss {m['loss']:.4f}, hard negatives "
                     f"{m['hard_negatives']}, {m['examples_per_s']:.0f} examples/s, "
                     f"val hit@10 {m.get('val_hit_at_10', float('nan')):.3f}")
    e = summary["embed"]
    lines.append(f"embed {e['path']}: {e['items']} x {e['dim']} ({e['mode']} mode)")
    lines.append(f"index: {ix['items']} items, ef={ix['ef']}, recall@10 {ix['recall_at_10']}")

    def name(d: dict[str, Any]) -> str:
        return f"{d['item']} ({d['title']})" if "title" in d else str(d["item"])

    for ex in summary["related"]:
        sims = ", ".join(f"{name(s)} {s['score']:.3f}" for s in ex["similar"])
        lines.append(f"  related to {name(ex)}: {sims}")
    lines.append("seconds: " + ", ".join(f"{k} {v}" for k, v in summary["seconds"].items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("ray", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.address == "local":  # settings for small machines; a cluster sets its own
        os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")

    import ray

    from pinsage_ray.inference.pipeline import embed
    from pinsage_ray.ray_utils import init_ray
    from pinsage_ray.training import train

    cfg = train_config(args)  # check the flags before any work starts
    seconds: dict[str, float] = {}
    init_ray(args.address, num_cpus=args.num_cpus if args.address == "local" else None)
    logger.info("cluster resources: %s", ray.cluster_resources())

    t = time.perf_counter()
    store, reused = stage_prepare(args)
    seconds["prepare"] = time.perf_counter() - t
    logger.info("%s", store)

    t = time.perf_counter()
    result = train(args.graph_dir, args.run_dir, cfg, address=args.address)
    seconds["train"] = time.perf_counter() - t

    t = time.perf_counter()
    emb = embed(args.run_dir, mode=args.embed_mode, num_shards=args.num_shards,
                batch_size=args.embed_batch_size, num_actors=args.embed_actors)
    seconds["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    rec = stage_index(args.run_dir)
    seconds["index"] = time.perf_counter() - t

    index = rec.index
    summary = {
        "graph": {"dir": args.graph_dir, "reused": reused, "items": store.num_items,
                  "groups": store.num_groups, "edges": store.num_edges,
                  "feature_dim": store.feature_dim},
        "train": {"run_dir": result.run_dir, "model_dir": result.model_dir,
                  "workers": cfg.num_workers, "use_gpu": cfg.use_gpu, "shards": cfg.num_shards,
                  "best_epoch": result.best["epoch"],
                  "history": [{k: (round(v, 4) if isinstance(v, float) else v)
                               for k, v in m.items()
                               if k in ("epoch", "loss", "hard_negatives", "examples_per_s",
                                        "val_hit_at_10", "val_mrr")}
                              for m in result.history]},
        "embed": {"path": emb.path, "items": emb.count, "dim": emb.dim, "mode": emb.mode},
        "index": {"items": len(index), "ef": index.ef, "recall_at_10": index.recall_at_k},
        "related": related_examples(store, rec, args.examples),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }
    print(format_summary(summary))
    if args.summary_json:
        with open(args.summary_json, "w") as f:
            f.write(json.dumps(summary, indent=2, default=str) + "\n")
    if args.address == "local":
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
