"""Fault tolerance of ``update_run``: a crash at any step leaves the old version serving, and
rerunning the same update finishes it with the oracle's result; rerunning a finished update
changes nothing.

The crash is injected between steps (``_after_step``): once as an exception (the update's
own clean-up runs) and once as a hard kill of the driver process (``os._exit`` in a child
process, after the new version is fully written but before it is made current), which leaves
its temp directory behind for the rerun to clear.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest

from pinsage_ray.recommender import Recommender
from pinsage_ray.update import update_run


@pytest.fixture(scope="module")
def base_run(update_base):
    base = update_base["tmp"]
    for key in ("new", "new_feats"):
        pq.write_table(update_base["day"][key], base / f"{key}.parquet")
    return {**update_base, "base": base}


def _answers(run) -> list:
    rec = Recommender.load(run)
    return [rec.similar_items(i, 5) for i in rec.ids[:20].tolist()]


def test_crash_keeps_old_version_and_rerun_equals_oracle(base_run, recompute):
    run, day = base_run["run"], base_run["day"]
    before = _answers(run)

    def boom(step: str) -> None:
        if step == "layers":
            raise RuntimeError("injected crash after the layers step")

    with pytest.raises(RuntimeError, match="injected"):
        update_run(run, day["new"], item_features=day["new_feats"], remove_items=day["remove"],
                   _after_step=boom)
    updates = run / "updates"
    assert not updates.exists()  # nothing committed, temp cleared
    assert _answers(run) == before

    # a hard kill of the driver after everything is written, before the commit
    script = textwrap.dedent(f"""
        import os, pyarrow.parquet as pq
        from pinsage_ray.update import update_run
        def die(step):
            if step == "write":
                os._exit(9)
        update_run({str(run)!r}, pq.read_table({str(base_run['base'] / 'new.parquet')!r}),
                   item_features=pq.read_table({str(base_run['base'] / 'new_feats.parquet')!r}),
                   remove_items={day['remove']!r}, _after_step=die)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 9, proc.stderr[-2000:]
    assert [p.name for p in updates.iterdir()] == [".tmp-v0001"]
    assert _answers(run) == before  # the old version still serves

    result = update_run(run, base_run["base"] / "new.parquet",
                        item_features=base_run["base"] / "new_feats.parquet",
                        remove_items=day["remove"])
    assert result.version == "v0001"
    assert sorted(p.name for p in updates.iterdir()) == ["CURRENT", "v0001"]
    out = np.load(updates / "v0001" / "inference" / "output.npy")
    full = recompute(updates / "v0001", base_run["graph"], base_run["enc"])
    assert np.abs(out - full).max() <= 1e-5

    rec = Recommender.load(run)  # the current version now serves
    assert len(rec.ids) == result.num_items - result.removed_items
    assert day["remove"][0] not in rec.ids.tolist()

    again = update_run(run, base_run["base"] / "new.parquet",
                       item_features=base_run["base"] / "new_feats.parquet",
                       remove_items=day["remove"])
    assert again.version == "v0001"  # already applied: nothing new written
    assert sorted(p.name for p in updates.iterdir()) == ["CURRENT", "v0001"]
