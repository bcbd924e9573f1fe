"""Serving's decisions without Ray: the ingress environment (HAProxy, throughput-optimised),
the "did it take effect" check over a fake ``/proc``, the fallback message, and the JSON API's
batched single-item path and refusals (a fake recommender whose answers are known).

Tests that start Serve are in tests/test_serve.py and tests/test_serve_api.py; they run with
``RAY_SERVE_ENABLE_HA_PROXY=0`` (tests/conftest.py) because HAProxy mode listens on all
interfaces (its stats page on *:8404, metrics on *:9101) and tests listen on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

from pinsage_ray.serve import settings
from pinsage_ray.serve.service import MAX_ITEMS, RecommenderService, RelatedQuery


# --------------------------------------------------------------------------- the environment
def test_defaults_turn_both_on_and_flags_force_them_off():
    assert settings.serve_env(environ={}) == {settings.HAPROXY_VAR: "1",
                                              settings.THROUGHPUT_VAR: "1"}
    assert settings.serve_env(False, True, environ={settings.HAPROXY_VAR: "1"}) == {
        settings.HAPROXY_VAR: "0", settings.THROUGHPUT_VAR: "1"}
    assert settings.serve_env(True, False, environ={}) == {settings.HAPROXY_VAR: "1",
                                                           settings.THROUGHPUT_VAR: "0"}


def test_an_explicit_environment_value_wins_over_the_default():
    env = settings.serve_env(environ={settings.HAPROXY_VAR: "0"})
    assert env[settings.HAPROXY_VAR] == "0" and env[settings.THROUGHPUT_VAR] == "1"
    assert settings.requested_mode(env) == settings.ServeMode(False, True)
    assert settings.requested_mode(settings.serve_env(environ={})) == settings.ServeMode(True, True)


def test_apply_env_is_undone(monkeypatch):
    monkeypatch.delenv(settings.THROUGHPUT_VAR, raising=False)
    monkeypatch.setenv(settings.HAPROXY_VAR, "0")
    previous = settings.apply_env({settings.HAPROXY_VAR: "1", settings.THROUGHPUT_VAR: "1"})
    assert os.environ[settings.HAPROXY_VAR] == "1" and os.environ[settings.THROUGHPUT_VAR] == "1"
    settings.restore_env(previous)
    assert os.environ[settings.HAPROXY_VAR] == "0" and settings.THROUGHPUT_VAR not in os.environ


def test_haproxy_obstacle_names_a_taken_port_and_a_missing_binary(tmp_path):
    assert settings.haproxy_obstacle({settings.STATS_PORT_VAR: str(_free_port()),
                                      settings.METRICS_PORT_VAR: str(_free_port())}) is None
    with socket.socket() as taken:  # a listener on 127.0.0.1 also blocks HAProxy's *:port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        why = settings.haproxy_obstacle({settings.STATS_PORT_VAR: str(port),
                                         settings.METRICS_PORT_VAR: str(_free_port())})
    assert why is not None and f"port {port}" in why and settings.STATS_PORT_VAR in why
    why = settings.haproxy_obstacle({"RAY_SERVE_HAPROXY_BINARY_PATH": str(tmp_path / "none")})
    assert why is not None and "no haproxy binary" in why


def test_fallback_message_is_one_line_with_the_reason_and_the_way_out():
    msg = settings.fallback_message("Binding [cfg:95] for proxy stats:\n  cannot bind socket")
    assert "\n" not in msg and "cannot bind socket" in msg and "--no-haproxy" in msg
    assert msg.startswith("HAProxy ingress could not start")


# --------------------------------------------------------------------------- effect check
def _proc(root: Path, pid: int, ppid: int, comm: str, env: dict[str, str] | None = None) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "comm").write_text(comm + "\n")
    (d / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1\n")
    if env is not None:
        (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in env.items()))


def test_effective_mode_reads_the_controller_and_the_haproxy_process(tmp_path):
    on = {settings.HAPROXY_VAR: "1", settings.THROUGHPUT_VAR: "1", "PATH": "/bin"}
    _proc(tmp_path, 100, 1, "python")  # the driver
    _proc(tmp_path, 110, 100, "raylet")
    _proc(tmp_path, 120, 110, "ray::ServeContr", on)
    _proc(tmp_path, 130, 110, "ray::HAProxyMan")
    _proc(tmp_path, 131, 130, "haproxy")
    assert settings.effective_mode(str(tmp_path), root_pid=100) == settings.ServeMode(True, True)
    assert settings.effective_mode(str(tmp_path), root_pid=100).describe() == \
        "HAProxy ingress, throughput-optimised"
    # another Ray instance's controller on the machine is not ours
    assert settings.effective_mode(str(tmp_path), root_pid=999) == settings.ServeMode(None, None)


def test_effective_mode_says_off_when_haproxy_did_not_run(tmp_path):
    _proc(tmp_path, 100, 1, "python")
    _proc(tmp_path, 120, 100, "ray::ServeContr", {settings.HAPROXY_VAR: "1"})
    mode = settings.effective_mode(str(tmp_path), root_pid=100)
    assert mode == settings.ServeMode(False, False)
    assert mode.describe() == "Python proxy, default mode"


# --------------------------------------------------------------------------- the JSON API
class FakeIndex:
    ef, space, dim, manifest = 10, "cosine", 3, {"M": 16}


class FakeRecommender:
    """Ten items on a circle; exact cosine answers (the same code path as ``Recommender``'s
    batch query: one call answers several items)."""

    def __init__(self) -> None:
        self.ids = np.arange(10, dtype=np.int64)
        angles = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        self.embeddings = np.stack([np.cos(angles), np.sin(angles), np.zeros(10)], 1)
        self.run_dir, self.index, self.calls = "/runs/fake", FakeIndex(), []

    def _rows(self, items, argument):
        for i in items:
            if i not in range(10):
                raise KeyError(f"{argument}: item id {i!r} is not in this run's embeddings")
        return np.asarray(items)

    def similar_items_batch(self, items, k=10):
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k={k!r}; expected an integer >= 1")
        self.calls.append(list(items))
        out = []
        for i in self._rows(items, "items"):
            s = self.embeddings @ self.embeddings[i]
            order = [j for j in np.argsort(-s, kind="stable") if j != i][:k]
            out.append([(int(j), float(s[j])) for j in order])
        return out


@pytest.fixture
def service() -> RecommenderService:
    return RecommenderService(FakeRecommender())


def test_batched_single_item_answers_equal_one_by_one(service):
    bodies = [{"item": 3, "k": 2}, {"item": 5}, {"item": 3, "k": 0}, {"item": 7, "k": 2},
              {"item": 1, "k": True}]
    plans = [service.plan_related(json.dumps(b).encode()) for b in bodies]
    assert all(isinstance(p, RelatedQuery) for p in plans)
    service.rec.calls.clear()
    batched = service.related_many(plans)
    assert len(service.rec.calls) == 2  # k=2 (two items) and k=10: one query each
    for body, answer in zip(bodies, batched):
        assert answer == service.handle("POST", "/related", json.dumps(body).encode()), body
    assert batched[0][0] == 200 and batched[2][0] == 400 and "k=0" in batched[2][1]["error"]


@pytest.mark.parametrize("body,status,field", [
    ({"item": 99}, 404, "item id 99"),
    ({"item": "3"}, 400, "item:"),
    ({"item": 3, "kk": 1}, 400, "['kk']"),
    (b"{not json", 400, "not JSON"),
])
def test_plan_related_refuses_alone(service, body, status, field):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    got = service.plan_related(raw)
    assert isinstance(got, tuple) and not isinstance(got, RelatedQuery)
    assert got[0] == status and field in got[1]["error"], got
    assert service.plan_related(json.dumps({"items": [1, 2]}).encode()) is None  # not this path
    assert service.plan_related(json.dumps({"item": 1, "ef": 5}).encode()) is None


@pytest.mark.parametrize("path,field", [("/related", "items"), ("/recommend", "items"),
                                        ("/items", "ids")])
def test_oversized_requests_are_413_naming_the_field(service, path, field):
    key = "ids" if path == "/items" else "items"
    extra = {"features": [[0.0] * 3]} if path == "/items" else {}
    body = json.dumps({key: [1] * (MAX_ITEMS + 1), **extra}).encode()
    status, answer = service.handle("POST", path, body)
    assert status == 413 and answer["error"].startswith(f"{field}: {MAX_ITEMS + 1} ids"), answer


def test_handle_calls_take_objects_as_well_as_bytes(service):
    assert service.handle("POST", "/related", {"item": 2, "k": 3}) == \
        service.handle("POST", "/related", b'{"item": 2, "k": 3}')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
