"""Version bookkeeping without an update: pruning keeps the newest versions and the run."""

from __future__ import annotations

import json

import pytest

from pinsage_ray.update import versions


def _fake_versions(run, n: int) -> None:
    for k in range(1, n + 1):
        d = run / "updates" / f"v{k:04d}"
        d.mkdir(parents=True)
        (d / "update.json").write_text("{}")
    (run / "updates" / "CURRENT").write_text(json.dumps({"version": f"v{n:04d}"}))


def test_prune_keeps_the_newest_versions_and_the_run(tmp_path):
    run = tmp_path / "run"
    (run / "embeddings").mkdir(parents=True)
    _fake_versions(run, 4)
    assert versions.prune(run, 4, keep=2) == ["v0001", "v0002"]
    assert sorted(p.name for p in (run / "updates").iterdir()) == ["CURRENT", "v0003", "v0004"]
    assert versions.current_root(run) == str(run / "updates" / "v0004")
    assert versions.prune(run, 4, keep=1) == ["v0003"]
    assert versions.prune(run, 4, keep=1) == []
    assert (run / "embeddings").is_dir()  # version 0, the run itself, is never pruned
    with pytest.raises(ValueError, match="keep_versions=0"):
        versions.prune(run, 4, keep=0)
