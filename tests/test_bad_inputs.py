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


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    return fixtures.build_fixtures(tmp_path_factory.mktemp("bad-inputs"))


def test_catalogue_covers_every_command():
    commands = {c.command for c in CASES.values()}
    assert commands == {"prepare", "train", "embed", "index", "recommend", "evaluate"}
    assert len(CASES) >= 40
    assert set(SUBSET) <= set(CASES)


@pytest.mark.parametrize("name", SUBSET)
def test_bad_input_is_clean(fx, tmp_path, name):
    result = fixtures.run_case(CASES[name], fx, tmp_path, fixtures.run_in_process)
    assert result["verdict"] == "clean", result
    assert result["error"].startswith(f"pinsage-ray {CASES[name].command}: error: ")


def test_usage_errors_are_one_line_in_a_real_shell(fx, tmp_path):
    result = fixtures.run_case(CASES["index_M_not_int"], fx, tmp_path,
                               lambda argv: fixtures.run_subprocess(argv, tmp_path, 120))
    assert result["verdict"] == "clean", result
    assert "invalid int value: 'abc'" in result["error"]
