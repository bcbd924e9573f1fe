"""The serving side of ``bench_update.py``: Ray Serve under constant load while an update lands.

:func:`serve_during_update` serves a run (one replica, checking for new versions every
``watch_s``), keeps ``clients`` closed-loop HTTP clients asking ``/related`` for a fixed set
of items, runs the update, and waits until the answers come from the new version. Every
answer is then checked against an in-process :class:`~pinsage_ray.Recommender` of the version
its ``X-Pinsage-Run`` header names: a failed request is a non-200 answer or a broken
connection, a wrong answer is one that differs from its version's.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

APP = "bench-update"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _client(port: int, items: list, stop: threading.Event, seen: list, failed: list) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    n = 0
    while not stop.is_set():
        item = items[n % len(items)]
        n += 1
        try:
            conn.request("POST", "/related", json.dumps({"item": item, "k": 10}),
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            body = json.loads(r.read())
        except (OSError, http.client.HTTPException, ValueError) as err:
            failed.append(repr(err))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            continue
        seen.append((time.monotonic(), r.getheader("X-Pinsage-Run"), item, r.status, body))
    conn.close()


def _same(got: list, want: list) -> bool:
    return len(got) == len(want) and all(
        g[0] == w[0] and abs(g[1] - w[1]) <= 1e-5 * max(1.0, abs(w[1])) for g, w in zip(got, want))


def serve_during_update(run: Path, update: Callable[[], Any], *, items: int = 50,
                        clients: int = 2, watch_s: float = 0.5,
                        deadline_s: float = 300.0) -> dict[str, Any]:
    """Serve ``run``, call ``update()`` under load, measure the switch; a report dict."""
    from ray import serve

    from pinsage_ray.recommender import Recommender
    from pinsage_ray.serve import start

    old = Recommender.load(run)
    sample = old.ids[:: max(1, len(old.ids) // items)][:items].tolist()
    port = _free_port()
    start(run, host="127.0.0.1", port=port, name=APP, watch_updates=watch_s)
    seen: list = []
    failed: list = []
    stop = threading.Event()
    threads = [threading.Thread(target=_client, args=(port, sample, stop, seen, failed))
               for _ in range(clients)]
    try:
        for t in threads:
            t.start()
        time.sleep(2.0)
        t0 = time.monotonic()
        update()
        t_commit = time.monotonic()
        new_root = Recommender.load(run).run_dir
        switched = None
        while switched is None and time.monotonic() - t_commit < deadline_s:
            firsts = [t for t, r, *_ in seen[-200:] if r == new_root]
            if firsts:
                switched = min(t for t, r, *_ in seen if r == new_root)
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
        serve.delete(APP)
    versions = {old.run_dir: old, new_root: Recommender.load(run)}
    want = {(r, i): versions[r].similar_items(i, 10) for r in versions for i in sample}
    wrong = sum(1 for _, r, i, status, body in seen
                if status == 200 and (r not in versions
                                      or not _same(body.get("similar", []), want[r, i])))
    bad_status = sum(1 for *_, status, _ in seen if status != 200)
    return {"requests": len(seen) + len(failed), "failed_requests": len(failed) + bad_status,
            "wrong_answers": wrong, "answers_old": sum(1 for _, r, *_ in seen if r == old.run_dir),
            "answers_new": sum(1 for _, r, *_ in seen if r == new_root),
            "update_seconds_under_load": t_commit - t0,
            "seconds_to_serve": None if switched is None else switched - t0,
            "seconds_commit_to_serve": None if switched is None else max(0.0, switched - t_commit),
            "failure_examples": failed[:3], "watch_s": watch_s, "clients": clients,
            "items_asked": len(sample)}
