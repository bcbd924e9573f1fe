"""The served run's Python path and its batched path, against the in-process ``Recommender``.

One Serve application in the session's Ray (Serve's Python proxy on 127.0.0.1; the session's
Ray has ``RAY_SERVE_ENABLE_HA_PROXY=0``, see tests/conftest.py): the ``DeploymentHandle``
client (:func:`pinsage_ray.serve.client`) answers as ``Recommender`` does, many handle calls
and many concurrent HTTP requests in flight at once (batched into shared index queries) each
get their own item's answer, malformed requests get a 4xx naming the field. Last,
``pinsage-ray serve --no-haproxy`` in a fresh Ray instance: the throughput-optimised mode takes
effect (read back from the Serve controller's environment) and the answers stay the same.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

from pinsage_ray.recommender import Recommender

pytestmark = [pytest.mark.ray, pytest.mark.slow]

APP = "pinsage-api-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, path: str, raw: bytes, timeout: float = 60.0) -> tuple[int, dict]:
    req = urllib.request.Request(url + path, data=raw, method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def as_json(value: object) -> object:
    return json.loads(json.dumps(value))


@pytest.fixture(scope="module")
def run(trained_run, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("serve_api") / "run"
    shutil.copytree(trained_run["run"], path, ignore=shutil.ignore_patterns("logs"))
    return str(path)


@pytest.fixture(scope="module")
def rec(run) -> Recommender:
    return Recommender.load(run)


@pytest.fixture(scope="module")
def served(ray_session, run):
    from ray import serve

    from pinsage_ray.serve import serving_mode, start

    url = start(run, host="127.0.0.1", port=free_port(), name=APP)
    yield {"url": url, "mode": serving_mode()}
    serve.shutdown()


def test_the_session_instance_reports_its_ingress(served):
    mode, note = served["mode"]
    # RAY_SERVE_ENABLE_HA_PROXY=0 in the environment: asked for and got the Python proxy; the
    # session's Ray started without RAY_SERVE_THROUGHPUT_OPTIMIZED, which start() cannot add
    assert mode.haproxy is False and mode.throughput_optimized is False, mode
    assert "RAY_SERVE_THROUGHPUT_OPTIMIZED=1" in note and "HA_PROXY" not in note, note


def test_handle_client_answers_as_the_recommender(served, rec):
    from pinsage_ray.serve import client

    c = client(APP)
    items = rec.ids[:6].tolist()
    for item in items[:3]:
        assert c.similar_items(item, 7) == rec.similar_items(item, 7)
    assert c.similar_items(rec.ids[4], 5) == rec.similar_items(items[4], 5)  # a numpy id
    assert c.similar_items_batch(items, 4) == rec.similar_items_batch(items, 4)
    assert c.recommend_for_group(items, 8) == rec.recommend_for_group(items, 8)
    ts = [float(t) for t in range(len(items))]
    assert c.recommend_for_group(items, 8, timestamps=ts, half_life=0.5, exclude_seen=False) \
        == rec.recommend_for_group(items, 8, timestamps=ts, half_life=0.5, exclude_seen=False)


def test_handle_client_raises_the_library_errors(served):
    from pinsage_ray.serve import client

    c = client(APP)
    with pytest.raises(KeyError, match="item id 1000000000 is not in this run"):
        c.similar_items(10**9)
    with pytest.raises(ValueError, match="k=0; expected an integer >= 1"):
        c.similar_items(0, 0)
    with pytest.raises(ValueError, match=f"no such Serve application.*{APP}"):
        client("no-such-app")


def test_handle_client_works_in_a_throughput_optimised_driver(served, rec):
    """A driver with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 set before importing Ray Serve (a job on
    a cluster started with it) routes handles on the caller's event loop; the synchronous
    client still answers."""
    import ray

    item = rec.ids[7].item()
    code = ("import json, sys, ray; ray.init(address=sys.argv[1], log_to_driver=False); "
            "from pinsage_ray.serve import client; "
            f"print(json.dumps(client({APP!r}).similar_items({item!r}, 3)))")
    env = {**os.environ, "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run([sys.executable, "-c", code, ray.get_runtime_context().gcs_address],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == as_json(rec.similar_items(item, 3))


def test_many_handle_calls_in_flight_each_get_their_own_answer(served, rec):
    from pinsage_ray.serve import client

    c = client(APP)
    items = rec.ids[:64].tolist()
    responses = [c.submit(item, 5 + i % 3) for i, item in enumerate(items)]  # batched
    for i, (item, response) in enumerate(zip(items, responses)):
        assert response.result(timeout_s=60) == rec.similar_items(item, 5 + i % 3), item


def test_concurrent_http_requests_with_bad_ones_among_them(served, rec):
    """32 threads of single-item requests (the batched path), bad ones mixed in: each good
    request gets its own item's answer, each bad one a 4xx naming the field, none a 5xx."""
    items = rec.ids[:40].tolist()
    cases = []
    for i, item in enumerate(items):
        cases.append(({"item": item, "k": 6}, 200, None))
        if i % 8 == 0:
            cases += [({"item": item, "k": 0}, 400, "k=0"),
                      ({"item": 10**9 + i}, 404, f"item id {10**9 + i}"),
                      ({"item": str(item)}, 400, "item:"),
                      ({"items": [item] * 2000}, 413, "items: 2000 ids")]
    cases.append((b"{not json", 400, "not JSON"))

    def send(case):
        body, _, _ = case
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        return call(served["url"], "/related", raw)

    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(send, cases))
    for (body, status, field), (got, answer) in zip(cases, answers):
        assert got == status, (body, got, answer)
        if status == 200:
            assert answer == {"item": body["item"],
                              "similar": as_json(rec.similar_items(body["item"], 6))}
        else:
            assert field in answer["error"], (body, answer)


