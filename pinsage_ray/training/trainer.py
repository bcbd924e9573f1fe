"""``pinsage_ray.train``: the driver that wires walks, producers and Ray Train together.

1. Positive pairs are built once (sequence- or walk-based) and split; the validation pairs and
   the evaluation neighbourhoods go to rank 0 through the object store.
2. Optionally a sharded walk service starts (``num_shards > 0``); batch-producer actors
   (``num_producers`` per worker, ``num_cpus=0`` so they never starve the Train workers) use it
   or an in-process walker each.
3. ``TorchTrainer`` runs :func:`pinsage_ray.training.loop.train_loop` on ``num_workers``
   workers with a checkpoint per epoch; ``FailureConfig(max_failures)`` restarts failed workers
   from the last checkpoint, and running again with the same ``run_dir`` resumes.
4. The best epoch's checkpoint (by validation hit@k) is copied to ``run_dir/model`` and the
   metrics history to ``run_dir/metrics.jsonl``.

Checkpoints hold no pickle (:mod:`pinsage_ray.training.checkpoint`); before resuming, the
driver loads the latest one as a worker would, so a corrupted or crafted checkpoint is refused
once, with the file named, and a run directory this call created is removed again when the
run fails before training starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from pinsage_ray import _io
from pinsage_ray.graph.store import GraphStore
from pinsage_ray.model.encoder import ModelConfig
from pinsage_ray.training.checkpoint import check_resumable, load_checkpoint, write_model_dir
from pinsage_ray.training.batches import uses_whole_graph
from pinsage_ray.training.config import DEFAULT_PRESET, TrainConfig
from pinsage_ray.training.groups import GroupExamples
from pinsage_ray.training.pairs import pairs_for
from pinsage_ray.training.producer import RemoteBatchProducer, batches_per_epoch, save_pairs

logger = logging.getLogger(__name__)

EVAL_NEIGHBOR_SEED = 1234567
#: Fields a resumed run may change: more epochs (the LR schedule is recomputed for the new
#: total), and how the work is executed.
RESUMABLE_CHANGES = ("num_epochs", "num_workers", "use_gpu", "num_shards", "num_producers",
                     "prefetch", "max_failures")


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        run_dir: the run directory.
        model_dir: ``run_dir/model``: the best checkpoint, ready for inference.
        history: per-epoch metrics (loss, examples/s, hard negatives, val hit@k, val MRR...).
        best: the metrics of the epoch whose checkpoint is in ``model_dir``.
    """

    run_dir: str
    model_dir: str
    history: list[dict[str, Any]]
    best: dict[str, Any]


#: Custom resource of the nodes meant for training workers (``cluster.yaml``: ``gpu_worker``).
TRAINER_RESOURCE = "pinsage_trainer"


def train_worker_resources(num_workers: int, use_gpu: bool) -> dict[str, float] | None:
    """Resources of one Ray Train worker: one CPU (or one GPU) plus a share of
    ``pinsage_trainer`` when the cluster advertises it, so the workers land on the trainer
    nodes and not on the shard nodes; ``None`` (Ray Train's default) when no node does."""
    from pinsage_ray.ray_utils import resource_share

    share = resource_share(TRAINER_RESOURCE, num_workers)
    if not share:
        return None
    return {"GPU": 1.0, **share} if use_gpu else {"CPU": 1.0, **share}


def model_config_for(store: GraphStore, cfg: TrainConfig) -> ModelConfig:
    """The encoder's configuration; ``id_skip=None`` resolves to 'whenever ids are learned'
    with the paper's layer, and to False with propagation (the id is its k = 0 term)."""
    mc = ModelConfig(num_items=store.num_items, feature_dim=store.feature_dim,
                     hidden_dim=cfg.hidden_dim, embedding_dim=cfg.embedding_dim,
                     num_layers=cfg.num_layers, conv=cfg.conv, pooling=cfg.pooling,
                     use_id_embedding=cfg.use_id_embedding)
    auto_skip = mc.use_id_embedding and cfg.conv == "paper"
    id_skip = auto_skip if cfg.id_skip is None else cfg.id_skip
    return dataclasses.replace(mc, id_skip=bool(id_skip),
                               balanced_skip=cfg.balanced_skip and bool(id_skip),
                               id_weight=cfg.id_weight)


