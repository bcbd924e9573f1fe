"""Checkpoints without pickle: round trip, resume equivalence, and refusal of bad files.

Unit tests (no Ray): :mod:`pinsage_ray.training.checkpoint` writes tensors to ``state.pt``
(loaded with ``weights_only=True``) and everything else to ``state.json`` with checksums; a
pickle payload, a truncated or a bit-flipped file is refused with the file named, and the
payload never runs.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from pinsage_ray.training.checkpoint import (META_FILE, STATE_FILE, CheckpointError,
                                             check_resumable, latest_checkpoint, load_checkpoint,
                                             save_checkpoint)


class Payload:
    """Unpickling this would create ``marker`` (stands for arbitrary code)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def _trainer(seed: int = 0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    return model, opt, sched


def _step(model, opt, sched, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    loss = model(torch.randn(16, 4, generator=g)).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    sched.step()


def _state(model, opt, sched, epoch: int = 2) -> dict:
    return {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(), "epoch": epoch,
            "history": [{"epoch": 1, "loss": 0.5, "violated_fraction": float("nan")},
                        {"epoch": 2, "loss": 0.25, "val_hit_at_10": 1 / 3}],
            "train_config": {"hard_band": [0.02, 0.2], "id_skip": None},
            "model_config": {"num_items": 7}}


def _forge(ckpt, name: str = STATE_FILE) -> None:
    """Record ``name``'s current checksum in state.json, as a crafter would."""
    meta = json.loads((ckpt / META_FILE).read_text())
    data = (ckpt / name).read_bytes()
    meta["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (ckpt / META_FILE).write_text(json.dumps(meta))


@pytest.fixture
def ckpt(tmp_path):
    model, opt, sched = _trainer()
    for s in range(3):
        _step(model, opt, sched, s)
    save_checkpoint(str(tmp_path), _state(model, opt, sched),
                    extra_files={"item_ids.parquet": b"ids"})
    return tmp_path


def test_state_pt_holds_only_tensors_and_the_rest_is_json(ckpt):
    raw = torch.load(ckpt / STATE_FILE, weights_only=True)  # loads without unpickling objects
    assert set(raw) == {"model", "optimizer", "scheduler"}
    meta = json.loads((ckpt / META_FILE).read_text())
    assert meta["epoch"] == 2 and meta["history"][1]["val_hit_at_10"] == 1 / 3
    assert set(meta["files"]) == {STATE_FILE, "item_ids.parquet"}
    assert not [p for p in os.listdir(ckpt) if ".tmp-" in p]  # temp names renamed away


def test_resume_continues_exactly_as_an_uninterrupted_run(ckpt):
    ref, ref_opt, ref_sched = _trainer()
    for s in range(5):
        _step(ref, ref_opt, ref_sched, s)
    state = load_checkpoint(ckpt)
    model, opt, sched = _trainer(seed=99)  # other init: everything must come from the file
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    for s in range(3, 5):
        _step(model, opt, sched, s)
    for a, b in zip(ref.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sched.get_last_lr() == ref_sched.get_last_lr()
    assert state["epoch"] == 2 and state["history"][0]["loss"] == 0.5
    assert state["train_config"] == {"hard_band": [0.02, 0.2], "id_skip": None}


def test_meta_only_load_and_legacy_checkpoints(ckpt, tmp_path):
    assert load_checkpoint(ckpt, tensors=False)["epoch"] == 2
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    model, opt, sched = _trainer()
    torch.save(_state(model, opt, sched, epoch=4), legacy / STATE_FILE)  # the old format
    state = load_checkpoint(legacy)
    assert state["epoch"] == 4 and set(state["model"]) == set(model.state_dict())


@pytest.mark.parametrize("forged", [False, True])
def test_pickle_payload_is_refused_and_never_runs(ckpt, tmp_path, forged):
    marker = tmp_path / "payload-ran"
    torch.save({"model": Payload(str(marker))}, ckpt / STATE_FILE)
    if forged:  # checksums match: only the weights-only loader stands in the way
        _forge(ckpt)
    with pytest.raises(CheckpointError, match="state.pt") as err:
        load_checkpoint(ckpt)
    assert ("pickled" in str(err.value)) if forged else ("sha256" in str(err.value)
                                                        or "bytes" in str(err.value))
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbled_forged", "json", "missing"])
def test_damaged_checkpoints_name_the_file(ckpt, damage):
    path = ckpt / STATE_FILE
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    elif damage == "garbled_forged":  # checksums agree, torch cannot parse it
        path.write_bytes(data[: len(data) // 3])
        _forge(ckpt)
    elif damage == "json":
        (ckpt / META_FILE).write_text("{broken")
        path = ckpt / META_FILE
    else:
        path.unlink()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(ckpt)
    msg = str(err.value)
    assert str(path) in msg and "pinsage-ray train" in msg


def test_check_resumable_follows_ray_trains_snapshot(tmp_path):
    run = tmp_path / "run"
    (run / "train").mkdir(parents=True)
    assert latest_checkpoint(run) is None
    check_resumable(run)  # a fresh run: nothing to check
    (run / "train" / "checkpoint_manager_snapshot.json").write_text(json.dumps(
        {"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_1"}}))
    (run / "train" / "checkpoint_1").mkdir()
    marker = tmp_path / "payload-ran"
    torch.save({"model": Payload(str(marker))}, run / "train" / "checkpoint_1" / STATE_FILE)
    assert latest_checkpoint(run).endswith("train/checkpoint_1")
    with pytest.raises(CheckpointError, match="checkpoint_1/state.pt.*pickled"):
        check_resumable(run)
    assert not marker.exists()


def test_train_refuses_a_crafted_checkpoint_before_ray_starts(planted_graph, tmp_path):
    """The driver checks the checkpoint to resume; the run directory is left as it was."""
    from pinsage_ray.training import TrainConfig, train

    run = tmp_path / "run"
    cfg = TrainConfig.preset("paper", num_epochs=2)
    ckpt_dir = run / "train" / "checkpoint_1"
    ckpt_dir.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"train_config": cfg.to_dict(),
                                              "graph_dir": planted_graph}))
    marker = tmp_path / "payload-ran"
    torch.save({"model": Payload(str(marker))}, ckpt_dir / STATE_FILE)
    (run / "train" / "checkpoint_manager_snapshot.json").write_text(json.dumps(
        {"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_1"}}))
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*"))
    with pytest.raises(CheckpointError, match="pickled"):
        train(planted_graph, run, cfg, address="ray://never-contacted:1")
    assert not marker.exists()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.rglob("*")) == before


def test_train_argument_order(planted_graph, tmp_path):
    """``train(graph_dir, run_dir, config=None)``; the pre-0.1 ``(graph_dir, config, run_dir)``
    still reaches the same run directory (a DeprecationWarning); a wrong type is named."""
    from pinsage_ray.training import TrainConfig, train

    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"train_config": TrainConfig().to_dict(),
                                              "graph_dir": planted_graph}))
    other = TrainConfig(lr=0.5)  # refused before Ray starts: the run holds another config
    with pytest.raises(ValueError, match=r"different graph or config \(fields \[.*'lr'\]\)"):
        train(planted_graph, run, other, address="ray://never-contacted:1")
    with pytest.warns(DeprecationWarning, match="train\\(graph_dir, run_dir, config=config\\)"):
        with pytest.raises(ValueError, match=r"fields \[.*'lr'\]"):
            train(planted_graph, other, run, address="ray://never-contacted:1")
    with pytest.raises(TypeError, match="expected a TrainConfig or None"):
        train(planted_graph, run, {"lr": 0.5}, address="ray://never-contacted:1")
