"""``TrainConfig``: every knob of PinSage training, with defaults and a reason for each.

The library takes this dataclass; the CLI builds it from flags (``pinsage-ray train --help``)
and :meth:`TrainConfig.from_dict` from JSON/YAML. ``__post_init__`` checks every field and
says how to fix a bad value.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

POSITIVES = ("auto", "walks", "sequence")
NEGATIVE_SAMPLING = ("uniform", "degree")
PAIR_WEIGHTING = ("count", "distinct")
LOSSES = ("max_margin", "softmax", "contrastive")
CONV_MODES = ("paper", "propagate")  # = pinsage_ray.model.encoder.CONV_MODES (no torch here)


@dataclass
class NeighborConfig:
    """Importance neighbourhoods (paper section 3.1)."""

    num_walks: int = 50        # walks per node; visit counts estimate importance
    walk_length: int = 2       # item->group->item steps per walk
    restart_prob: float = 0.5  # jump back to the node after each step (keeps it local)
    top_t: int = 10            # T: neighbours kept per node

    def __post_init__(self) -> None:
        _positive_int(self, "num_walks", "walk_length", "top_t")
        if not _finite(self.restart_prob) or not 0.0 <= self.restart_prob < 1.0:
            raise ValueError(f"NeighborConfig.restart_prob={self.restart_prob!r}; "
                             "expected a float in [0, 1)")


@dataclass
class TrainConfig:
    """PinSage training configuration (sections 3.2-3.3 of the paper).

    The defaults are the ``"items"`` preset, the best measured recipe for related items
    (docs/quality.md): learnable id vectors balanced against the convolution, a sampled
    softmax over 2,000 uniform shared negatives, no hard negatives. The paper's exact
    settings (max-margin loss, degree-sampled negatives, curriculum hard negatives) are
    ``TrainConfig.preset("paper")``; ``"groups"`` is the recipe for group recommendations.
    """

    # model
    hidden_dim: int = 64           # width of every convolution
    embedding_dim: int = 64        # output embedding size
    num_layers: int = 2            # K stacked convolutions (0 = the no-graph ablation)
    conv: str = "paper"            # 'paper' (CONVOLVE) or 'propagate' (linear, layers averaged)
    pooling: str = "importance"    # 'importance' (paper) or 'mean' (ablation)
    use_id_embedding: bool | None = True  # learnable per-item vector; None = only without features
    id_skip: bool | None = None    # add id vectors to the output (not in the paper); None = iff ids
    balanced_skip: bool = True     # normalise conv output and id term apart, then add
    id_weight: float = 0.7         # balanced_skip: weight of the id term (1 = equal say)
    neighbors: NeighborConfig = field(default_factory=NeighborConfig)
    # data
    positives: str = "auto"        # 'sequence' needs timestamps; 'auto' uses them when present
    positive_walk_length: int = 1  # 'walks' positives: steps from query (1 = shares a group)
    sequence_window: int = 1       # 'sequence' positives: items up to this many places later
    symmetric_pairs: bool = False  # also train every positive pair in the other direction
    pair_weighting: str = "count"  # 'count': frequent pairs sampled more; 'distinct': once each
    pairs_per_item: int = 4        # 'walks' positives drawn per item per epoch pool
    group_queries: float | None = None  # share of group-context examples; None = auto (below)
    group_query_size: int = 10     # group-context query sets: at most this many items
    val_fraction: float = 0.05     # held-out pairs for per-epoch hit@10 / MRR
    max_val_pairs: int = 2000      # cap on evaluated pairs (evaluation cost)
    # negatives (section 3.3)
    num_shared_negatives: int = 2000  # easy negatives shared by the whole minibatch
    negative_sampling: str = "uniform"  # 'uniform' or 'degree' (degree ** 0.75)
    max_hard_negatives: int = 0    # curriculum cap: epoch n uses min(n - 1, cap) per query
    hard_band: tuple[float, float] = (0.02, 0.2)  # PPR ranks (fractions of items, or ints)
    curriculum: bool = True        # False: max_hard_negatives from epoch 1 (ablation)
    hard_num_walks: int = 100      # walks per query for the PPR estimate
    # optimisation
    num_epochs: int = 5
    batch_size: int = 1024         # queries per minibatch per worker
    batches_per_epoch: int = 0     # 0 = one pass over the training pairs
    lr: float = 1e-2
    warmup_fraction: float = 0.05  # linear warm-up over this fraction of all steps
    weight_decay: float = 0.0
    loss: str = "softmax"          # 'max_margin' (paper), 'softmax' or 'contrastive' (SimpleX)
    margin: float = 0.1            # max-margin loss: Delta; contrastive: negative cosine margin
    negative_weight: float = 1.0   # contrastive loss: weight of the negatives' mean hinge
    temperature: float = 0.1       # softmax loss: logits are scores / temperature
    grad_clip: float = 0.0         # 0 = no clipping
    id_dropout: float = 0.0        # share of items trained without their id vector per batch
    # execution
    num_workers: int = 1           # Ray Train workers (data parallel)
    use_gpu: bool = False
    whole_graph_max_items: int = 0  # embed every item per step (no sampled blocks) up to this
    neighbor_table_max_items: int = 10_000_000  # a per-epoch table of every item's
    #   neighbourhood in each producer up to this many items (~20 x top_t bytes per item);
    #   past it, sampled blocks walk each batch's nodes on the walk service instead
    num_shards: int = 0            # 0 = producers walk in-process; >0 = sharded walk service
    num_producers: int = 1         # batch-producer actors per training worker
    prefetch: int = 4              # batches in flight per worker (0 = strictly sequential)
    max_failures: int = 2          # worker failures recovered from the last checkpoint
    eval_k: int = 10               # hit@k reported per epoch
    eval_max_items: int = 200_000  # exact search over all items up to this size, else a sample
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.neighbors, dict):
            self.neighbors = NeighborConfig(**self.neighbors)
        if not isinstance(self.neighbors, NeighborConfig):
            raise ValueError(f"TrainConfig.neighbors={self.neighbors!r}; expected an object "
                             "of NeighborConfig fields, e.g. {'top_t': 10}")
        self.hard_band = tuple(self.hard_band)  # type: ignore[assignment]
        _positive_int(self, "hidden_dim", "embedding_dim", "num_epochs",
                      "batch_size", "num_shared_negatives", "hard_num_walks", "eval_k",
                      "num_producers", "positive_walk_length", "pairs_per_item",
                      "sequence_window", "group_query_size")
        _non_negative_int(self, "num_layers", "whole_graph_max_items", "neighbor_table_max_items",
                          "batches_per_epoch", "max_hard_negatives", "num_workers",
                          "num_shards", "prefetch", "max_failures", "seed")
        if self.id_skip is not None and not isinstance(self.id_skip, bool):
            raise ValueError(f"TrainConfig.id_skip={self.id_skip!r}; use True, False or None")
        for name in ("curriculum", "symmetric_pairs", "balanced_skip"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; use True or False")
        if self.pair_weighting not in PAIR_WEIGHTING:
            raise ValueError(f"TrainConfig.pair_weighting={self.pair_weighting!r}; "
                             f"use one of {PAIR_WEIGHTING}")
        if self.loss not in LOSSES:
            raise ValueError(f"TrainConfig.loss={self.loss!r}; use one of {LOSSES}")
        if self.conv not in CONV_MODES:
            raise ValueError(f"TrainConfig.conv={self.conv!r}; use one of {CONV_MODES} "
                             "('propagate': linear propagation, 'paper': CONVOLVE)")
        if self.pooling not in ("importance", "mean"):
            raise ValueError(f"TrainConfig.pooling={self.pooling!r}; use 'importance' or 'mean'")
        if self.positives not in POSITIVES:
            raise ValueError(f"TrainConfig.positives={self.positives!r}; use one of {POSITIVES}")
        if self.negative_sampling not in NEGATIVE_SAMPLING:
            raise ValueError(f"TrainConfig.negative_sampling={self.negative_sampling!r}; "
                             f"use one of {NEGATIVE_SAMPLING}")
        for name in ("group_queries", "id_dropout"):
            v = getattr(self, name)
            if v is None and name == "group_queries":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise ValueError(f"TrainConfig.{name}={v!r}; expected a float in [0, 1]")
            setattr(self, name, float(v))
        if self.id_dropout >= 1.0:
            raise ValueError(f"TrainConfig.id_dropout={self.id_dropout!r}; expected [0, 1): "
                             "1 would never train the id vectors (use use_id_embedding=False)")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ValueError(f"TrainConfig.val_fraction={self.val_fraction!r}; expected [0, 0.5)")
        if len(self.hard_band) != 2:
            raise ValueError(f"TrainConfig.hard_band={self.hard_band!r}; expected (lo, hi)")
        for name in ("negative_weight", "weight_decay", "grad_clip"):
            if not _finite(getattr(self, name)) or not getattr(self, name) >= 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; expected a "
                                 "finite number >= 0")
        for name in ("lr", "margin", "temperature", "id_weight"):
            if not _finite(getattr(self, name)) or not getattr(self, name) > 0:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r}; expected a "
                                 "finite number > 0")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"TrainConfig.warmup_fraction={self.warmup_fraction!r}; "
                             "expected [0, 1)")

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> TrainConfig:
        """A named recipe (:data:`PRESETS`) with ``overrides`` applied on top.

        ``"items"`` (related items; also serves groups), ``"groups"`` (user, board or session
        recommendations from a pooled set of the group's items) and ``"paper"`` (the paper's
        exact settings: the dataclass defaults). docs/quality.md gives the measurements that
        chose them, on validation splits only and the same for every dataset.

        Example::

            cfg = TrainConfig.preset("groups", num_workers=2)
        """
        if name not in PRESETS:
            raise ValueError(f"preset={name!r}; choose one of {sorted(PRESETS)}")
        data = {**PRESETS[name], **overrides}
        if isinstance(overrides.get("neighbors"), dict):
            data["neighbors"] = {**PRESETS[name].get("neighbors", {}), **overrides["neighbors"]}
        return cls.from_dict(data)

    def resolved(self, has_timestamps: bool) -> TrainConfig:
        """This config with ``group_queries=None`` (auto) made concrete for a graph.

        Auto is :data:`AUTO_GROUP_SHARE_ORDERED` (half the batch item pairs) when the item
        pairs are sequence pairs (``positives="sequence"``, or ``"auto"`` on a graph with
        timestamps): they carry the order of a group's items, which a pooled set loses.
        Otherwise the pairs are two items of one group, a noisier special case of a
        group-context example (a query set of one), and every example is group context
        (docs/quality.md measures both cases).
        """
        if self.group_queries is not None:
            return self
        ordered = self.positives == "sequence" or (self.positives == "auto" and has_timestamps)
        return dataclasses.replace(
            self, group_queries=AUTO_GROUP_SHARE_ORDERED if ordered else 1.0)

    def hard_negatives_at(self, epoch: int) -> int:
        """Hard negatives per query in ``epoch`` (1-based): the curriculum, or the cap."""
        from pinsage_ray.model.schedule import hard_negatives_for_epoch

        if not self.curriculum:
            return self.max_hard_negatives
        return hard_negatives_for_epoch(epoch, self.max_hard_negatives)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ValueError(f"TrainConfig.from_dict: expected a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as err:  # a value of the wrong type (e.g. "lr": "fast" from JSON)
            raise ValueError(f"TrainConfig: {err}; check the types of the fields given") from None


#: Whole-graph training (every item per step) up to this many items: on Gowalla (41k items) a
#: whole-graph step costs 0.07 s (K = 1) against 0.21 s for sampled K-hop blocks, which reach
#: 37k of the 41k items anyway; past this size the item table and its gradients (N x 64 floats
#: per hop) outgrow a worker and the sampled blocks take over.
WHOLE_GRAPH_MAX_ITEMS = 1_000_000

#: The paper's settings (sections 3.2-3.3) where they differ from the defaults: a max-margin
#: loss over 500 degree-sampled shared negatives, curriculum hard negatives (up to 6 per query
#: from PPR ranks 2-20 %), batches of 256 at lr 1e-3, ids only for featureless graphs, item
#: pairs only.
_PAPER: dict[str, Any] = dict(
    use_id_embedding=None, balanced_skip=False, id_weight=1.0, group_queries=0.0,
    num_shared_negatives=500, negative_sampling="degree", max_hard_negatives=6,
    batch_size=256, lr=1e-3, loss="max_margin", temperature=0.05)
#: The measured recipes behind :meth:`TrainConfig.preset` (docs/quality.md), on validation
#: splits only and the same for every dataset. ``items`` is the dataclass defaults: learnable
#: id vectors (with features when the graph has them; items without a trained id fall back to
#: features and neighbours) balanced against the convolution, a sampled softmax over 2,000
#: uniform shared negatives at temperature 0.1, batches of 1,024 at lr 1e-2, 5 passes over the
#: training examples, the share of group-context examples chosen by the graph (training/groups.py).
PRESETS: dict[str, dict[str, Any]] = {
    "items": {},
    # linear propagation (one hop) over neighbourhoods of 500 walks per item, every item per
    # step up to a million items (docs/quality.md: +0.033 P2 validation Recall@20 over the
    # paper layer at equal minutes; 50 walks leave 98 % of Gowalla's 10th neighbours tied)
    "groups": {"group_queries": 1.0, "balanced_skip": False, "id_weight": 1.0,
               "conv": "propagate", "num_layers": 1, "neighbors": {"num_walks": 500},
               "whole_graph_max_items": WHOLE_GRAPH_MAX_ITEMS},
    "paper": _PAPER,
}
#: ``group_queries=None`` on a graph whose pairs are ordered (sequence) pairs.
AUTO_GROUP_SHARE_ORDERED = 0.5
#: What ``pinsage-ray train`` and ``pinsage_ray.train(..., config=None)`` use.
DEFAULT_PRESET = "items"


def _finite(value: object) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _positive_int(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{type(obj).__name__}.{name}={v!r}; expected an integer >= 1")


def _non_negative_int(obj: object, *names: str) -> None:
    for name in names:
        v = getattr(obj, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{type(obj).__name__}.{name}={v!r}; expected an integer >= 0")