def train(graph_dir: str | os.PathLike, run_dir: str | os.PathLike,
          config: TrainConfig | None = None, *, address: str | None = None,
          num_cpus: int | None = None, show_progress: bool | None = None) -> TrainResult:
    """Train PinSage on a graph directory with Ray Train.

    Args:
        graph_dir: graph directory from :func:`pinsage_ray.prepare` (shared storage on a
            cluster).
        run_dir: where checkpoints, ``metrics.jsonl`` and the final ``model/`` go; rerunning
            with the same directory resumes from its last checkpoint.
        config: training configuration; None = ``TrainConfig()``, the ``"items"`` preset
            (the best measured recipe for related items); ``TrainConfig.preset("groups")``
            for group recommendations. The pre-0.1 order ``train(graph_dir, config,
            run_dir)`` still works, with a DeprecationWarning.
        address: Ray address (default: a new local instance, or ``RAY_ADDRESS``).
        num_cpus: CPUs of a new local Ray instance.
        show_progress: draw a bar per epoch and print one line of metrics per epoch on
            stderr (:mod:`pinsage_ray.training.progress`); the lines are logged either way.
            None (default): when stderr is a terminal
            (:func:`pinsage_ray.console.progress_default`).

    Returns:
        A :class:`TrainResult`.
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    from pinsage_ray.console import progress_default
    from pinsage_ray.ray_utils import init_ray, off_head_options, torch_trainer_class
    from pinsage_ray.sampling.local import LocalWalker
    from pinsage_ray.training.loop import train_loop
    from pinsage_ray.training.progress import watch_progress

    if isinstance(run_dir, TrainConfig) or run_dir is None:  # train(graph_dir, config, run_dir)
        warnings.warn("train(graph_dir, config, run_dir) is deprecated; call "
                      "train(graph_dir, run_dir, config=config)", DeprecationWarning,
                      stacklevel=2)
        run_dir, config = config, run_dir  # type: ignore[assignment]
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"train(config={config!r}): expected a TrainConfig or None, e.g. "
                        "TrainConfig.preset('groups')")
    if run_dir is None or isinstance(run_dir, TrainConfig):
        raise TypeError("train(run_dir=...) is required: the directory for checkpoints and "
                        "the trained model")
    store = GraphStore(graph_dir)
    cfg = (config or TrainConfig.preset(DEFAULT_PRESET)).resolved(store.has_timestamps)
    graph_uri = os.fspath(graph_dir) if "://" in os.fspath(graph_dir) else os.path.abspath(graph_dir)
    run_uri = os.fspath(run_dir) if "://" in os.fspath(run_dir) else os.path.abspath(run_dir)
    fs, run_path = _io.resolve(run_uri)
    created = _make_run_dir(fs, run_path)
    try:
        check_resumable(run_uri)  # a corrupted or crafted checkpoint fails here, once
        _check_same_config(fs, run_path, cfg, graph_uri)  # the only write before training
    except BaseException:
        if created:  # a run that never started leaves nothing behind
            fs.delete_dir(run_path)
        raise
    init_ray(address, num_cpus=num_cpus)
    logger.info("hard negatives per query by epoch: %s",
                [cfg.hard_negatives_at(e) for e in range(1, cfg.num_epochs + 1)])

    sharded = None
    if cfg.num_shards > 0:
        from pinsage_ray.sampling.service import ShardedGraph

        sharded = ShardedGraph(graph_uri, cfg.num_shards)
    try:
        walker = sharded if sharded is not None else LocalWalker(graph_uri)
        pairs = pairs_for(store, walker, cfg)
        groups = (GroupExamples(store, cfg.val_fraction, cfg.seed) if cfg.group_queries > 0
                  else None)
        _save_val_pairs(store, pairs, fs, run_path)
        pairs_uri = save_pairs(pairs, _io.join(run_uri, "train_pairs.npz"))  # producers read it
        # zero CPU, so off the head by label whenever the cluster has other nodes
        producer_cls = ray.remote(RemoteBatchProducer).options(num_cpus=0, max_restarts=2,
                                                               max_task_retries=2,
                                                               **off_head_options())
        workers = max(cfg.num_workers, 1)
        producers = [[producer_cls.remote(graph_uri, cfg.to_dict(), pairs_uri, r, workers,
                                          sharded) for _ in range(cfg.num_producers)]
                     for r in range(workers)]
        eval_ref = _eval_data(store, cfg, pairs, groups, producers[0][0])
        loop_config = {
            "train": cfg.to_dict(), "model": model_config_for(store, cfg).to_dict(),
            "producers": producers, "eval_ref": eval_ref,
            "num_batches": batches_per_epoch(_examples_per_epoch(cfg, pairs, groups), cfg),
            "item_ids_ref": ray.put(_item_ids_parquet(store)),
            "whole_graph": uses_whole_graph(cfg, store.num_items),
            # One torch thread per worker: the producer actors need the other cores, and
            # bench_train measured 2 threads on 2 shared cores running several times slower.
            "threads": 1,
        }
        # rank 0 sends its progress to the driver's console (None: no progress shown)
        with watch_progress(cfg.num_epochs, loop_config["num_batches"],
                            show=progress_default(show_progress)) as loop_config["progress"]:
            trainer = torch_trainer_class()(
                train_loop, train_loop_config=loop_config,
                scaling_config=ScalingConfig(
                    num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                    resources_per_worker=train_worker_resources(cfg.num_workers, cfg.use_gpu)),
                run_config=RunConfig(
                    name="train", storage_path=run_uri,
                    failure_config=FailureConfig(max_failures=cfg.max_failures),
                    checkpoint_config=CheckpointConfig(num_to_keep=None)))
            result = trainer.fit()
    finally:
        if sharded is not None:
            sharded.shutdown()
    if result.error is not None:
        raise result.error
    return _finish(result, fs, run_path, run_uri, graph_uri, pairs.summary(), cfg.group_queries)


def _examples_per_epoch(cfg: TrainConfig, pairs: Any, groups: GroupExamples | None) -> int:
    """Training examples in one pass: pairs and group interactions, in the batch's mix."""
    if groups is None:
        return len(pairs.train_q)
    f = cfg.group_queries
    return int(round((1 - f) * len(pairs.train_q) + f * len(groups)))


