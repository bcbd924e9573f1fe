"""CLI habits a new user meets first (issue 19, part 5): ``--version``; ``--help`` that imports
neither torch nor Ray; ``--config`` as a file or inline JSON; column-mapping flags and
in-memory tables for ``prepare``; the next command on stderr after JSON output; progress
bars on by default in the Python API only at a terminal.

No Ray instance is started here: ``prepare``/``inspect`` run in process without Ray.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinsage_ray.cli import build_parser, main


def test_version(capsys):
    from importlib import metadata

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"pinsage-ray {metadata.version('pinsage-ray')}"


def test_help_imports_neither_torch_nor_ray():
    """Building the parser, every sub-command's help and ``--help`` itself stay light: the
    heavy libraries are imported by the command that runs, not at parse time."""
    script = """
import sys
import pinsage_ray.cli as cli
parser = cli.build_parser()
sub = next(a for a in parser._actions if a.dest == "command")
for name, p in sub.choices.items():
    assert p.format_help(), name
for argv in (["--help"], ["train", "--help"], ["prepare", "--help"], ["evaluate", "--help"]):
    try:
        cli.main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "ray", "pyarrow", "pandas"})
print("HEAVY", heavy)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout, proc.stdout[-500:]


def test_package_imports_stay_lazy_and_complete():
    script = """
import sys
import pinsage_ray as pr
from pinsage_ray.training import TrainConfig
assert "torch" not in sys.modules and "ray" not in sys.modules, "eager import"
from pinsage_ray.training import train, TrainResult, BatchProducer, make_pairs
assert pr.train is train and pr.TrainConfig is TrainConfig
for name in ("prepare", "embed", "build_index", "Recommender", "open_walker"):
    assert callable(getattr(pr, name)), name
print("OK")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]


def test_config_is_a_file_or_inline_json(tmp_path):
    from pinsage_ray.cli_train import train_config_from_args

    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.02, "num_epochs": 4}))
    for value in (str(tmp_path / "c.json"), '{"lr": 0.02, "num_epochs": 4}',
                  ' {"lr": 0.02, "num_epochs": 4}'):
        cfg = train_config_from_args(build_parser().parse_args(["train", "g", "r", "--config",
                                                                value]))
        assert (cfg.lr, cfg.num_epochs) == (0.02, 4), value
    # the form docs/quality.md uses, on evaluate, over a preset
    args = build_parser().parse_args(["evaluate", "--protocol", "p2", "--preset", "groups",
                                      "--config", '{"num_epochs": 6}'])
    assert train_config_from_args(args).num_epochs == 6
    for value, match in (("missing.json", "neither inline JSON .* nor a readable JSON file"),
                         ('{"lr": 0.01', "the inline JSON is not valid JSON"),
                         ("[1]", "neither inline JSON")):
        with pytest.raises(ValueError, match=f"--config '{re.escape(value)}': {match}"):
            train_config_from_args(build_parser().parse_args(["train", "g", "r", "--config",
                                                              value]))
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list"):
        train_config_from_args(build_parser().parse_args(
            ["train", "g", "r", "--config", str(tmp_path / "list.json")]))


def _movies() -> pa.Table:
    return pa.table({"movie_id": [10, 11, 12, 10, 12], "user": ["a", "a", "b", "b", "c"],
                     "rating": [5.0, 3.0, 4.0, 1.0, 2.0], "item": ["x", "y", "z", "x", "y"]})


def test_prepare_maps_columns_from_flags(tmp_path, capsys):
    pq.write_table(_movies(), tmp_path / "ratings.parquet")
    pq.write_table(pa.table({"movie_id": [10, 11, 12], "f0": [0.1, 0.2, 0.3]}),
                   tmp_path / "feats.parquet")
    graph = tmp_path / "g"
    assert main(["prepare", str(tmp_path / "ratings.parquet"), str(graph), "--item-col",
                 "movie_id", "--group-col", "user", "--weight-col", "rating", "--features",
                 str(tmp_path / "feats.parquet")]) == 0
    cap = capsys.readouterr()
    out = json.loads(cap.out)  # stdout stays pure JSON
    assert (out["items"], out["groups"], out["edges"]) == (3, 3, 5)
    assert out["weighted"] and out["feature_dim"] == 1
    assert cap.err.strip().endswith(f"next: pinsage-ray train {graph} RUN_DIR   # RUN_DIR: a "
                                    "new folder for the model"), cap.err
    from pinsage_ray.graph import GraphStore

    assert GraphStore(str(graph)).item_ids.to_pylist() == [10, 11, 12]  # not the 'item' column

    assert main(["prepare", str(tmp_path / "ratings.parquet"), str(tmp_path / "g2"),
                 "--item-col", "movie", "--group-col", "user"]) == 2
    err = capsys.readouterr().err
    assert "no column 'movie' for the 'item' column (--item-col movie" in err, err
    assert "columns present: ['movie_id', 'user', 'rating', 'item']" in err, err
    assert not (tmp_path / "g2").exists()


def test_prepare_takes_a_table_or_dataframe(tmp_path):
    import pandas as pd

    from pinsage_ray.graph import InputError, prepare

    table = _movies()
    cols = {"item": "movie_id", "group": "user", "weight": "rating"}
    a = prepare(table, tmp_path / "a", columns=cols)
    b = prepare(table.to_pandas(), tmp_path / "b", columns=cols,
                item_features=pd.DataFrame({"movie_id": [10, 11, 12], "f": [1.0, 2.0, 3.0]}))
    for store in (a, b):
        assert (store.num_items, store.num_groups, store.manifest["num_edges"]) == (3, 3, 5)
    assert b.feature_dim == 1
    # the same row checks as a file, rows named by index
    bad = pd.DataFrame({"item": [1, 2, 3], "group": [1, 1, 2], "weight": [1.0, -2.0, 1.0]})
    with pytest.raises(InputError, match=r"<DataFrame>: row 1, column 'weight' = -2.0"):
        prepare(bad, tmp_path / "c")
    with pytest.raises(InputError, match=r"<Table>: missing column\(s\) \['group'\]"):
        prepare(pa.table({"item": [1]}), tmp_path / "d")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['user'\]"):
        prepare(table, tmp_path / "e", columns={"user": "user"})
    with pytest.raises(TypeError, match="prepare\\(source=<list>\\)"):
        prepare([1, 2], tmp_path / "f")


def test_json_commands_hint_the_next_command_on_stderr(tmp_path, capsys):
    pq.write_table(pa.table({"item": [1, 2, 3, 1], "group": [1, 1, 2, 2]}), tmp_path / "i.parquet")
    graph = tmp_path / "my graph"  # quoted so the line can be pasted
    assert main(["prepare", str(tmp_path / "i.parquet"), str(graph)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(graph)]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["edges"] == 4
    assert f"next: pinsage-ray train '{graph}' RUN_DIR" in cap.err, cap.err
    assert main(["neighbors", str(graph), "--item", "1"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out.splitlines()[0])["item"] == "1"
    assert "next: pinsage-ray train" in cap.err


def test_progress_is_on_by_default_only_at_a_terminal(monkeypatch):
    import io

    import numpy as np

    import pinsage_ray.inference.index_build as pipeline  # where build_index reads the embeddings
    from pinsage_ray.console import progress_default
    from pinsage_ray.index import HNSWIndex
    from pinsage_ray.recommender import build_index

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    seen = []

    def fake_build(emb, ids, config, show_progress=False):
        seen.append(show_progress)
        raise RuntimeError("stop here")

    emb = np.ones((4, 2), dtype=np.float32)
    monkeypatch.setattr(pipeline, "load_embeddings", lambda run_dir: (pa.array(range(4)), emb))
    monkeypatch.setattr(HNSWIndex, "build", staticmethod(fake_build))
    for stderr, explicit, expected in ((Tty(), None, True), (io.StringIO(), None, False),
                                       (Tty(), False, False), (io.StringIO(), True, True)):
        monkeypatch.setattr(sys, "stderr", stderr)
        assert progress_default(explicit) is expected
        with pytest.raises(RuntimeError, match="stop here"):
            build_index("unused", show_progress=explicit)
        assert seen.pop() is expected
