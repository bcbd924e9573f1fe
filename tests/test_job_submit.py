"""The job path a cluster user takes (issue 12, part 6): `ray start --head` with the
dashboard (the job server), then `ray job submit --working-dir . -- python
examples/cluster_driver.py ...`, on a tiny synthetic graph.

The head is started with ``ray start --block`` in its own process group and a private temp
dir and ports, so teardown stops exactly this instance (never ``ray stop``, which would stop
other local instances started by ``ray start``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.heavy]

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))

# Kept out of the --working-dir upload (.gitignore is honoured too; these are belt and braces).
EXCLUDES = [".git", ".venv", ".ci-venv", ".bench_cache", "runs", "**/__pycache__", "notebooks",
            "benchmarks/results"]
# Whatever virtual environment runs the tests, if it lives inside the repo (CI's .ci-venv):
# Ray refuses a working-dir upload over 100 MiB.
if Path(sys.prefix).resolve().is_relative_to(REPO):
    EXCLUDES.append(Path(sys.prefix).resolve().relative_to(REPO).as_posix())


#: the local head's token (see :func:`small_ray_env`)
AUTH_TOKEN = secrets.token_hex(32)


def free_ports(count: int) -> list[int]:
    """Ports that were free a moment ago (bound together so they are distinct)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def small_ray_env() -> dict[str, str]:
    """Environment for a Ray head on a busy 2-core machine (see RAY_NOTES.md).

    ``RAY_AUTH_MODE=token`` in every process: `ray start` turns token auth on by default,
    while `ray job submit` sends the token only in token mode. The token is this test run's
    own (``RAY_AUTH_TOKEN``): in token mode `ray start` fails on a fresh machine without
    ``~/.ray/auth_token``, which only an earlier ``ray.init()`` would have written.
    ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0``: on SIGTERM, `ray start --block` otherwise
    drains the node for up to 30 s once a job has run (for Serve proxies on Kubernetes), which
    outlasted :func:`stop_head`'s 15 s wait every time.
    """
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": AUTH_TOKEN,
            "RAY_memory_monitor_refresh_ms": "0",
            "RAY_USAGE_STATS_ENABLED": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
            "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60",
            "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}


def _wait_http(url: str, timeout: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"`ray start` exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:  # 401: token auth (on by default) - but it is up
            return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout:.0f} s")


def stop_head(proc: subprocess.Popen) -> None:
    """SIGTERM the process group of `ray start --block` (started in its own session), then
    SIGKILL whatever is left of it. Other local Ray instances are not touched."""
    try:  # the whole group: raylet, GCS, dashboard, workers and job drivers of this head
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
    except (ProcessLookupError, PermissionError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def ray_head():
    """A local `ray start --head` with the dashboard (job server) on 127.0.0.1.

    Yields the job server's HTTP address. Needs the dashboard's packages
    (``pip install "pinsage-ray[cluster]"``; ``ray[serve]`` already brings them).
    """
    gcs, dash, client, agent, agent_grpc, rt_env, metrics = free_ports(7)
    # short: Ray's Unix sockets live under it and paths are limited to ~107 bytes
    temp = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    log = open(Path(temp) / "ray_start.log", "w")  # noqa: SIM115 - closed in teardown
    cmd = [RAY, "start", "--head", "--block", "--node-ip-address", "127.0.0.1",
           "--port", str(gcs), "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
           "--dashboard-port", str(dash), "--ray-client-server-port", str(client),
           "--dashboard-agent-listen-port", str(agent), "--dashboard-agent-grpc-port",
           str(agent_grpc), "--runtime-env-agent-port", str(rt_env),
           "--metrics-export-port", str(metrics), "--num-cpus", "2",
           "--object-store-memory", str(400 << 20), "--temp-dir", temp, "--disable-usage-stats"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=small_ray_env(),
                            start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        _wait_http(f"{address}/api/version", 120, proc)
        yield address
    except BaseException:
        log.flush()
        print((Path(temp) / "ray_start.log").read_text()[-4000:])
        raise
    finally:
        stop_head(proc)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def test_job_submit_runs_cluster_driver(ray_head, tmp_path):
    from pinsage_ray.data import SyntheticConfig, write_synthetic

    data = tmp_path / "synth"
    write_synthetic(SyntheticConfig(num_items=300, num_groups=240, num_communities=4,
                                    feature_dim=8, seed=0), data)
    summary = tmp_path / "summary.json"
    driver = [sys.executable, "examples/cluster_driver.py", "--address", "auto",
              "--input", str(data / "interactions.parquet"),
              "--features", str(data / "item_features.parquet"),
              "--graph-dir", str(tmp_path / "graph"), "--run-dir", str(tmp_path / "run"),
              "--num-shards", "0", "--epochs", "1", "--batch-size", "32",
              "--batches-per-epoch", "3", "--embed-actors", "1", "--embed-batch-size", "256",
              "--examples", "1", "--summary-json", str(summary)]
    cmd = [RAY, "job", "submit", "--address", ray_head, "--working-dir", str(REPO),
           "--runtime-env-json", json.dumps({"excludes": EXCLUDES}), "--", *driver]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                         env=small_ray_env())
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-6000:]
    assert "succeeded" in text, text[-6000:]
    # the driver's summary, as printed and as JSON
    assert "graph " in text and "index: 300 items" in text and "seconds: prepare" in text, text[-6000:]
    result = json.loads(summary.read_text())
    assert result["graph"]["items"] == 300
    assert [m["epoch"] for m in result["train"]["history"]] == [1]
    assert result["embed"]["items"] == 300 and result["embed"]["mode"] == "ray"
    assert result["index"]["items"] == 300