def _make_run_dir(fs: Any, run_path: str) -> bool:
    """Create ``run_path`` (True), or accept an empty directory or an earlier run (False)."""
    info = fs.get_file_info(run_path)
    if info.type == _io.pafs.FileType.NotFound:
        fs.create_dir(run_path, recursive=True)
        return True
    if info.type != _io.pafs.FileType.Directory:
        raise FileExistsError(f"run_dir {run_path!r} exists and is not a directory; "
                              "choose a directory path")
    if (not _io.exists(fs, _io.join(run_path, "run.json"))
            and fs.get_file_info(_io.pafs.FileSelector(run_path))):
        raise FileExistsError(f"run_dir {run_path!r} is a non-empty directory that holds no "
                              "pinsage-ray run (no run.json); choose a new or empty directory")
    return False


def _check_same_config(fs: Any, run_path: str, cfg: TrainConfig, graph_uri: str) -> None:
    """Write run.json, or refuse to resume a run directory with another config or graph."""
    path = _io.join(run_path, "run.json")
    current = {"train_config": cfg.to_dict(), "graph_dir": graph_uri}
    if _io.exists(fs, path):
        previous = _io.read_json(fs, path)
        # a run written before a field existed ran with that field's default then, which
        # the 'paper' preset keeps (the dataclass defaults were the paper's until 0.1)
        for key, value in json.loads(json.dumps(TrainConfig.preset("paper").to_dict())).items():
            previous["train_config"].setdefault(key, value)
        now = json.loads(json.dumps(current))
        for run in (previous, now):  # these may change between resumed runs
            for key in RESUMABLE_CHANGES:
                run["train_config"].pop(key, None)
        if now != previous:
            diff = sorted(k for k in now["train_config"]
                          if now["train_config"][k] != previous["train_config"].get(k))
            raise ValueError(
                f"run_dir {run_path!r} holds a run with a different graph or config (fields "
                f"{diff or ['graph_dir']}); use a new run_dir, or the same config to resume it")
        logger.info("resuming the run in %s", run_path)
    _io.write_json(fs, path, current)


