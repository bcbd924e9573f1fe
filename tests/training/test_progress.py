"""Training progress on the driver: event log, printer and the loop's sender (no Ray needed)."""

from __future__ import annotations

import io
import logging

from pinsage_ray.training.progress import LoopProgress, ProgressLog, ProgressPrinter, epoch_line

METRICS = {"epoch": 2, "loss": 0.12345, "examples_per_s": 1234.5, "hard_negatives": 3,
           "val_hit_at_10": 0.25, "val_mrr": 0.125, "val_group_hit_at_10": 0.5,
           "epoch_seconds": 1.5, "eval_seconds": 0.5, "lr": 0.001}


def test_log_drains_in_order():
    log = ProgressLog()
    for i in range(3):
        log.put({"kind": "batch", "epoch": 1, "done": i})
    assert [e["done"] for e in log.drain()] == [0, 1, 2]
    assert log.drain() == []


def test_epoch_line_is_readable():
    line = epoch_line(METRICS, 3)
    assert line == ("epoch 2/3: loss 0.1235, 1234 examples/s/worker, hard negatives 3, "
                    "val hit@10 0.2500, val group hit@10 0.5000, val MRR 0.1250 (2.0s)")
    assert epoch_line({"epoch": 1, "loss": 1.0}, 1).startswith("epoch 1/1: loss 1.0000")


def test_printer_draws_bars_then_one_line_per_epoch(caplog):
    out = io.StringIO()
    printer = ProgressPrinter(3, 10, stream=out)
    with caplog.at_level(logging.INFO, logger="pinsage_ray.training.progress"):
        printer.handle([{"kind": "batch", "epoch": 2, "done": 5},
                        {"kind": "batch", "epoch": 2, "done": 10},
                        {"kind": "epoch", "metrics": METRICS}])
    printer.close()
    text = out.getvalue()
    assert "/10 [" in text and "batch/s" in text  # the bar (redraws are throttled)
    assert text.rstrip().endswith(epoch_line(METRICS, 3))
    assert epoch_line(METRICS, 3) in caplog.text  # the run's log file gets the line too

    quiet = io.StringIO()
    ProgressPrinter(3, 10, show=False, stream=quiet).handle(
        [{"kind": "batch", "epoch": 1, "done": 1}, {"kind": "epoch", "metrics": METRICS}])
    assert quiet.getvalue() == ""


class _FakeHandle:
    def __init__(self) -> None:
        self.events: list[dict] = []
        self.put = self

    def remote(self, event: dict) -> None:
        self.events.append(event)


def test_loop_sends_from_rank_zero_only_and_every_few_batches():
    handle = _FakeHandle()
    p0, p1 = LoopProgress(handle, 200, rank=0), LoopProgress(handle, 200, rank=1)
    for done in range(1, 201):
        p0.batch(1, done)
        p1.batch(1, done)
    assert [e["done"] for e in handle.events] == list(range(5, 201, 5))  # 200 // 40 = 5
    LoopProgress(None, 10, rank=0).batch(1, 10)  # no handle: nothing to do, no error
