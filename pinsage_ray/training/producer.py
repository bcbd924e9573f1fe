"""Producer-consumer minibatches (paper section 3.2): batch construction overlaps training.

A :class:`BatchProducer` builds the minibatches of one training worker: batch ``i`` of epoch
``e`` is a pure function of (seed, rank, e, i), so batches are reproducible, resumable and
identical whether built ahead of time or not. Wrapped as a Ray actor it works *ahead* of the
trainer: :func:`batch_stream` keeps ``prefetch`` requests queued at the producer actors, so
while the trainer runs step i the producers are already building steps i+1..i+prefetch (a
bounded queue: at most ``prefetch`` finished batches wait in the object store).
``prefetch=0`` is the strictly sequential baseline (request, wait, train).
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pinsage_ray.graph.store import GraphStore
from pinsage_ray.sampling.aggregate import Neighborhood
from pinsage_ray.sampling.api import WalkService
from pinsage_ray.training.batches import BatchBuilder, TrainBatch, whole_graph_inputs
from pinsage_ray.training.config import TrainConfig
from pinsage_ray.training.groups import GroupExamples
from pinsage_ray.training.negatives import ItemDegrees, NegativeSampler
from pinsage_ray.training.pairs import PairSplit

logger = logging.getLogger(__name__)


def batch_seed(seed: int, rank: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, rank, epoch, index]).generate_state(1)[0])


def batches_per_epoch(num_train_pairs: int, config: TrainConfig) -> int:
    """Batches every worker runs per epoch (equal across ranks, as DDP requires)."""
    if config.batches_per_epoch:
        return config.batches_per_epoch
    per_rank = num_train_pairs // max(config.num_workers, 1)
    return max(1, -(-per_rank // config.batch_size))


class BatchProducer:
    """Builds one worker's minibatches (plain class; Ray wraps it as an actor).

    Args:
        graph_dir: graph directory.
        config: training configuration (a dict is accepted, for remote construction).
        pairs: the positive pairs; this producer uses the training pairs of ``rank``.
        rank: training worker rank; ``world``: number of workers.
        walker: a walk service (e.g. a ``ShardedGraph``); None = an in-process walker.
    """

    def __init__(self, graph_dir: str | os.PathLike, config: TrainConfig | dict,
                 pairs: PairSplit, rank: int = 0, world: int = 1,
                 walker: WalkService | None = None) -> None:
        from pinsage_ray.sampling.local import LocalWalker

        config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        store = GraphStore(graph_dir)
        self.config = config.resolved(store.has_timestamps)
        self.walker = walker if walker is not None else LocalWalker(graph_dir)
        feats = store.features()  # memory-mapped: rows are read per batch
        degrees = ItemDegrees.of(store)  # per batch from the item CSR: no per-item array
        self.builder = BatchBuilder(
            self.walker, None if feats is None else np.asarray(feats), degrees, self.config,
            negatives=NegativeSampler.for_graph(self.config.negative_sampling, store, degrees))
        self.rank, self.world = rank, world
        self.q = pairs.train_q[rank::world]
        self.p = pairs.train_p[rank::world]
        self.groups: GroupExamples | None = None
        if self.config.group_queries > 0:
            self.groups = GroupExamples(store, self.config.val_fraction, self.config.seed)
        self.num_batches = batches_per_epoch(len(pairs.train_q), self.config)
        self._perm: tuple[int, np.ndarray] | None = None

    def info(self) -> dict[str, Any]:
        return {"rank": self.rank, "pairs": int(len(self.q)), "num_batches": self.num_batches,
                "pid": os.getpid()}

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.config.seed, self.rank, epoch, 5])
            self._perm = (epoch, rng.permutation(len(self.q)))
        return self._perm[1]

    def batch(self, epoch: int, index: int) -> TrainBatch:
        """Minibatch ``index`` of ``epoch`` (1-based epochs; wraps around the pairs)."""
        cfg = self.config
        seed = batch_seed(cfg.seed, self.rank, epoch, index)
        n_group = int(round(cfg.batch_size * cfg.group_queries))
        b = cfg.batch_size - n_group
        order = self._order(epoch)
        sl = order[np.arange(index * b, (index + 1) * b) % len(order)]
        q, p, sets = self.q[sl], self.p[sl], None
        if self.groups is not None and n_group > 0:
            g = self.groups.sample(np.random.default_rng([seed, 7]), n_group,
                                   cfg.group_query_size)
            sets = np.full((cfg.batch_size, cfg.group_query_size), -1, dtype=np.int64)
            sets[:b, 0] = q
            sets[b:] = g.query_sets
            q, p = np.concatenate([q, g.query_sets[:, 0]]), np.concatenate([p, g.positives])
        return self.builder.build(q, p, cfg.hard_negatives_at(epoch), epoch, seed, sets)

    def whole_graph(self, epoch: int) -> dict[str, np.ndarray | None]:
        """Inputs of ``epoch``'s :class:`~pinsage_ray.model.WholeGraph` (whole-graph
        training; :func:`~pinsage_ray.training.batches.whole_graph_inputs`)."""
        return whole_graph_inputs(self.builder, epoch)

    def eval_neighbors(self, seed: int) -> Neighborhood:
        """Importance neighbourhoods of all items for evaluation (fixed by ``seed``)."""
        nc = self.config.neighbors
        return self.walker.importance_neighbors(
            np.arange(self.walker.num_items), num_walks=nc.num_walks, walk_length=nc.walk_length,
            restart_prob=nc.restart_prob, top_t=nc.top_t, seed=seed)


def save_pairs(pairs: PairSplit, uri: str) -> str:
    """Write ``pairs`` to ``uri`` (a ``.npz`` on the run's storage); returns ``uri``."""
    import io

    from pinsage_ray import _io

    buf = io.BytesIO()
    np.savez(buf, train_q=pairs.train_q, train_p=pairs.train_p, val_q=pairs.val_q,
             val_p=pairs.val_p, source=np.array(pairs.source))
    fs, path = _io.resolve(uri)
    _io.write_bytes(fs, path, buf.getvalue())
    return uri


def load_pairs(uri: str) -> PairSplit:
    """The :class:`PairSplit` written by :func:`save_pairs`."""
    import io

    from pinsage_ray import _io

    fs, path = _io.resolve(uri)
    with fs.open_input_file(path) as f, np.load(io.BytesIO(f.read()),
                                                allow_pickle=False) as z:
        return PairSplit(z["train_q"], z["train_p"], z["val_q"], z["val_p"], str(z["source"]))


class RemoteBatchProducer(BatchProducer):
    """The :class:`BatchProducer` that runs as a restartable Ray actor: it reads its pairs.

    ``pairs_uri`` is a file from :func:`save_pairs` on the run's storage. Constructor
    arguments must hold no object reference (not even nested in a list): Ray cannot keep
    those alive for a restart and says so with an error line on the driver's terminal for
    every actor with ``max_restarts > 0`` (ray-project/ray#53727). A path survives any
    restart.
    """

    def __init__(self, graph_dir: str | os.PathLike, config: TrainConfig | dict,
                 pairs_uri: str, rank: int = 0, world: int = 1,
                 walker: WalkService | None = None) -> None:
        super().__init__(graph_dir, config, load_pairs(pairs_uri), rank, world, walker)


def batch_stream(producers: Sequence[Any], epoch: int, start: int, stop: int,
                 prefetch: int) -> Iterator[TrainBatch]:
    """Yield batches ``start..stop-1`` of ``epoch`` from producer actors, ``prefetch`` ahead.

    Batch i comes from ``producers[i % len(producers)]``. With ``prefetch == 0`` each batch is
    requested only when the previous one has been consumed (no overlap).
    """
    import ray

    def request(i: int) -> Any:
        return producers[i % len(producers)].batch.remote(epoch, i)

    if prefetch <= 0:
        for i in range(start, stop):
            yield ray.get(request(i))
        return
    pending: collections.deque = collections.deque()
    nxt = start
    while nxt < stop and len(pending) < prefetch:
        pending.append(request(nxt))
        nxt += 1
    while pending:
        ref = pending.popleft()
        if nxt < stop:
            pending.append(request(nxt))
            nxt += 1
        yield ray.get(ref)