def _save_val_pairs(store: GraphStore, pairs: Any, fs: Any, run_path: str) -> None:
    """Held-out positive pairs (original ids) for ``pinsage-ray evaluate`` (protocol P3)."""
    import pyarrow as pa
    ids = store.item_ids
    table = pa.table({"query": ids.take(pa.array(pairs.val_q)),
                      "positive": ids.take(pa.array(pairs.val_p))})
    _io.write_parquet(fs, _io.join(run_path, "val_pairs.parquet"), table)


def _item_ids_parquet(store: GraphStore) -> bytes:
    """The id map (contiguous -> original) as Parquet bytes, for every checkpoint to carry.

    Passed by value through the object store, so workers need no access to ``run_dir``'s
    filesystem path (which may be remote).
    """
    import pyarrow as pa

    return _io.parquet_bytes(pa.table({"id": store.item_ids}))


def _eval_data(store: GraphStore, cfg: TrainConfig, pairs: Any, groups: GroupExamples | None,
               producer: Any) -> Any:
    """Object ref of what rank 0 needs to evaluate (None when the graph is too large)."""
    import ray

    if store.num_items > cfg.eval_max_items or len(pairs.val_q) == 0:
        logger.info("per-epoch evaluation off (%d items > eval_max_items or no val pairs); "
                    "run `pinsage-ray evaluate` after training", store.num_items)
        return ray.put(None)
    nb = ray.get(producer.eval_neighbors.remote(EVAL_NEIGHBOR_SEED))
    feats = store.features()
    n = min(len(pairs.val_q), cfg.max_val_pairs)
    data = {"features": None if feats is None else np.asarray(feats),
            "degree": store.degrees("item"), "nb_ids": nb.ids,
            "nb_weights": nb.weights, "val_q": pairs.val_q[:n], "val_p": pairs.val_p[:n]}
    if groups is not None:  # the served group task, on the held-out group interactions
        sets, positives = groups.validation(cfg.max_val_pairs, cfg.seed)
        data.update(group_sets=sets, group_positives=positives)
    return ray.put(data)


def _finish(result: Any, fs: Any, run_path: str, run_uri: str, graph_uri: str,
            pairs_summary: dict, group_queries: float = 0.0) -> TrainResult:
    """Copy the best checkpoint to run_dir/model and write metrics.jsonl."""
    ckpts = sorted(result.best_checkpoints, key=lambda cm: cm[1].get("epoch", 0))
    if not ckpts:
        raise RuntimeError(f"training in {run_uri} reported no checkpoint")
    with ckpts[-1][0].as_directory() as d:
        history = load_checkpoint(d, tensors=False)["history"]
    # model selection on the task trained for: the group query when most examples are groups
    prefix = "val_group_hit_at_" if group_queries >= 0.5 else "val_hit_at_"
    score_key = next((k for k in history[-1] if k.startswith(prefix)), None)
    best_epoch = (max(history, key=lambda m: m[score_key])["epoch"] if score_key
                  else history[-1]["epoch"])
    best_ckpt = next((c for c, m in ckpts if m.get("epoch") == best_epoch), ckpts[-1][0])
    best = next(m for m in history if m["epoch"] == best_epoch)
    lines = "".join(json.dumps(m) + "\n" for m in history).encode()
    _io.write_bytes(fs, _io.join(run_path, "metrics.jsonl"), lines)
    # the URI, not the filesystem path: write_model_dir resolves it again (a bare S3 path
    # such as "bucket/run/model" would be taken for a local directory)
    model_dir = _io.join(run_uri, "model")
    with best_ckpt.as_directory() as d:
        state = load_checkpoint(d)  # weights only; the id map's checksum verified too
        with open(os.path.join(d, "item_ids.parquet"), "rb") as f:
            item_ids = f.read()
    write_model_dir(model_dir, state["model"], item_ids, {
        "model_config": state["model_config"], "train_config": state["train_config"],
        "graph_dir": graph_uri, "epoch": state["epoch"], "metrics": best,
        "pairs": pairs_summary})
    logger.info("best epoch %d copied to %s", best_epoch, model_dir)
    return TrainResult(run_uri, model_dir, history, best)
