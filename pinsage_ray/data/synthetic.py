"""Synthetic item-group graphs with a planted community structure: the project's oracle.

Items are split into ``num_communities`` communities (assignment shuffled, so item ids do
not reveal it). Each group has a home community; each of its items comes from the home
community with probability ``p_in``, else from a uniformly random community (which may be
the home one, so the expected in-home fraction is ``p_in + (1 - p_in) / num_communities``
before de-duplication). Within a community items are drawn with Zipf-like popularity
``(rank + 1) ** -popularity_exponent``, so item degrees are heavy-tailed. Group sizes are
``1 + Poisson(LogNormal)`` with mean ``mean_group_size``, capped. Item features are the
community centroid (a random Gaussian vector of norm ~1) plus ``N(0, feature_noise**2)``
noise per coordinate. At dim 32, noise 1.0 is a weak signal: nearest-true-centroid accuracy
is ~0.32 with 10 communities, ~0.21 with 20 (chance 0.10 / 0.05); noise 0.5 gives ~0.6,
0.25 gives ~0.95. So the graph has to add information beyond the features.

Generation runs in blocks of ``BLOCK_GROUPS`` groups, each with its own seeds derived from
``numpy.random.SeedSequence(seed)``, so the output depends only on the config (not on the
chunk size) and :func:`generate_synthetic` (in memory) equals :func:`write_synthetic`
(streamed Parquet, memory independent of ``num_groups``). After all blocks, every item
that was never drawn gets one edge to a random group of its home community, so no item is
isolated; these coverage edges come last.

Two levels (``num_fine_per_coarse = F > 0``): each of the ``num_communities`` coarse
categories is split into ``F`` fine communities, and the planted communities above are the
``num_communities * F`` fine ones (fine id ``f`` belongs to coarse ``f // F``): groups have a
home fine community, draws outside it go to a uniformly random fine community, coverage
edges go to a group of the item's fine community. Features use one centroid per COARSE
category, so they reveal the coarse category and nothing about the fine community within
it; the fine structure exists only in the co-occurrence. That tests whether a model learns
the graph, not just the features (:func:`fine_coarse_config` is the tuned preset, and
:mod:`pinsage_ray.evaluation.planted` measures same-label precision@k). Item and group
label tables then carry ``label`` = fine id and ``coarse`` = coarse id. With ``F = 0`` (the
default) the generator is the single-level one, byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pinsage_ray.data.types import RawDataset

try:
    from tqdm.auto import tqdm
except ImportError:  # optional dependency
    tqdm = None

logger = logging.getLogger(__name__)

#: Groups per RNG block; chunks handed to writers are whole numbers of blocks.
BLOCK_GROUPS = 1024
_LOGNORMAL_SIGMA = 1.0
_GROUP_SIZE_CAP = 20  # groups hold at most this many times mean_group_size items
_BASE_TIME = 1_600_000_000  # unix seconds; group start times spread over ~1 year after it
# SeedSequence spawn keys: child k of SeedSequence(seed) is SeedSequence(seed, spawn_key=(k,)).
_STREAM_ITEMS, _STREAM_FEATURES, _STREAM_COVERAGE, _STREAM_BLOCKS = 0, 1, 2, 3


@dataclass
class SyntheticConfig:
    """Parameters of the planted-community generator (see module docstring)."""

    num_items: int = 10_000
    num_groups: int = 5_000
    num_communities: int = 20
    mean_group_size: float = 10.0
    p_in: float = 0.8  # fraction of a group's draws taken from its home community
    popularity_exponent: float = 1.0  # Zipf exponent of item popularity within a community
    feature_dim: int = 32  # 0 = no item features
    feature_noise: float = 1.0  # per-coordinate noise std around unit-norm community centroids
    timestamps: bool = False  # give each group's items increasing int64 timestamps
    seed: int = 0
    # > 0: split each of the num_communities coarse categories into this many fine
    # communities; groups/edges follow the fine ones, features only the coarse ones.
    num_fine_per_coarse: int = 0

    @property
    def num_fine_communities(self) -> int:
        """Number of planted (finest-level) communities: labels ``0..num_fine_communities-1``."""
        return self.num_communities * self.num_fine_per_coarse or self.num_communities

    def __post_init__(self) -> None:
        def bad(name: str, rule: str) -> ValueError:
            return ValueError(f"SyntheticConfig.{name}={getattr(self, name)!r} is invalid: {rule}.")

        for name in ("num_items", "num_groups", "num_communities", "feature_dim", "seed", "num_fine_per_coarse"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise bad(name, "pass an int")
        for name in ("mean_group_size", "p_in", "popularity_exponent", "feature_noise"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
                raise bad(name, "pass a number")
        for name in ("num_items", "num_groups", "num_communities"):
            if getattr(self, name) < 1:
                raise bad(name, "pass an int >= 1")
        if self.num_communities > self.num_items:
            raise bad("num_communities", f"every community needs an item; pass at most num_items={self.num_items}")
        if self.num_fine_per_coarse < 0:
            raise bad("num_fine_per_coarse", "pass an int >= 0 (0 = a single level of communities)")
        if self.num_fine_communities > self.num_items:
            raise bad(
                "num_fine_per_coarse",
                f"every fine community needs an item; num_communities * num_fine_per_coarse = "
                f"{self.num_fine_communities} exceeds num_items={self.num_items}",
            )
        if not 1.0 <= self.mean_group_size <= self.num_items:
            raise bad("mean_group_size", f"pass a number in [1, num_items={self.num_items}]")
        if not 0.0 <= self.p_in <= 1.0:
            raise bad("p_in", "pass a probability in [0, 1]")
        if not 0.0 <= self.popularity_exponent <= 10.0:
            raise bad("popularity_exponent", "pass a number in [0, 10] (0 = uniform popularity)")
        if self.feature_dim < 0:
            raise bad("feature_dim", "pass an int >= 0 (0 disables features)")
        if not 0.0 <= self.feature_noise < float("inf"):
            raise bad("feature_noise", "pass a finite number >= 0")
        if self.seed < 0:
            raise bad("seed", "pass an int >= 0")
        if not isinstance(self.timestamps, bool):
            raise bad("timestamps", "pass True or False")


def fine_coarse_config(seed: int = 0) -> SyntheticConfig:
    """Preset two-level graph: do the learned embeddings capture structure beyond features?

    4,000 items in 10 coarse categories x 10 fine communities (40 items each), 8,000 groups
    of mean size 8 (~56k edges, median item degree 7), ``p_in = 0.5`` (half of each group's
    draws come from its home fine community, half from any fine community), 32-d features
    with noise 0.24 around COARSE centroids only. Small enough to train on 2 CPU cores in a
    minute or two. Measured on seed 0 with
    :func:`pinsage_ray.evaluation.planted.label_precision_at_k` (k=10, all items; chance is
    0.01 fine / 0.10 coarse):

    ==========================================  ==========  ============
    embedding                                   fine p@10   coarse p@10
    ==========================================  ==========  ============
    features alone (L2-normalised)              ~0.085      ~0.88
    64-d truncated SVD of the degree-normalised ~0.68-0.70  ~0.70-0.72
    group x item matrix (structure only)
    both concatenated (each part L2-normalised) ~0.78       ~0.91
    ==========================================  ==========  ============

    Over seeds 0-2 the SVD's fine p@10 ranged 0.62-0.70 and the features' coarse p@10
    0.88-0.93. Nearest-coarse-centroid accuracy of the features is ~0.97. Features' fine precision is
    just coarse precision x 1/10 (no fine signal); a GCN that learns the graph should move
    fine precision towards (or past) the SVD's while keeping the features' coarse precision.
    """
    return SyntheticConfig(
        num_items=4_000,
        num_groups=8_000,
        num_communities=10,
        num_fine_per_coarse=10,
        mean_group_size=8.0,
        p_in=0.5,
        feature_dim=32,
        feature_noise=0.24,
        seed=seed,
    )


def _rng(config: SyntheticConfig, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=key))


class _Plan:
    """Item-side state: community of each item and the per-community popularity CDF."""

    def __init__(self, config: SyntheticConfig) -> None:
        n, c = config.num_items, config.num_fine_communities
        rng = _rng(config, _STREAM_ITEMS)
        self.community = rng.permutation(np.arange(n, dtype=np.int64) % c)  # (N,) int64
        perm = rng.permutation(n)
        # Items sorted by community; within a community, position = popularity rank.
        self.flat = perm[np.argsort(self.community[perm], kind="stable")].astype(np.int64)
        sizes = np.bincount(self.community, minlength=c)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])  # (C+1,)
        comm_of_pos = np.repeat(np.arange(c), sizes)
        rank = np.arange(n) - self.offsets[comm_of_pos]
        weights = (rank + 1.0) ** -config.popularity_exponent
        cum = np.cumsum(weights)
        before = np.concatenate([[0.0], cum[self.offsets[1:-1] - 1]])  # mass before each community
        total = cum[self.offsets[1:] - 1] - before
        frac = (cum - before[comm_of_pos]) / total[comm_of_pos]
        frac[self.offsets[1:] - 1] = 1.0
        self.cdf = comm_of_pos + frac  # (N,) float64, searchsorted(cdf, c + u) -> position

    def draw(self, communities: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Item ids ``(E,)`` int64 drawn by popularity within the given communities."""
        return self.flat[np.searchsorted(self.cdf, communities + u, side="left")]


