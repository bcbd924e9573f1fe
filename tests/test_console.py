"""The CLI's logging set-up: the terminal gets the product's lines, the run's log the rest."""

from __future__ import annotations

import io
import logging

from pinsage_ray import ray_utils
from pinsage_ray.console import (DeferredFileHandler, log_target, reset_logging,
                                 setup_logging)


def _record(name: str, level: int = logging.WARNING, msg: str = "hello") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_log_waits_for_the_run_and_for_work_or_success(tmp_path):
    run = tmp_path / "run"
    path, ready = log_target("embed", run_dir=str(run))
    assert path == str(run / "logs" / "embed.log")
    handler = DeferredFileHandler(path, ready, header="== header")
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(_record("pinsage_ray.x", msg="early"))
    run.mkdir()
    handler.emit(_record("pinsage_ray.x", msg="no run.json yet"))
    (run / "run.json").write_text("{}")
    handler.emit(_record("pinsage_ray.x", msg="bad input, nothing started"))
    assert not (run / "logs").exists()  # a failing command leaves the run as it was
    handler.keep()  # the command succeeded
    handler.emit(_record("ray.train", msg="last"))
    handler.close()
    assert (run / "logs" / "embed.log").read_text().splitlines() == [
        "== header", "early", "no run.json yet", "bad input, nothing started", "last"]


def test_log_opens_once_ray_was_started(tmp_path, monkeypatch):
    path, ready = log_target("quickstart", workdir=str(tmp_path))
    handler = DeferredFileHandler(path, ready)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(_record("pinsage_ray.x", msg="before"))
    assert not handler.written
    monkeypatch.setitem(ray_utils._CONSOLE, "init_calls", ray_utils.init_ray_calls() + 1)
    handler.emit(_record("pinsage_ray.x", msg="after"))
    handler.close()
    assert (tmp_path / "logs" / "quickstart.log").read_text().split() == ["before", "after"]
    assert log_target("train", run_dir="s3://bucket/run") is None  # no local file for a URI


def test_terminal_shows_the_products_lines_and_ray_goes_to_the_file(tmp_path, monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    (tmp_path / "run.json").write_text("{}")
    handler = setup_logging(0, log_target("train", run_dir=str(tmp_path)), argv=["train"])
    try:
        assert not ray_utils.ray_console_on()
        ray_utils.route_ray_loggers()  # as init_ray does (Ray's loggers may be configured)
        handler.keep()
        logging.getLogger("ray.train").warning("ray internals")
        logging.getLogger("pinsage_ray.graph").warning("a product warning")
        logging.getLogger("pinsage_ray.graph").info("an info line")
    finally:
        reset_logging()
    assert ray_utils.ray_console_on()
    assert err.getvalue() == "WARNING: a product warning\n"
    log = (tmp_path / "logs" / "train.log").read_text()
    assert "pinsage-ray train" in log and "ray internals" in log and "an info line" in log
    assert not any(getattr(h, "pinsage_console", False) for h in logging.getLogger().handlers)


def test_verbose_shows_ray_and_info(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    setup_logging(1)
    try:
        assert ray_utils.ray_console_on()
        logging.getLogger("ray.train").warning("ray internals")
        logging.getLogger("pinsage_ray.graph").info("an info line")
    finally:
        reset_logging()
    assert "ray internals" in err.getvalue() and "an info line" in err.getvalue()
