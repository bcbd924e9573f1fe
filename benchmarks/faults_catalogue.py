"""The bad-input catalogue: what a user can get wrong, one case per mistake, per command.

Each :class:`Case` builds its bad input in a private folder (from the shared fixtures of
:mod:`_fault_fixtures`) and names the path the command would write. A case is *clean* when
the command exits with code 2, stderr is one ``pinsage-ray CMD: error: ...`` line (no
traceback), and the output path is as before: absent if it was absent, byte-identical if it
existed (:func:`_fault_fixtures.judge`). ``bench_faults.py`` runs every case as a subprocess;
tests/test_bad_inputs.py runs a subset in-process.

The kinds covered: malformed and truncated files, wrong column and value types, NaN/inf,
unknown ids, empty inputs, out-of-range flags, missing or foreign directories, corrupted
artefacts (graph files, checkpoints, model, embeddings parts, index files) and a pickle
payload where weights are expected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _fault_fixtures as fx_

logger = logging.getLogger(__name__)

Setup = tuple[list[Any], "Path | None", "Path | None"]  # argv, output path, payload marker


@dataclass(frozen=True)
class Case:
    """One bad input: ``make(fx, tmp)`` builds it in ``tmp`` and returns ``(argv, output,
    marker)``: the command line, the path the command would write (None: it writes nothing)
    and a path that a code payload in the input would create (None: no payload)."""

    name: str
    command: str
    what: str
    make: Callable[[dict[str, Path], Path], Setup]


# --------------------------------------------------------------------------- file makers
def _pq(path: Path, **columns: Any) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


def _copy_file(src: Path, t: Path) -> Path:
    dst = t / src.name
    dst.write_bytes(src.read_bytes())
    return dst


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


def _features(fx: dict, t: Path, bad: float) -> Path:
    """A feature table for every item of the interactions, one value replaced by ``bad``."""
    import pyarrow.parquet as pq

    items = pq.read_table(fx["inter"]).column("item").unique().to_pylist()
    return _pq(t / "f.parquet", item=items, x=[bad] + [0.5] * (len(items) - 1))


def _run(fx: dict, t: Path, damage: Callable[[Path], Any] = lambda run: None) -> Path:
    """A private copy of the fixture run, damaged by ``damage(run)``."""
    run = fx_.copy(fx["run"], t / "run")
    damage(run)
    return run


def _graph(fx: dict, t: Path, damage: Callable[[Path], Any]) -> Path:
    graph = fx_.copy(fx["graph"], t / "graph")
    damage(graph)
    return graph


def _rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path) if path.is_dir() else path.unlink()


def _first_part(run: Path) -> Path:
    return sorted((run / "embeddings").glob("part-*.parquet"))[0]


# --------------------------------------------------------------------------- prepare
def prepare_cases() -> list[Case]:
    def prep(name: str, what: str, inp: Callable, *extra: str) -> Case:
        return Case(f"prepare_{name}", "prepare", what, lambda fx, t: (
            ["prepare", inp(fx, t), t / "g", *extra], t / "g", None))

    def feats(name: str, what: str, table: Callable) -> Case:
        return Case(f"prepare_{name}", "prepare", what, lambda fx, t: (
            ["prepare", fx["inter"], t / "g", "--features", table(fx, t)], t / "g", None))

    w = dict(item=[1, 2], group=[1, 1])
    return [
        prep("missing_input", "input file does not exist", lambda fx, t: t / "nope.parquet"),
        prep("unknown_extension", "input is a .txt file",
             lambda fx, t: fx_.write_text(t / "x.txt", "1,2\n")),
        prep("empty_parquet", "0 rows", lambda fx, t: _pq(t / "e.parquet", item=[], group=[])),
        prep("missing_column", "no 'group' column",
             lambda fx, t: _pq(t / "m.parquet", item=[1], grp=[1])),
        prep("garbage_parquet", "a .parquet file that is not Parquet",
             lambda fx, t: fx_.write_text(t / "g.parquet", "not parquet")),
        prep("truncated_parquet", "half of a Parquet file",
             lambda fx, t: fx_.truncate(_copy_file(fx["inter"], t))),
        prep("ragged_csv", "a CSV row with an extra field",
             lambda fx, t: fx_.write_text(t / "r.csv", "item,group\n1,2\n3,4,5\n")),
        prep("header_only_csv", "a CSV with a header and no rows",
             lambda fx, t: fx_.write_text(t / "h.csv", "item,group\n")),
        prep("null_item", "a null item id",
             lambda fx, t: _pq(t / "n.parquet", item=[1, None], group=[1, 2])),
        prep("nan_weight", "a NaN weight",
             lambda fx, t: _pq(t / "w.parquet", **w, weight=[1.0, float("nan")])),
        prep("inf_weight", "an infinite weight",
             lambda fx, t: _pq(t / "w.parquet", **w, weight=[float("inf"), 1.0])),
        prep("negative_weight", "a weight of -1",
             lambda fx, t: _pq(t / "w.parquet", **w, weight=[1.0, -1.0])),
        prep("zero_weights", "every weight 0",
             lambda fx, t: _pq(t / "w.parquet", **w, weight=[0.0, 0.0])),
        prep("float_ids", "float item ids",
             lambda fx, t: _pq(t / "f.parquet", item=[1.5, 2.5], group=[1, 1])),
        prep("string_weight", "a weight column of strings",
             lambda fx, t: _pq(t / "s.parquet", **w, weight=["a", "b"])),
        prep("string_timestamp", "a timestamp column of strings",
             lambda fx, t: _pq(t / "s.parquet", **w, timestamp=["x", "y"])),
        prep("bad_format", "--format bogus", lambda fx, t: fx["inter"], "--format", "bogus"),
        prep("movielens_empty_dir", "--format movielens on a folder without u.data",
             lambda fx, t: _mkdir(t / "ml"), "--format", "movielens"),
        prep("features_missing", "--features file does not exist", lambda fx, t: fx["inter"],
             "--features", "/nonexistent/features.parquet"),
        feats("features_nan", "a NaN feature value", lambda fx, t: _features(fx, t, float("nan"))),
        feats("features_inf", "an infinite feature value",
              lambda fx, t: _features(fx, t, float("-inf"))),
        feats("features_string_ids", "string feature ids for int item ids",
              lambda fx, t: _pq(t / "f.parquet", item=["a", "b"], x=[1.0, 2.0])),
        feats("features_ragged", "feature vectors of different lengths",
              lambda fx, t: _pq(t / "f.parquet", item=[1, 2], v=[[1.0, 2.0], [1.0]])),
        Case("prepare_output_exists", "prepare", "graph_dir exists, no --overwrite",
             lambda fx, t: (["prepare", fx["inter"], fx_.copy(fx["graph"], t / "g")], t / "g",
                            None)),
        Case("prepare_output_under_file", "prepare", "graph_dir inside a regular file",
             lambda fx, t: (["prepare", fx["inter"], fx_.write_text(t / "f", "x") / "g"],
                            t / "f", None)),
    ]


# --------------------------------------------------------------------------- train
def _config_for(argv: list[Any]) -> Any:
    """The TrainConfig that ``pinsage-ray train ARGV`` builds."""
    from pinsage_ray.cli import build_parser, train_config_from_args

    return train_config_from_args(build_parser().parse_args([str(a) for a in argv]))


def _checkpoint_case(name: str, what: str, payload: bool) -> Case:
    def make(fx: dict, t: Path) -> Setup:
        run = _run(fx, t)
        argv = ["train", fx["graph"], run]
        marker = t / "payload-ran" if payload else None
        fx_.crafted_checkpoint(run, _config_for(argv), marker)
        return argv, run, marker
    return Case(f"train_{name}", "train", what, make)


def train_cases() -> list[Case]:
    def tr(name: str, what: str, *flags: str, graph: Callable = lambda fx, t: fx["graph"]) -> Case:
        return Case(f"train_{name}", "train", what, lambda fx, t: (
            ["train", graph(fx, t), t / "run", *flags], t / "run", None))

    def cfg(name: str, what: str, text: str) -> Case:
        return Case(f"train_{name}", "train", what, lambda fx, t: (
            ["train", fx["graph"], t / "run", "--config", fx_.write_text(t / "c.json", text)],
            t / "run", None))

    def damaged(fn: Callable[[Path], Any]) -> Callable:
        return lambda fx, t: _graph(fx, t, fn)

    return [
        tr("graph_missing", "graph_dir does not exist", graph=lambda fx, t: t / "nope"),
        tr("graph_foreign", "graph_dir is a folder of Parquet files",
           graph=lambda fx, t: fx["inter"].parent),
        tr("graph_truncated", "a truncated item_indices.npy",
           graph=damaged(lambda g: fx_.truncate(g / "item_indices.npy"))),
        tr("graph_bitflip", "one flipped byte in item_weights.npy",
           graph=damaged(lambda g: fx_.flip_byte(g / "item_weights.npy"))),
        tr("graph_ids_bitflip", "one flipped byte in item_ids.parquet",
           graph=damaged(lambda g: fx_.flip_byte(g / "item_ids.parquet", 40))),
        tr("graph_manifest_garbage", "manifest.json is not JSON",
           graph=damaged(lambda g: fx_.write_text(g / "manifest.json", "{oops"))),
        tr("zero_epochs", "--num-epochs 0", "--num-epochs", "0"),
        tr("epochs_not_int", "--num-epochs abc", "--num-epochs", "abc"),
        tr("lr_nan", "--lr nan", "--lr", "nan"),
        tr("lr_inf", "--lr inf", "--lr", "inf"),
        tr("negative_batch", "--batch-size -5", "--batch-size", "-5"),
        tr("top_t_zero", "--top-t 0", "--top-t", "0"),
        tr("group_queries_range", "--group-queries 1.5", "--group-queries", "1.5"),
        tr("unknown_preset", "--preset bogus", "--preset", "bogus"),
        tr("config_missing", "--config file does not exist", "--config", "/nonexistent/c.json"),
        cfg("config_malformed", "--config is not JSON", "{lr: 0.1"),
        cfg("config_list", "--config holds a JSON list", "[1, 2]"),
        cfg("config_unknown_field", "--config has an unknown field", '{"learning_rate": 0.1}'),
        cfg("config_wrong_type", "--config gives lr as a string", '{"lr": "fast"}'),
        cfg("config_bad_neighbors", "--config neighbors has an unknown field",
            '{"neighbors": {"bogus": 1}}'),
        Case("train_run_dir_is_file", "train", "run_dir is a regular file", lambda fx, t: (
            ["train", fx["graph"], fx_.write_text(t / "r", "x")], t / "r", None)),
        Case("train_run_dir_foreign", "train", "run_dir is a non-empty folder with no run",
             lambda fx, t: (["train", fx["graph"], fx_.copy(fx["graph"], t / "r")], t / "r",
                            None)),
        Case("train_run_dir_other_config", "train", "run_dir holds a run with another config",
             lambda fx, t: (["train", fx["graph"], _run(fx, t)], t / "run", None)),
        _checkpoint_case("checkpoint_pickle_payload",
                         "state.pt of the checkpoint to resume is a pickle payload", True),
        _checkpoint_case("checkpoint_truncated", "state.pt of the checkpoint to resume is "
                         "truncated", False),
    ]


# --------------------------------------------------------------------------- embed / index
def embed_cases() -> list[Case]:
    def em(name: str, what: str, *flags: Any, damage: Callable[[Path], Any] = lambda r: None,
           extra: Callable = lambda fx, t: []) -> Case:
        def make(fx: dict, t: Path) -> Setup:
            run = _run(fx, t, damage)
            return ["embed", run, *flags, *extra(fx, t)], run / "embeddings", None
        return Case(f"embed_{name}", "embed", what, make)

    def payload(fx: dict, t: Path) -> Setup:
        run = _run(fx, t)
        fx_.pickle_payload(run / "model" / "model.pt", t / "payload-ran")
        fx_.rehash(run / "model" / "model.json", "model.pt")
        return ["embed", run], run / "embeddings", t / "payload-ran"

    return [
        Case("embed_run_missing", "embed", "run_dir does not exist",
             lambda fx, t: (["embed", t / "nope"], t / "nope", None)),
        Case("embed_run_is_graph", "embed", "run_dir is a graph directory",
             lambda fx, t: (["embed", fx_.copy(fx["graph"], t / "g")], t / "g", None)),
        em("bad_mode", "--mode bogus", "--mode", "bogus"),
        em("batch_size_zero", "--batch-size 0", "--batch-size", "0"),
        em("num_actors_negative", "--num-actors -1", "--num-actors", "-1"),
        em("num_shards_negative", "--num-shards -2", "--num-shards", "-2"),
        em("graph_dir_missing", "--graph-dir does not exist",
           extra=lambda fx, t: ["--graph-dir", t / "nope"]),
        em("graph_dir_foreign", "--graph-dir is another graph (other items)",
           extra=lambda fx, t: ["--graph-dir", fx["graph2"]]),
        em("graph_file_truncated", "the run's graph has a truncated item_indptr.npy",
           extra=lambda fx, t: ["--graph-dir", _graph(
               fx, t, lambda g: fx_.truncate(g / "item_indptr.npy"))]),
        em("model_truncated", "model.pt truncated",
           damage=lambda r: fx_.truncate(r / "model" / "model.pt")),
        em("model_bitflip", "one flipped byte in model.pt",
           damage=lambda r: fx_.flip_byte(r / "model" / "model.pt", 2000)),
        em("model_json_garbage", "model.json is not JSON",
           damage=lambda r: fx_.write_text(r / "model" / "model.json", "nope")),
        Case("embed_model_pickle_payload", "embed", "model.pt is a pickle payload (checksums "
             "forged to match)", payload),
    ]


def index_cases() -> list[Case]:
    def ix(name: str, what: str, *flags: str, damage: Callable[[Path], Any] = lambda r: None,
           keep_index: bool = False) -> Case:
        def make(fx: dict, t: Path) -> Setup:
            run = _run(fx, t, damage)
            if not keep_index:
                _rm(run / "index")  # so that any partial output would show
            return ["index", run, *flags], run / "index", None
        return Case(f"index_{name}", "index", what, make)

    def nan_embeddings(run: Path) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        part = _first_part(run)
        table = pq.read_table(part)
        emb = table.column("embedding").combine_chunks()
        nan = pa.array(np.full(len(emb.flatten()), np.nan, dtype=np.float32))
        table = table.set_column(table.column_names.index("embedding"), "embedding",
                                 pa.ListArray.from_arrays(emb.offsets, nan))
        pq.write_table(table, part)
        fx_.rehash(run / "embeddings" / "_manifest.json", part.name)

    return [
        Case("index_run_missing", "index", "run_dir does not exist",
             lambda fx, t: (["index", t / "nope"], t / "nope", None)),
        ix("no_embeddings", "run_dir has no embeddings yet",
           damage=lambda r: _rm(r / "embeddings")),
        ix("M_zero", "--M 0", "--M", "0"),
        ix("M_not_int", "--M abc", "--M", "abc"),
        ix("ef_zero", "--ef 0", "--ef", "0"),
        ix("ef_construction_negative", "--ef-construction -1", "--ef-construction", "-1"),
        ix("target_recall_range", "--target-recall 1.5", "--target-recall", "1.5"),
        ix("target_recall_nan", "--target-recall nan", "--target-recall", "nan"),
        ix("bad_space", "--space foo", "--space", "foo"),
        ix("embeddings_truncated", "an embeddings part truncated",
           damage=lambda r: fx_.truncate(_first_part(r))),
        ix("embeddings_bitflip", "one flipped byte in an embeddings part",
           damage=lambda r: fx_.flip_byte(_first_part(r), 600)),
        ix("embeddings_manifest_garbage", "embeddings/_manifest.json is not JSON",
           damage=lambda r: fx_.write_text(r / "embeddings" / "_manifest.json", "[")),
        ix("embeddings_nan", "NaN embeddings (manifest checksums match)",
           damage=nan_embeddings),
        ix("keeps_previous_index", "a bit-flipped embeddings part, an index already there",
           damage=lambda r: fx_.flip_byte(_first_part(r), 600), keep_index=True),
    ]


# --------------------------------------------------------------------------- recommend / evaluate
def recommend_cases() -> list[Case]:
    def rec(name: str, what: str, *flags: str, damage: Callable[[Path], Any] = lambda r: None
            ) -> Case:
        return Case(f"recommend_{name}", "recommend", what,
                    lambda fx, t: (["recommend", _run(fx, t, damage), *flags], None, None))

    return [
        Case("recommend_run_missing", "recommend", "run_dir does not exist",
             lambda fx, t: (["recommend", t / "nope", "--item", "1"], None, None)),
        Case("recommend_run_is_graph", "recommend", "run_dir is a graph directory",
             lambda fx, t: (["recommend", fx["graph"], "--item", "1"], None, None)),
        rec("unknown_item", "--item id not in the run", "--item", "987654"),
        rec("item_not_int", "--item abc for integer ids", "--item", "abc"),
        rec("k_zero", "-k 0", "--item", "1", "-k", "0"),
        rec("k_too_large", "-k above the number of items", "--item", "1", "-k", "100000"),
        rec("k_not_int", "-k abc", "--item", "1", "-k", "abc"),
        rec("nothing_asked", "neither --item nor --group-items"),
        rec("empty_group", "--group-items ','", "--group-items", ","),
        rec("group_unknown_item", "--group-items with an unknown id", "--group-items", "1,987654"),
        rec("index_bitflip", "one flipped byte in index.bin", "--item", "1",
            damage=lambda r: fx_.flip_byte(r / "index" / "index.bin", 100)),
        rec("index_truncated", "index.bin truncated", "--item", "1",
            damage=lambda r: fx_.truncate(r / "index" / "index.bin")),
        rec("index_manifest_garbage", "index/manifest.json is not JSON", "--item", "1",
            damage=lambda r: fx_.write_text(r / "index" / "manifest.json", "{")),
        rec("index_ids_missing", "index/ids.npy deleted", "--item", "1",
            damage=lambda r: _rm(r / "index" / "ids.npy")),
        rec("embeddings_bitflip", "one flipped byte in an embeddings part", "--item", "1",
            damage=lambda r: fx_.flip_byte(_first_part(r), 600)),
    ]


def evaluate_cases() -> list[Case]:
    def ev(name: str, what: str, *flags: Any, damage: Callable[[Path], Any] = lambda r: None
           ) -> Case:
        return Case(f"evaluate_{name}", "evaluate", what, lambda fx, t: (
            ["evaluate", _run(fx, t, damage), "--json", t / "report.json", *flags],
            t / "report.json", None))

    def bad_pairs(run: Path) -> None:
        _pq(run / "val_pairs.parquet", query=[987654], positive=[1])

    return [
        Case("evaluate_nothing_asked", "evaluate", "no run_dir and no --protocol",
             lambda fx, t: (["evaluate", "--json", t / "r.json"], t / "r.json", None)),
        Case("evaluate_run_missing", "evaluate", "run_dir does not exist",
             lambda fx, t: (["evaluate", t / "nope"], t / "nope", None)),
        Case("evaluate_protocol_no_data", "evaluate", "--protocol p1 without --data-dir",
             lambda fx, t: (["evaluate", "--protocol", "p1", "--workdir", t / "w"], t / "w",
                            None)),
        Case("evaluate_protocol_missing_data", "evaluate", "--protocol p1, --data-dir missing",
             lambda fx, t: (["evaluate", "--protocol", "p1", "--data-dir", t / "nope",
                             "--workdir", t / "w"], t / "w", None)),
        Case("evaluate_bad_protocol", "evaluate", "--protocol p9",
             lambda fx, t: (["evaluate", "--protocol", "p9"], None, None)),
        ev("unknown_baseline", "--baselines foo", "--baselines", "foo"),
        ev("k_zero", "-k 0", "-k", "0"),
        ev("json_in_missing_folder", "--json into a folder that does not exist",
           "--json", "/nonexistent/dir/report.json"),
        ev("no_val_pairs", "the run has no val_pairs.parquet",
           damage=lambda r: _rm(r / "val_pairs.parquet")),
        ev("val_pairs_unknown_ids", "val_pairs.parquet names items not in the graph",
           damage=bad_pairs),
        ev("val_pairs_truncated", "val_pairs.parquet truncated",
           damage=lambda r: fx_.truncate(r / "val_pairs.parquet")),
        ev("no_embeddings", "the run has no embeddings", damage=lambda r: _rm(r / "embeddings")),
    ]


def all_cases() -> list[Case]:
    """Every case of the catalogue, grouped by command."""
    cases = (prepare_cases() + train_cases() + embed_cases() + index_cases()
             + recommend_cases() + evaluate_cases())
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate case names: {sorted(n for n in names if names.count(n) > 1)}")
    return cases