def _group_block(config: SyntheticConfig, block: int) -> dict[str, np.ndarray]:
    """Per-group draws of one block (independent of edges): sizes, homes, time origin/step."""
    start = block * BLOCK_GROUPS
    n = min(BLOCK_GROUPS, config.num_groups - start)
    rng = _rng(config, _STREAM_BLOCKS, block, 0)
    extra = config.mean_group_size - 1.0
    mu = np.log(max(extra, 1e-12)) - _LOGNORMAL_SIGMA**2 / 2
    sizes = 1 + rng.poisson(rng.lognormal(mu, _LOGNORMAL_SIGMA, n) if extra > 0 else np.zeros(n))
    cap = min(config.num_items, max(1, int(np.ceil(_GROUP_SIZE_CAP * config.mean_group_size))))
    return {
        "group": np.arange(start, start + n, dtype=np.int64),
        "size": np.minimum(sizes, cap).astype(np.int64),
        "home": rng.integers(0, config.num_fine_communities, n, dtype=np.int64),
        "t0": _BASE_TIME + rng.integers(0, 31_536_000, n, dtype=np.int64),
        "step": rng.integers(60, 86_400, n, dtype=np.int64),
    }


def _edge_block(config: SyntheticConfig, plan: _Plan, groups: dict[str, np.ndarray], block: int) -> pa.Table:
    """Edges of one block, grouped by group, each group's items in draw order, de-duplicated."""
    rng = _rng(config, _STREAM_BLOCKS, block, 1)
    sizes = groups["size"]
    local = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    e = len(local)
    in_home = rng.random(e) < config.p_in
    other = rng.integers(0, config.num_fine_communities, e, dtype=np.int64)
    comm = np.where(in_home, groups["home"][local], other)
    items = plan.draw(comm, rng.random(e))
    _, first = np.unique(local * config.num_items + items, return_index=True)
    keep = np.sort(first)
    local, items = local[keep], items[keep]
    columns = {"item": items, "group": groups["group"][local]}
    if config.timestamps:
        pos = np.arange(len(local)) - np.searchsorted(local, np.arange(len(sizes)))[local]
        columns["timestamp"] = groups["t0"][local] + pos * groups["step"][local]
    return pa.table(columns)


