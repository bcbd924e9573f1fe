"""The benchmark graphs, each built once into the cache folder and reused by every script.

Three kinds, all prepared with :func:`pinsage_ray.prepare` into ``FOLDER/graph`` with a
``FOLDER/build.json`` beside it (build seconds, edges, the builder's peak RSS):

* **synthetic**: the planted-community generator (``pinsage_ray.data.write_synthetic``) at a
  given size, mean group size, feature width and seed; the folder name, chosen by the
  script, is the cache key (``bench_walks`` and ``bench_inference`` derive the mean group
  size from an edge target with :func:`mean_group_size_for`; ``bench_train`` gives it);
* **movielens**: MovieLens-100K (``DATA/ml-100k``) in ``CACHE/movielens``;
* **gowalla**: Gowalla's LightGCN training split (``DATA/gowalla``) in ``CACHE/gowalla``,
  shared by ``bench_walks``, ``bench_train`` and ``bench_inference``.

:func:`ensure_graph` reuses a cached graph that opens, and otherwise builds it in a spawned
child process, so the peak memory of generating and preparing stays out of the benchmark's.

Scripts take ``--data-dir`` and ``--cache-dir`` from :func:`add_graph_args`. Import it from a
script in this folder with ``from _graphs import ...``.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import REPO

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- flags
def add_graph_args(parser: argparse.ArgumentParser, *, data_help: str,
                   cache_help: str | None = None) -> None:
    """Add ``--data-dir`` (default ``$PINSAGE_DATA_DIR``, else ``../shared/data`` beside the
    repository) and ``--cache-dir`` (default ``<repo>/.bench_cache``)."""
    default_data = os.environ.get("PINSAGE_DATA_DIR") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data-dir", default=default_data, help=data_help)
    parser.add_argument("--cache-dir", default=str(REPO / ".bench_cache"), help=cache_help)


# --------------------------------------------------------------------------- builders
def mean_group_size_for(edges: int, groups: int, items: int) -> float:
    """``SyntheticConfig.mean_group_size`` for about ``edges`` edges over ``groups`` groups
    (at least 1, at most ``items``)."""
    return min(max(edges / groups, 1.0), float(items))


def build_synthetic(items: int, groups: int, mean_group_size: float, feature_dim: int,
                    seed: int, out: str) -> None:
    """Generate + prepare a synthetic graph into ``out`` (run by :func:`ensure_graph` in a
    child process: its memory is freed). ``feature_dim`` 0 = no item features."""
    from pinsage_ray import prepare
    from pinsage_ray.data import SyntheticConfig, read_synthetic, write_synthetic

    out_dir = Path(out)
    cfg = SyntheticConfig(num_items=items, num_groups=groups, mean_group_size=mean_group_size,
                          feature_dim=feature_dim, seed=seed)
    t0 = time.perf_counter()
    raw = out_dir / "raw"
    write_synthetic(cfg, raw, overwrite=True)
    t1 = time.perf_counter()
    store = prepare(read_synthetic(raw), out_dir / "graph", overwrite=True)
    t2 = time.perf_counter()
    shutil.rmtree(raw)  # only needed to build the graph; regenerated if the graph goes
    write_build_info(out_dir, {"generate_s": t1 - t0, "prepare_s": t2 - t1,
                               "num_edges": store.num_edges, "config": vars(cfg)})


def build_movielens(source: str, out: str) -> None:
    """Prepare MovieLens-100K (``source`` holds ``u.data``) into ``out``."""
    from pinsage_ray import prepare
    from pinsage_ray.data import read_movielens_100k

    t0 = time.perf_counter()
    store = prepare(read_movielens_100k(source), Path(out) / "graph", overwrite=True)
    write_build_info(Path(out), {"build_s": time.perf_counter() - t0,
                                 "num_edges": store.num_edges, "source": source})


def build_gowalla(source: str, out: str) -> None:
    """Prepare Gowalla's training split (``source`` holds LightGCN's ``train.txt``) into
    ``out``."""
    from pinsage_ray import prepare
    from pinsage_ray.data import read_lightgcn

    t0 = time.perf_counter()
    train, _ = read_lightgcn(source)
    store = prepare(train, Path(out) / "graph", overwrite=True)
    write_build_info(Path(out), {"prepare_s": time.perf_counter() - t0,
                                 "num_edges": store.num_edges, "source": source})


def write_build_info(out_dir: Path, info: dict[str, Any]) -> None:
    """``out_dir/build.json``: ``info`` plus this (builder) process's peak RSS."""
    info["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    (out_dir / "build.json").write_text(json.dumps(info, indent=2, default=str))


# --------------------------------------------------------------------------- cache
def _graph_ok(graph: Path) -> bool:
    from pinsage_ray.graph import GraphFormatError, GraphStore

    if not (graph / "manifest.json").is_file():
        return False
    try:
        GraphStore(graph)
        return True
    except GraphFormatError as err:
        log.warning("cached graph %s unusable (%s); rebuilding", graph, err)
        return False


def _in_child(target: Callable[..., None], *args: Any) -> None:
    """Run ``target(*args)`` in a fresh process (peak memory of building stays out of ours)."""
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"{target.__name__}{args} failed with exit code {proc.exitcode}")


def ensure_graph(kind: str, folder: Path, builder: Callable[..., None],
                 *args: Any) -> tuple[Path, dict[str, Any]]:
    """``(folder/graph, build info)``: the cached graph, or ``builder(*args, str(folder))``
    run in a child process first when it is missing or does not open."""
    graph = folder / "graph"
    if _graph_ok(graph):
        log.info("%s graph: cached at %s", kind, graph)
    else:
        folder.mkdir(parents=True, exist_ok=True)
        log.info("%s graph: building into %s", kind, graph)
        t0 = time.perf_counter()
        _in_child(builder, *args, str(folder))
        log.info("%s graph: built in %.1f s", kind, time.perf_counter() - t0)
    info_path = folder / "build.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    return graph, info


def synthetic_graph(folder: Path, *, items: int, groups: int, mean_group_size: float,
                    feature_dim: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """The synthetic graph cached in ``folder`` (whose name should say every setting)."""
    return ensure_graph("synthetic", folder, build_synthetic, items, groups, mean_group_size,
                        feature_dim, seed)


def movielens_graph(cache: Path, data_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """MovieLens-100K cached in ``cache/movielens``; None when ``data_dir/ml-100k`` is absent."""
    source = Path(data_dir) / "ml-100k"
    if not (source / "u.data").is_file():
        return None
    return ensure_graph("movielens", Path(cache) / "movielens", build_movielens, str(source))


def gowalla_graph(cache: Path, data_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Gowalla's training split cached in ``cache/gowalla``; None when ``data_dir/gowalla``
    has no ``train.txt``."""
    source = Path(data_dir) / "gowalla"
    if not (source / "train.txt").is_file():
        return None
    return ensure_graph("gowalla", Path(cache) / "gowalla", build_gowalla, str(source))
