"""Online serving: the Ray Serve application answered over real HTTP on 127.0.0.1.

One Serve instance for the module (in the session's Ray), serving a copy of the small trained
run. Every answer is compared with the in-process ``Recommender`` on the same run: related
items, group recommendations, an added cold-start item; then 4xx answers carry the library's
messages, two replicas agree, and rolling out another run directory while requests flow
drops none of them. Last, ``pinsage-ray serve`` as a real process: quiet terminal, clean stop.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from pinsage_ray.recommender import Recommender

pytestmark = [pytest.mark.ray, pytest.mark.slow]

APP = "pinsage-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, path: str, body: object = None, *, method: str | None = None,
         raw: bytes | None = None, timeout: float = 30.0) -> tuple[int, dict, dict]:
    """``(status, JSON answer, headers)`` of one HTTP request (4xx/5xx included)."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data,
                                 method=method or ("GET" if data is None else "POST"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def as_json(results) -> list:
    """In-process answers as they come back over JSON (tuples become lists)."""
    return json.loads(json.dumps(results))


def same(got: object, want: object) -> bool:
    """Equal answers: same items in the same order, scores equal to float32 rounding (a Serve
    replica's exact search may run on another number of BLAS threads than this process)."""
    if isinstance(got, list) and isinstance(want, list):
        return len(got) == len(want) and all(same(g, w) for g, w in zip(got, want))
    if isinstance(got, float) or isinstance(want, float):
        return (isinstance(got, (int, float)) and isinstance(want, (int, float))
                and abs(got - want) <= 1e-5 * max(1.0, abs(want)))
    return got == want


def _permute_embeddings(run: Path, seed: int = 0) -> None:
    """Give ``run``'s items each other's embeddings (a random permutation, rotated by a random
    orthogonal matrix), rewrite the parts and their manifest, rebuild the index: a run whose
    answers differ from the original's for nearly every item."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from pinsage_ray import _io
    from pinsage_ray.recommender import build_index

    fs, folder = pafs.LocalFileSystem(), run / "embeddings"
    manifest = json.loads((folder / "_manifest.json").read_text())
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.normal(size=(manifest["dim"],) * 2))[0].astype(np.float32)
    for name in manifest["files"]:
        table = pq.read_table(folder / name)
        emb = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
        emb = emb[rng.permutation(len(emb))] @ rotation
        column = pa.array(list(emb.astype(np.float32)), type=table.schema.field("embedding").type)
        table = table.set_column(table.schema.get_field_index("embedding"), "embedding", column)
        manifest["files"][name] = _io.write_parquet(fs, str(folder / name), table)
    _io.write_json(fs, str(folder / "_manifest.json"), manifest)
    shutil.rmtree(run / "index")
    build_index(run)


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory) -> dict:
    """Two runs: ``a`` (a copy of the trained run) is served and gets items; ``b`` (another
    copy, its items' embeddings permuted) rolls out, so every answer says which run gave it."""
    base = tmp_path_factory.mktemp("serve")
    out = {}
    for name in ("a", "b"):
        shutil.copytree(trained_run["run"], base / name)
        out[name] = str(base / name)
    _permute_embeddings(base / "b")
    return out


@pytest.fixture(scope="module")
def server(ray_session, runs):
    """Serve on a free port of 127.0.0.1 with run ``a``, one replica; shut down after."""
    from ray import serve

    from pinsage_ray.serve import start

    port = free_port()
    url = start(runs["a"], host="127.0.0.1", port=port, name=APP)
    yield {"url": url, "port": port}
    serve.shutdown()


@pytest.fixture(scope="module")
def rec(runs) -> Recommender:
    return Recommender.load(runs["a"])


def test_health_names_the_run_index_and_model(server, rec, runs):
    status, body, headers = call(server["url"], "/health")
    assert status == 200 and body["status"] == "ok"
    assert body["run_dir"] == runs["a"] and body["items"] == len(rec.ids)
    assert body["index"]["ef"] == rec.index.ef and body["index"]["space"] == "cosine"
    assert body["model"]["config"]["embedding_dim"] == rec.embeddings.shape[1]
    assert body["num_replicas"] == 1 and body["adding_items"] is True
    assert headers["x-pinsage-run"] == runs["a"]


def test_related_items_equal_in_process(server, rec):
    items = rec.ids[:25].tolist()
    for item in items[:5]:
        status, body, _ = call(server["url"], "/related", {"item": item, "k": 7})
        assert status == 200, body
        assert body == {"item": item, "similar": as_json(rec.similar_items(item, 7))}
    status, body, _ = call(server["url"], "/related", {"items": items, "k": 10})
    assert status == 200
    assert body["results"] == [{"item": i, "similar": s}
                               for i, s in zip(items, as_json(rec.similar_items_batch(items)))]
    status, body, _ = call(server["url"], "/related", {"item": items[0], "k": 10, "ef": 200})
    rec.index.ef, before = 200, rec.index.ef
    try:
        expected = as_json(rec.similar_items(items[0], 10))
    finally:
        rec.index.ef = before
    assert status == 200 and same(body["similar"], expected)
    assert call(server["url"], "/health")[1]["index"]["ef"] == before  # restored


def test_group_recommendations_equal_in_process(server, rec):
    group = rec.ids[10:16].tolist()
    status, body, _ = call(server["url"], "/recommend", {"items": group, "k": 8})
    assert status == 200
    assert body == {"group_items": group, "recommended": as_json(rec.recommend_for_group(group, 8))}
    ts = [float(t) for t in range(len(group))]
    status, body, _ = call(server["url"], "/recommend",
                           {"items": group, "k": 8, "timestamps": ts, "half_life": 0.5,
                            "exclude_seen": False})
    assert status == 200
    assert same(body["recommended"], as_json(rec.recommend_for_group(
        group, 8, timestamps=ts, half_life=0.5, exclude_seen=False)))


def test_added_item_is_served_and_saved(server, rec, planted_dataset, holdout, trained_run,
                                        runs):
    from pinsage_ray.graph import GraphStore

    item = int(holdout[1][0])
    feats = planted_dataset.item_features.to_pandas().set_index("item")
    inter = planted_dataset.interactions.to_pandas()
    known = set(GraphStore(trained_run["graph"]).group_ids.to_pylist())
    groups = [g for g in inter.loc[inter["item"] == item, "group"].tolist() if g in known]
    features = [np.asarray(feats.loc[item, "features"], dtype=np.float32).tolist()]
    assert call(server["url"], "/related", {"item": item})[0] == 404
    status, body, _ = call(server["url"], "/items", {"ids": [item], "features": features,
                                                     "groups": [groups], "save": True})
    assert status == 200, body
    assert body["added"] == [item] and body["items"] == len(rec.ids) + 1
    assert body["saved"]["saved"] == 1
    rec.add_items([item], np.asarray(features, np.float32), [groups])  # the same, in process
    status, body, _ = call(server["url"], "/related", {"item": item, "k": 5})
    assert status == 200 and same(body["similar"], as_json(rec.similar_items(item, 5)))
    fresh = Recommender.load(runs["a"])  # saved into the run: a new replica finds it too
    assert fresh.similar_items(item, 5) == rec.similar_items(item, 5)
    status, body, _ = call(server["url"], "/items", {"ids": [item], "features": features})
    assert status == 400 and "already in this run" in body["error"]


ITEM = -424242  # stands for an item of the run in the cases below


@pytest.mark.parametrize("path,body,status,message", [
    ("/related", {"item": "no-such-item"}, 400, "this run's item ids are integers"),
    ("/related", {"item": 10**9}, 404, "item id 1000000000 is not in this run's embeddings"),
    ("/related", {"items": [ITEM, 10**9]}, 404, "is not in this run's embeddings"),
    ("/related", {"item": ITEM, "k": 0}, 400, "k=0; expected an integer >= 1"),
    ("/related", {"item": ITEM, "k": True}, 400, "k must be a positive integer, got True"),
    ("/related", {"item": ITEM, "k": 10**6}, 400, "exceeds the"),
    ("/related", {"item": ITEM, "ef": 0}, 400, "ef must be an integer >= 1, got 0"),
    ("/related", {"item": ITEM, "items": [ITEM]}, 400, "give either"),
    ("/related", {"item": ITEM, "kk": 3}, 400, "unknown field(s) ['kk']"),
    ("/related", [ITEM], 400, "request body is a JSON list; expected an object"),
    ("/recommend", {"items": []}, 400, "items is empty"),
    ("/recommend", {"items": [ITEM], "half_life": 2.0}, 400,
     "half_life needs one timestamp per item"),
    ("/recommend", {"items": [ITEM], "timestamps": [0], "half_life": 0}, 400,
     "half_life: expected a number > 0"),
    ("/recommend", {"items": [ITEM, 10**9]}, 404, "is not in this run's embeddings"),
    ("/items", {"ids": [10**9], "features": [[1.0, 2.0]]}, 400, "features has shape (1, 2)"),
    ("/items", {"ids": [10**9], "features": [[0.0] * 16], "groups": [[10**9]]}, 404,
     "group id 1000000000 is not in graph"),
    ("/items", {"ids": [10**9, 10**9 + 1], "features": [[0.0] * 16]}, 400,
     "ids has 2 entries for 1 feature rows"),
    ("/nowhere", {}, 404, "no endpoint POST /nowhere"),
])
def test_bad_requests_get_4xx_with_the_library_message(server, rec, path, body, status,
                                                       message):
    item = rec.ids[0].item()
    body = json.loads(json.dumps(body).replace(str(ITEM), str(item)))
    got, answer, _ = call(server["url"], path, body)
    assert got == status, answer
    assert message in answer["error"], answer


def test_malformed_bodies_are_400_not_500(server):
    for raw in (b"{not json", b'{"item": NaN}', b"\xff\xfe", b'"text"'):
        status, answer, _ = call(server["url"], "/related", raw=raw)
        assert status == 400, (raw, answer)
    assert call(server["url"], "/related", method="GET")[0] == 405


def test_a_broken_run_fails_to_start_with_the_reason(server, runs, tmp_path):
    from pinsage_ray.serve import deployment, start

    bad = tmp_path / "bad"
    shutil.copytree(runs["b"], bad, ignore=shutil.ignore_patterns("logs"))
    index_bin = bad / "index" / "index.bin"
    data = bytearray(index_bin.read_bytes())
    data[len(data) // 2] ^= 0xFF
    index_bin.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="could not load the run: .*sha256 mismatch.*"
                                         "rebuild it with `pinsage-ray index"):
        start(bad, port=server["port"], name="broken", route_prefix="/broken")
    shutil.rmtree(bad / "index")
    with pytest.raises(FileNotFoundError, match="index: not found; run `pinsage-ray index"):
        deployment(bad)
    assert call(server["url"], "/health")[0] == 200  # the served application is untouched


def test_two_replicas_agree_and_refuse_additions(server, runs):
    from ray import serve

    from pinsage_ray.serve import deployment

    serve.run(deployment(runs["a"], num_replicas=2), name=APP)  # a light update
    fresh = Recommender.load(runs["a"])
    status, health, _ = call(server["url"], "/health")
    assert status == 200 and health["num_replicas"] == 2 and health["adding_items"] is False
    items = fresh.ids[-8:].tolist()  # the saved cold-start item included
    for _ in range(3):  # several requests: both replicas answer some of them
        for item in items:
            status, body, _ = call(server["url"], "/related", {"item": item, "k": 6})
            assert status == 200 and same(body["similar"], as_json(fresh.similar_items(item, 6)))
    status, body, _ = call(server["url"], "/items", {"ids": [10**9], "features": [[0.0] * 16]})
    assert status == 409 and "single replica" in body["error"]


def load_during(url: str, items: list, action, *, clients: int = 2) -> tuple[list, list]:
    """``clients`` threads ask ``/related`` for ``items`` in turn while ``action()`` runs (and
    a second before and after): ``([(run header, item, status, body)], [broken requests])``."""
    seen, failures, stop = [], [], threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            item = items[n % len(items)]
            n += 1
            try:
                status, body, headers = call(url, "/related", {"item": item, "k": 5})
            except OSError as err:  # a dropped connection counts as a failure
                failures.append(repr(err))
                continue
            seen.append((headers.get("x-pinsage-run"), item, status, body))

    threads = [threading.Thread(target=load) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        action()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    return seen, failures


def wrong_answers(seen: list, expected: dict) -> list:
    """Answers that failed or differ from the in-process answer of the run they name."""
    return [(run, item, status) for run, item, status, body in seen
            if status != 200 or not same(body["similar"], expected.get(run, {}).get(item))]


def test_rolling_out_another_run_drops_no_request(server, runs):
    """Requests flow while run ``b`` replaces run ``a``: all succeed, each equals its run's."""
    from ray import serve

    from pinsage_ray.serve import deployment

    old, new = Recommender.load(runs["a"]), Recommender.load(runs["b"])
    items = new.ids[:20].tolist()
    expected = {runs["a"]: {i: as_json(old.similar_items(i, 5)) for i in items},
                runs["b"]: {i: as_json(new.similar_items(i, 5)) for i in items}}
    # the runs answer differently, so an answer from the other run than the one a response
    # names fails the check below
    assert all(not same(expected[runs["a"]][i], expected[runs["b"]][i]) for i in items)
    seen, failures = load_during(server["url"], items, lambda: serve.run(
        deployment(runs["b"], num_replicas=2), name=APP))  # returns once rolled out
    assert not failures, failures[:5]
    assert not wrong_answers(seen, expected), wrong_answers(seen, expected)[:5]
    order = [run for run, *_ in seen]
    assert len(order) > 20 and order[0] == runs["a"] and order[-1] == runs["b"], \
        (len(order), order[:3], order[-3:])
    status, health, _ = call(server["url"], "/health")
    assert health["run_dir"] == runs["b"] and health["items"] == len(new.ids)
    for item in set(old.ids.tolist()) - set(new.ids.tolist()):  # the item added to run a
        assert call(server["url"], "/related", {"item": item})[0] == 404


def test_a_new_version_of_the_run_is_served_without_restart(server, runs, tmp_path):
    """``pinsage-ray update`` commits a version (``updates/vNNNN`` + ``CURRENT``): a running
    replica loads it beside the old one and swaps, while requests flow: none fails, each
    equals the answer of the version its response names, and the new version takes over."""
    from ray import serve

    from pinsage_ray.serve import deployment
    from pinsage_ray.update import versions

    run = tmp_path / "c"
    shutil.copytree(runs["b"], run)
    serve.run(deployment(run, watch_updates=0.5), name=APP)
    tmp = versions.fresh_temp(run, "v0001", current=0)  # what `update` fills, then commits
    for part in ("embeddings", "index"):  # run a's vectors: other answers than run c's
        shutil.copytree(Path(runs["a"]) / part, tmp / part)
    (tmp / "update.json").write_text("{}")
    old = Recommender.load(run)  # version 0: the run itself
    items = old.ids[:20].tolist()
    final = str(run / "updates" / "v0001")
    switched = []

    def commit_and_wait() -> None:
        versions.commit(run, tmp, "v0001")
        committed = time.monotonic()
        while time.monotonic() - committed < 60 and not switched:
            if call(server["url"], "/health")[1]["run_dir"] == final:
                switched.append(time.monotonic() - committed)
            time.sleep(0.05)

    seen, failures = load_during(server["url"], items, commit_and_wait)
    assert not failures, failures[:5]
    assert switched, "the replica never switched to the new version"
    new = Recommender.load(run)
    assert new.run_dir == final
    expected = {str(run): {i: as_json(old.similar_items(i, 5)) for i in items},
                final: {i: as_json(new.similar_items(i, 5)) for i in items}}
    assert all(not same(expected[str(run)][i], expected[final][i]) for i in items)
    assert not wrong_answers(seen, expected), wrong_answers(seen, expected)[:5]
    order = [r for r, *_ in seen]
    assert order[0] == str(run) and order[-1] == final and set(order) == set(expected)


# --------------------------------------------------------------------------- the CLI
#: Ray's and Serve's own lines (as in test_cli_console, plus Serve's log format).
RAY_INTERNAL = re.compile(
    r"Traceback|pid=\d|PlacementGroupCleaner|core_worker|raylet|Token authentication|"
    r"Started a local Ray instance|Warning:|\.py:\d+|(INFO|WARNING|ERROR) \d{4}-\d\d-\d\d|"
    r"\d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|ERROR)|ray\.(serve|_private)|ServeController|Proxy")


def test_cli_serves_quietly_and_stops_on_ctrl_c(runs, tmp_path, serve_cli):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_memory_monitor_refresh_ms="0",
               PYTHONUNBUFFERED="1")
    with serve_cli(runs["b"], tmp_path, env=env) as srv:
        url = srv.url
        status, health, _ = call(url, "/health")
        assert status == 200 and health["run_dir"] == runs["b"]
        assert call(url, "/related", {"item": 10**9})[0] == 404
    proc, lines, errors = srv.proc, srv.lines, srv.errors
    out, stderr = "".join(lines), "".join(errors)
    assert proc.returncode == 0, stderr[-3000:]
    assert f"{url}/health" in out and out.rstrip().endswith("stopped"), out
    assert f"{runs['b']}/logs/serve.log" in out, out
    screen = [p.strip() for line in (stderr + out).splitlines() for p in line.split("\r")
              if p.strip()]
    bad = [line for line in screen if RAY_INTERNAL.search(line)]
    assert not bad, "Ray-internal lines on the terminal:\n" + "\n".join(bad[:20])
    log = open(os.path.join(runs["b"], "logs", "serve.log")).read()
    assert "Started a local Ray instance" in log or "Started Serve" in log, log[-2000:]