def _coverage_edges(
    config: SyntheticConfig, plan: _Plan, seen: np.ndarray, home_counts: list, blocks_per_chunk: int
) -> pa.Table:
    """One edge per never-drawn item, to a uniformly random group of its home community.

    ``home_counts[k]`` is the ``(C,)`` count of groups per home community in the k-th chunk
    of ``blocks_per_chunk`` blocks. The r-th group (in id order) of community c is picked
    with r uniform, so the result does not depend on the chunking; group homes are
    re-derived chunk by chunk, so memory is independent of num_groups.
    """
    orphans = np.flatnonzero(~seen).astype(np.int64)
    comm = plan.community[orphans]
    counts = np.stack(home_counts)  # (K, C)
    totals = counts.sum(axis=0)
    rng = _rng(config, _STREAM_COVERAGE)
    has_home = totals[comm] > 0  # a community no group calls home: fall back to any group
    rank = rng.integers(0, np.maximum(totals[comm], 1))
    any_group = rng.integers(0, config.num_groups, len(orphans), dtype=np.int64)
    before = np.cumsum(counts, axis=0) - counts  # (K, C) groups of community c in earlier runs
    group_of = np.where(has_home, -1, any_group)
    n_blocks = -(-config.num_groups // BLOCK_GROUPS)
    for k in range(len(home_counts)):
        lo, hi = before[k, comm], before[k, comm] + counts[k, comm]
        mine = np.flatnonzero(has_home & (rank >= lo) & (rank < hi))
        if len(mine) == 0:
            continue
        blocks = range(k * blocks_per_chunk, min(n_blocks, (k + 1) * blocks_per_chunk))
        homes = np.concatenate([_group_block(config, b)["home"] for b in blocks])
        order = np.argsort(homes, kind="stable")
        starts = np.searchsorted(homes[order], np.arange(config.num_fine_communities))
        first_group = k * blocks_per_chunk * BLOCK_GROUPS
        group_of[mine] = first_group + order[starts[comm[mine]] + rank[mine] - lo[mine]]
    order = np.lexsort((orphans, group_of))
    columns = {"item": orphans[order], "group": group_of[order]}
    if config.timestamps:
        g = columns["group"]
        j = np.arange(len(g)) - np.searchsorted(g, g)  # rank among coverage edges of the group
        t0, step, size = (np.empty(len(g), dtype=np.int64) for _ in range(3))
        block_of = g // BLOCK_GROUPS  # sorted, so each block's edges are one slice
        blocks, lo = np.unique(block_of, return_index=True)
        for b, start, stop in zip(blocks, lo, np.append(lo[1:], len(g))):
            blk = _group_block(config, int(b))
            idx = g[start:stop] - b * BLOCK_GROUPS
            t0[start:stop], step[start:stop], size[start:stop] = blk["t0"][idx], blk["step"][idx], blk["size"][idx]
        columns["timestamp"] = t0 + (size + j) * step  # after every drawn item of the group
    return pa.table(columns)


def _iter_interactions(
    config: SyntheticConfig, plan: _Plan, chunk_groups: int, show_progress: bool = False
) -> Iterator[tuple[pa.Table, pa.Table]]:
    """Yield ``(interactions, group_labels)`` per chunk, then ``(coverage_edges, empty)``."""
    if isinstance(chunk_groups, bool) or not isinstance(chunk_groups, (int, np.integer)) or chunk_groups < 1:
        raise ValueError(f"chunk_groups={chunk_groups!r} is invalid: pass an int >= 1 (groups per row group).")
    blocks_per_chunk = -(-int(chunk_groups) // BLOCK_GROUPS)
    n_blocks = -(-config.num_groups // BLOCK_GROUPS)
    seen = np.zeros(config.num_items, dtype=bool)
    home_counts = []
    chunks = range(0, n_blocks, blocks_per_chunk)
    if show_progress and tqdm is not None:
        chunks = tqdm(chunks, desc="synthetic groups", unit="chunk")
    elif show_progress:
        logger.info("show_progress=True but tqdm is not installed; generating without a bar")
    for first in chunks:
        edges, labels = [], []
        for b in range(first, min(n_blocks, first + blocks_per_chunk)):
            groups = _group_block(config, b)
            table = _edge_block(config, plan, groups, b)
            seen[table["item"].to_numpy()] = True
            edges.append(table)
            labels.append(pa.table(_label_columns(config, {"group": groups["group"]}, groups["home"])))
        labels = pa.concat_tables(labels)
        home_counts.append(np.bincount(labels["label"].to_numpy(), minlength=config.num_fine_communities))
        yield pa.concat_tables(edges).combine_chunks(), labels
    coverage = _coverage_edges(config, plan, seen, home_counts, blocks_per_chunk)
    yield coverage, labels.schema.empty_table()


def _label_columns(config: SyntheticConfig, columns: dict, fine: np.ndarray) -> dict:
    """``columns`` plus ``label`` (planted community) and, with two levels, ``coarse``."""
    columns = {**columns, "label": fine}
    if config.num_fine_per_coarse:
        columns["coarse"] = fine // config.num_fine_per_coarse
    return columns


def _item_tables(config: SyntheticConfig, plan: _Plan) -> tuple[pa.Table | None, pa.Table]:
    """``(item_features or None, item_labels)``, one row per item id 0..num_items-1."""
    ids = pa.array(np.arange(config.num_items, dtype=np.int64))
    labels = pa.table(_label_columns(config, {"item": ids}, plan.community))
    if config.feature_dim == 0:
        return None, labels
    rng = _rng(config, _STREAM_FEATURES)
    d = config.feature_dim
    centroids = rng.standard_normal((config.num_communities, d), dtype=np.float32) / np.float32(np.sqrt(d))
    feats = rng.standard_normal((config.num_items, d), dtype=np.float32)
    feats *= np.float32(config.feature_noise)
    # One centroid per coarse category: features carry no fine-community information.
    coarse = plan.community // config.num_fine_per_coarse if config.num_fine_per_coarse else plan.community
    feats += centroids[coarse]
    features = pa.FixedSizeListArray.from_arrays(pa.array(feats.reshape(-1)), d)
    return pa.table({"item": ids, "features": features}), labels


def generate_synthetic(config: SyntheticConfig) -> RawDataset:
    """Generate a planted-community dataset in memory (fine up to a few million edges).

    Returns:
        ``RawDataset(name="synthetic")``: ``interactions`` ``item`` int64 (0..num_items-1),
        ``group`` int64 (0..num_groups-1), plus ``timestamp`` int64 when
        ``config.timestamps``; ``item_features`` ``fixed_size_list<float32>[feature_dim]``
        (None when ``feature_dim == 0``); ``item_labels`` ``item``, ``label`` int64 (the
        planted community; the fine one with two levels, plus ``coarse`` int64).
        ``extra["group_labels"]`` is a table ``group``, ``label`` (home community; with two
        levels also ``coarse``); ``extra["config"]`` the config as a dict;
        ``extra["num_coverage_edges"]``.
        Edges equal those of :func:`write_synthetic` with the same config, in the same order.
    """
    plan = _Plan(config)
    parts = list(_iter_interactions(config, plan, chunk_groups=max(config.num_groups, 1)))
    interactions = pa.concat_tables([p[0] for p in parts]).combine_chunks()
    features, labels = _item_tables(config, plan)
    return RawDataset(
        name="synthetic",
        interactions=interactions,
        item_features=features,
        item_labels=labels,
        extra={
            "group_labels": pa.concat_tables([p[1] for p in parts]).combine_chunks(),
            "config": dataclasses.asdict(config),
            "num_coverage_edges": parts[-1][0].num_rows,
        },
    )


def write_synthetic(
    config: SyntheticConfig,
    out_dir: str | os.PathLike,
    *,
    chunk_groups: int = 200_000,
    show_progress: bool = False,
    overwrite: bool = False,
) -> dict:
    """Stream a planted-community dataset to Parquet files in bounded memory.

    Writes ``interactions.parquet`` (one row group per chunk of ``chunk_groups`` groups,
    rounded up to a multiple of ``BLOCK_GROUPS``, then one row group of coverage edges),
    ``item_labels.parquet``, ``group_labels.parquet``, ``item_features.parquet`` (if
    ``feature_dim > 0``) and ``summary.json``. Files are written into a temporary folder
    next to ``out_dir`` that is renamed into place at the end, so a crash leaves no partial
    ``out_dir``. Memory grows with ``num_items`` and ``chunk_groups``, not ``num_groups``.

    Args:
        config: generator parameters; the output depends only on it (not on chunk_groups).
        out_dir: folder to create.
        chunk_groups: groups generated and written per row group.
        show_progress: show a tqdm bar (if tqdm is installed).
        overwrite: replace an existing ``out_dir`` instead of raising ``FileExistsError``.

    Returns:
        Summary dict: ``num_items``, ``num_groups``, ``num_communities``,
        ``num_interactions``, ``num_coverage_edges``, ``seconds`` and ``paths`` (name -> str).
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise FileExistsError(f"out_dir={str(out)!r} already exists; pass overwrite=True or a new folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    started = time.perf_counter()
    try:
        plan = _Plan(config)
        num_edges = num_coverage = 0
        edges_writer = labels_writer = None
        for edges, group_labels in _iter_interactions(config, plan, chunk_groups, show_progress):
            if edges_writer is None:
                edges_writer = pq.ParquetWriter(tmp / "interactions.parquet", edges.schema)
                labels_writer = pq.ParquetWriter(tmp / "group_labels.parquet", group_labels.schema)
            if edges.num_rows:
                edges_writer.write_table(edges, row_group_size=edges.num_rows)
            if group_labels.num_rows:
                labels_writer.write_table(group_labels)
            num_edges += edges.num_rows
            num_coverage = edges.num_rows  # the last table is the coverage pass
        edges_writer.close()
        labels_writer.close()
        features, labels = _item_tables(config, plan)
        pq.write_table(labels, tmp / "item_labels.parquet")
        names = ["interactions", "item_labels", "group_labels"]
        if features is not None:
            pq.write_table(features, tmp / "item_features.parquet")
            names.append("item_features")
        del features
        summary = {
            "num_items": config.num_items,
            "num_groups": config.num_groups,
            "num_communities": config.num_communities,
            "num_interactions": num_edges,
            "num_coverage_edges": num_coverage,
            "config": dataclasses.asdict(config),
        }
        if config.num_fine_per_coarse:
            summary["num_fine_communities"] = config.num_fine_communities
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    summary["seconds"] = time.perf_counter() - started
    summary["paths"] = {name: str(out / f"{name}.parquet") for name in names}
    logger.info("wrote synthetic dataset to %s: %d edges in %.1f s", out, num_edges, summary["seconds"])
    return summary


def read_synthetic(path: str | os.PathLike) -> RawDataset:
    """Load a folder written by :func:`write_synthetic` back into a ``RawDataset``."""
    folder = Path(path)
    if not (folder / "interactions.parquet").is_file():
        raise FileNotFoundError(
            f"{str(folder / 'interactions.parquet')!r} not found; pass a folder written by write_synthetic."
        )
    feats = folder / "item_features.parquet"
    summary = json.loads((folder / "summary.json").read_text())
    return RawDataset(
        name="synthetic",
        interactions=pq.read_table(folder / "interactions.parquet"),
        item_features=pq.read_table(feats) if feats.is_file() else None,
        item_labels=pq.read_table(folder / "item_labels.parquet"),
        extra={
            "group_labels": pq.read_table(folder / "group_labels.parquet"),
            "config": summary["config"],
            "num_coverage_edges": summary["num_coverage_edges"],
        },
    )