def test_replicas_write_no_access_log_lines(served, rec):
    """Access logs are off by default: the replica's log has its start-up lines, none per
    request."""
    import glob
    import re

    from pinsage_ray.ray_utils import ray_logs_dir

    for item in rec.ids[:20].tolist():
        assert call(served["url"], "/related", json.dumps({"item": item}).encode())[0] == 200
    logs = glob.glob(os.path.join(ray_logs_dir(), "serve", f"replica_{APP}_*.log"))
    assert logs, ray_logs_dir()
    text = "".join(open(f, encoding="utf-8", errors="replace").read() for f in logs)
    assert "replica loaded" in text or "Started" in text, text[-2000:]
    access = re.findall(r" -- (?:GET|POST) \S* \d{3} [\d.]+ms", text)
    assert not access, access[:3]


def test_fastapi_routing_answers_the_same_and_names_refused_fields(served, run, rec):
    """``api="fastapi"``: the same answers, an OpenAPI page, 400s naming the field."""
    from ray import serve

    from pinsage_ray.serve import deployment

    serve.run(deployment(run, api="fastapi"), name=APP + "-typed", route_prefix="/typed")
    try:
        url = served["url"] + "/typed"
        with urllib.request.urlopen(url + "/openapi.json", timeout=30) as r:
            schema = json.loads(r.read())
        assert {"/related", "/recommend", "/items", "/health"} <= set(schema["paths"])
        assert "RelatedRequest" in schema["components"]["schemas"]
        item = rec.ids[2].item()
        status, answer = call(url, "/related", json.dumps({"item": item, "k": 4}).encode())
        assert status == 200 and answer == {"item": item,
                                            "similar": as_json(rec.similar_items(item, 4))}
        group = rec.ids[5:9].tolist()
        status, answer = call(url, "/recommend", json.dumps({"items": group, "k": 6}).encode())
        assert status == 200 and answer["recommended"] == as_json(rec.recommend_for_group(group, 6))
        for body, code, field in (({"item": item, "k": 0}, 400, "k: "),
                                  ({"item": item, "kk": 1}, 400, "kk: "),
                                  ({"items": [item] * 2000}, 400, "items: "),
                                  ({"item": 10**9}, 404, "item id 1000000000"),
                                  (b"[1,", 400, "not JSON")):
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            status, answer = call(url, "/related", raw)
            assert status == code and field in answer["error"], (body, status, answer)
    finally:
        serve.delete(APP + "-typed")


def test_cli_no_haproxy_runs_throughput_optimised_in_a_fresh_instance(run, rec, tmp_path,
                                                                      serve_cli):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", "RAY_SERVE_THROUGHPUT_OPTIMIZED")}
    env.update(PYTHONUNBUFFERED="1")
    with serve_cli(run, tmp_path, "--no-haproxy", env=env) as srv:
        item = rec.ids[3].item()
        status, answer = call(srv.url, "/related",
                              json.dumps({"item": item, "k": 5}).encode())
        assert status == 200 and answer["similar"] == as_json(rec.similar_items(item, 5))
    out = "".join(srv.lines)
    assert srv.proc.returncode == 0, "".join(srv.errors)[-3000:]
    assert "ingress: Python proxy, throughput-optimised" in out, out
    assert "could not start" not in "".join(srv.errors)  # nothing fell back
