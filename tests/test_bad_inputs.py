"""Bad inputs end in one clean error: a CI guard over part of ``benchmarks/faults_catalogue.py``.

``bench_faults.py`` runs the whole catalogue as subprocesses. Here a representative subset
(at least one case per command, and each kind: malformed file, wrong type, NaN/inf, unknown
id, empty input, out-of-range flag, foreign directory, corrupted artefact, pickle payload)
runs in-process through ``pinsage_ray.cli.main`` and must be clean: exit code 2, one
``pinsage-ray CMD: error:`` line, nothing written at the output path, no payload run. One
case also runs as a real subprocess, to check what a shell user sees.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import _fault_fixtures as fixtures  # noqa: E402
import faults_catalogue  # noqa: E402

CASES = {c.name: c for c in faults_catalogue.all_cases()}
SUBSET = [
    "prepare_truncated_parquet", "prepare_nan_weight", "prepare_features_string_ids",
    "prepare_header_only_csv", "train_lr_inf", "train_config_wrong_type",
    "train_run_dir_foreign", "train_checkpoint_pickle_payload", "embed_graph_dir_foreign",
    "embed_model_bitflip", "index_embeddings_truncated", "index_target_recall_nan",
    "recommend_unknown_item", "recommend_index_bitflip", "evaluate_k_zero",
]


#: Text each case's error must contain: the argument (flag, file or column), the bad value
#: and, where the message gives one, the fix. An input rejected for another reason fails.
EXPECT = {
    "prepare_truncated_parquet": ["interactions.parquet'", "cannot be read as parquet"],
    "prepare_nan_weight": ["w.parquet: row 2", "column 'weight' = nan",
                           "weights must be finite and >= 0"],
    "prepare_features_string_ids": ["f.parquet: features item ids have type string",
                                    "interactions' ids have type int64",
                                    "write the features item ids as int64"],
    "prepare_header_only_csv": ["h.csv: no interactions (empty input)"],
    "train_lr_inf": ["lr=inf", "expected a finite number > 0"],
    "train_config_wrong_type": ["lr='fast'", "expected a finite number > 0"],
    "train_run_dir_foreign": ["run_dir '", "holds no pinsage-ray run (no run.json)",
                              "choose a new or empty directory"],
    "train_checkpoint_pickle_payload": ["state.pt: refused to load",
                                        "holds pickled Python objects", "Nothing in it was run",
                                        "Only load checkpoints written by pinsage-ray"],
    "embed_graph_dir_foreign": ["graph2' has 81 items", "trained on 120 items",
                                "pass the training graph (--graph-dir)"],
    "embed_model_bitflip": ["model/model.pt: sha256 differs", "restore RUN_DIR/model"],
    "index_embeddings_truncated": ["embeddings/part-00000.parquet:", "truncated or replaced",
                                   "re-run `pinsage-ray embed"],
    "index_target_recall_nan": ["target_recall", "got nan", "e.g. 0.95"],
    "recommend_unknown_item": ["item id 987654", "not in this run's embeddings",
                               "Recommender.add_items"],
    "recommend_index_bitflip": ["index/index.bin: sha256 mismatch",
                                "rebuild it with `pinsage-ray index"],
    "evaluate_k_zero": ["-k 0", "cut-offs must be integers >= 1"],
}


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return fixtures.build_fixtures(tmp_path_factory.mktemp("bad-inputs"))


def test_catalogue_covers_every_command():
    commands = {c.command for c in CASES.values()}
    assert commands == {"prepare", "train", "embed", "index", "recommend", "evaluate"}
    assert len(CASES) >= 40
    assert set(SUBSET) <= set(CASES) and set(EXPECT) == set(SUBSET)


@pytest.mark.parametrize("name", SUBSET)
def test_bad_input_is_clean(fx, tmp_path, name):
    stderr = []

    def run(argv):  # the whole error line (the result keeps its first 300 characters)
        rc, err = fixtures.run_in_process(argv)
        stderr.append(err)
        return rc, err

    result = fixtures.run_case(CASES[name], fx, tmp_path, run)
    assert result["verdict"] == "clean", result
    assert result["error"].startswith(f"pinsage-ray {CASES[name].command}: error: ")
    error = [line for line in stderr[0].splitlines() if line.strip()][-1]
    missing = [text for text in EXPECT[name] if text not in error]
    assert not missing, (missing, error)


def test_usage_errors_are_one_line_in_a_real_shell(fx, tmp_path):
    result = fixtures.run_case(CASES["index_M_not_int"], fx, tmp_path,
                               lambda argv: fixtures.run_subprocess(argv, tmp_path, 120))
    assert result["verdict"] == "clean", result
    assert "invalid int value: 'abc'" in result["error"]
