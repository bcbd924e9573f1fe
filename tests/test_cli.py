"""The CLI is a thin shell: each command runs its library function and reports errors cleanly."""

from __future__ import annotations

import json

import pytest

import pyarrow as pa
import pyarrow.parquet as pq

from pinsage_ray.cli import build_parser, main


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"prepare", "synthetic", "inspect", "neighbors", "train", "embed", "index",
            "recommend", "quickstart"} <= set(sub.choices)
    for name, p in sub.choices.items():
        assert p.format_help()


def test_prepare_inspect_neighbors(tmp_path, capsys):
    pq.write_table(pa.table({"item": ["a", "b", "c", "a"], "group": [1, 1, 2, 2]}),
                   tmp_path / "in.parquet")
    assert main(["prepare", str(tmp_path / "in.parquet"), str(tmp_path / "g")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["items"], out["groups"], out["edges"]) == (3, 2, 4)
    assert main(["inspect", str(tmp_path / "g"), "--verify"]) == 0
    assert json.loads(capsys.readouterr().out)["edges"] == 4
    assert main(["neighbors", str(tmp_path / "g"), "--item", "a", "--top-t", "2"]) == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert line["item"] == "a" and {n for n, _ in line["neighbors"]} <= {"b", "c"}


def test_errors_are_reported_not_raised(tmp_path, capsys):
    assert main(["inspect", str(tmp_path)]) == 2
    assert "not a graph directory" in capsys.readouterr().err
    pq.write_table(pa.table({"item": [1], "grp": [1]}), tmp_path / "bad.parquet")
    assert main(["prepare", str(tmp_path / "bad.parquet"), str(tmp_path / "g")]) == 2
    assert "missing column" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


def test_train_config_from_flags(tmp_path):
    from pinsage_ray.cli import train_config_from_args

    (tmp_path / "c.json").write_text(json.dumps({"lr": 0.01, "num_epochs": 7}))
    args = build_parser().parse_args(["train", "g", "r", "--config", str(tmp_path / "c.json"),
                                      "--num-epochs", "2", "--top-t", "5"])
    cfg = train_config_from_args(args)
    assert (cfg.lr, cfg.num_epochs, cfg.neighbors.top_t) == (0.01, 2, 5)
    assert (cfg.id_skip, cfg.symmetric_pairs, cfg.pair_weighting) == (None, False, "count")
    args = build_parser().parse_args(["train", "g", "r", "--no-id-skip", "--use-id-embedding",
                                      "--symmetric-pairs", "--sequence-window", "3",
                                      "--pair-weighting", "distinct"])
    cfg = train_config_from_args(args)
    assert (cfg.id_skip, cfg.use_id_embedding, cfg.symmetric_pairs, cfg.sequence_window,
            cfg.pair_weighting) == (False, True, True, 3, "distinct")
    # no --preset: the default preset's recipe, not the paper's
    assert (cfg.loss, cfg.negative_sampling, cfg.group_queries) == ("softmax", "uniform", None)
    assert (cfg.balanced_skip, cfg.id_weight) == (True, 0.7)
    args = build_parser().parse_args(["train", "g", "r", "--preset", "paper", "--loss",
                                      "softmax", "--temperature", "0.1"])
    cfg = train_config_from_args(args)
    assert (cfg.loss, cfg.temperature, cfg.negative_sampling) == ("softmax", 0.1, "degree")
    args = build_parser().parse_args(["train", "g", "r", "--preset", "groups",
                                      "--group-query-size", "4", "--id-dropout", "0.2"])
    cfg = train_config_from_args(args)
    assert (cfg.group_queries, cfg.group_query_size, cfg.id_dropout) == (1.0, 4, 0.2)
    assert cfg.num_shared_negatives == 2000 and cfg.use_id_embedding is True


def test_presets():
    from pinsage_ray.training import TrainConfig
    from pinsage_ray.training.config import PRESETS

    # the defaults are the best measured recipe for related items; 'paper' keeps the paper's
    assert TrainConfig() == TrainConfig.preset("items")
    paper = TrainConfig.preset("paper")
    assert (paper.loss, paper.negative_sampling, paper.max_hard_negatives, paper.lr,
            paper.use_id_embedding, paper.group_queries) == ("max_margin", "degree", 6, 1e-3,
                                                              None, 0.0)
    assert (TrainConfig().loss, TrainConfig().max_hard_negatives) == ("softmax", 0)
    items = TrainConfig.preset("items", neighbors={"top_t": 5}, seed=3)
    assert (items.group_queries, items.seed, items.neighbors.top_t) == (None, 3, 5)
    # auto group share: half item pairs when they are ordered (sequence) pairs, else none
    assert items.resolved(has_timestamps=True).group_queries == 0.5
    assert items.resolved(has_timestamps=False).group_queries == 1.0
    assert TrainConfig.preset("items", positives="walks").resolved(True).group_queries == 1.0
    assert TrainConfig.preset("items", group_queries=0.3).resolved(False).group_queries == 0.3
    groups = TrainConfig.preset("groups")
    assert groups.group_queries == 1.0
    # linear propagation over 500-walk neighbourhoods, whole graph (docs/quality.md)
    assert (groups.conv, groups.num_layers, groups.neighbors.num_walks) == ("propagate", 1, 500)
    assert groups.whole_graph_max_items == 1_000_000
    assert TrainConfig.preset("groups", neighbors={"top_t": 5}).neighbors.num_walks == 500
    assert set(PRESETS) == {"items", "groups", "paper"}
    with pytest.raises(ValueError, match="preset='nope'"):
        TrainConfig.preset("nope")
    with pytest.raises(ValueError, match="group_queries=1.5"):
        TrainConfig.preset("items", group_queries=1.5)
    with pytest.raises(ValueError, match="id_dropout=1.0"):
        TrainConfig(id_dropout=1.0)


def test_index_search_flag_reaches_the_index(tmp_path, capsys, monkeypatch):
    import numpy as np

    import pinsage_ray.inference.index_build as pipeline  # where build_index reads the embeddings
    from pinsage_ray.index import HNSWIndex

    emb = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    monkeypatch.setattr(pipeline, "load_embeddings", lambda run_dir: (pa.array(range(300)), emb))
    for mode in ("exact", "hnsw"):
        run = tmp_path / mode
        assert main(["index", str(run), "--search", mode]) == 0
        out = capsys.readouterr().out
        assert out.startswith(f"index: 300 items, cosine space, {mode if mode == 'exact' else 'HNSW'} search")
        assert "held-out recall@10" in out and f"next: pinsage-ray recommend {run} --item 0" in out
        assert HNSWIndex.load(run / "index").search == mode
    with pytest.raises(SystemExit):
        build_parser().parse_args(["index", "r", "--search", "fast"])
    assert build_parser().parse_args(["index", "r"]).search == "auto"
