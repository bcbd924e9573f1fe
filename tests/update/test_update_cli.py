"""``pinsage-ray update``: bad input gets one clear line and changes nothing; good input
makes a new current version that ``Recommender.load(run_dir)`` serves."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pinsage_ray.cli import main
from pinsage_ray.recommender import Recommender


def _snapshot(run) -> dict[str, str]:
    """Every file under the run and its sha256 (the run must stay byte-identical)."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and "logs" not in p.parts}


@pytest.fixture(scope="module")
def files(update_base):
    tmp, day = update_base["tmp"], update_base["day"]
    out = {}
    for key in ("new", "new_feats"):
        out[key] = tmp / f"{key}.parquet"
        pq.write_table(day[key], out[key])
    out["no_group"] = tmp / "no_group.csv"
    out["no_group"].write_text("item,timestamp\n1,5\n")
    bad_w = day["new"].append_column("weight", pa.array([1.0] * (day["new"].num_rows - 1)
                                                        + [-2.0]))
    out["bad_weight"] = tmp / "bad_weight.parquet"
    pq.write_table(bad_w, out["bad_weight"])
    return out


@pytest.mark.parametrize("case, extra, expected", [
    ("no_group", [], "missing column(s) ['group']"),
    ("bad_weight", ["--features", "new_feats"], "column 'weight' = -2.0"),
    ("new", [], "has no feature row"),
    ("new", ["--features", "new_feats", "--remove-items", "999999"], "999999"),
    ("new", ["--features", "new_feats", "--remove-items", "TOUCHED"],
     "but has new interactions"),
])
def test_bad_input_changes_nothing(update_base, files, capsys, case, extra, expected):
    run = update_base["run"]
    before = _snapshot(run)
    day = update_base["day"]
    fresh = set(day["new_feats"].column("item").to_pylist())
    touched = next(i for i in day["new"].column("item").to_pylist() if i not in fresh)
    args = [str(files[a]) if a in files else (str(touched) if a == "TOUCHED" else a)
            for a in extra]
    code = main(["update", str(run), str(files[case]), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("pinsage-ray update: error:") and expected in err, err
    assert _snapshot(run) == before
    assert not (run / "updates").exists()


def test_update_command(update_base, files, capsys):
    run, day = update_base["run"], update_base["day"]
    code = main(["update", str(run), str(files["new"]), "--features", str(files["new_feats"]),
                 "--remove-items", ",".join(map(str, day["remove"]))])
    out = capsys.readouterr()
    assert code == 0, out.err
    report = json.loads(out.out)
    assert report["version"] == "v0001" and report["removed_items"] == 1
    assert "pinsage-ray recommend" in out.err
    rec = Recommender.load(run)
    assert rec.run_dir.endswith("updates/v0001")
    assert day["remove"][0] not in rec.ids.tolist()
    new_item = day["new_feats"].column("item")[0].as_py()
    assert new_item in rec.ids.tolist()
    assert len(rec.similar_items(new_item, 5)) == 5
