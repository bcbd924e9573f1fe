"""Training progress on the driver's console: a bar per epoch, then one line with its metrics.

The training loop runs in Ray Train workers, whose output the CLI keeps off the terminal (it
stays in Ray's worker logs, see :mod:`pinsage_ray.ray_utils`). So rank 0 sends small events
to a :class:`ProgressLog` actor instead (fire and forget: a batch count every few batches,
the metrics once per epoch), and the driver polls it from a thread
(:func:`watch_progress`) and draws them with :class:`ProgressPrinter`. The printer also logs
each epoch line at INFO, so the run's log file has them.

Only :class:`LoopProgress` (in the workers) and :func:`watch_progress` (on the driver) touch
Ray; the log and the printer are plain classes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import threading
from collections.abc import Iterator
from typing import Any, TextIO

logger = logging.getLogger(__name__)

POLL_S = 0.5  # how often the driver drains the events
WAIT_S = 60.0  # longest wait for the progress actor (it may start slowly on a busy machine)
BAR_STEPS = 40  # batch events per epoch at most


class ProgressLog:
    """Events from the training loop, drained by the driver (wrapped as a Ray actor)."""

    def __init__(self) -> None:
        self._events: list[dict[str, Any]] = []

    def put(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def drain(self) -> list[dict[str, Any]]:
        out, self._events = self._events, []
        return out


def epoch_line(metrics: dict[str, Any], num_epochs: int) -> str:
    """One readable line for an epoch's metrics (validation metrics when measured)."""
    parts = [f"epoch {metrics['epoch']}/{num_epochs}: loss {metrics['loss']:.4f}",
             f"{metrics.get('examples_per_s', float('nan')):.0f} examples/s/worker",
             f"hard negatives {metrics.get('hard_negatives', 0)}"]
    names = {"val_hit_at_": "val hit@", "val_group_hit_at_": "val group hit@"}
    for key, value in metrics.items():
        for prefix, label in names.items():
            if key.startswith(prefix) and key[len(prefix):].isdigit():
                parts.append(f"{label}{key[len(prefix):]} {value:.4f}")
    for key, label in (("val_mrr", "val MRR"), ("val_group_mrr", "val group MRR")):
        if isinstance(metrics.get(key), float) and not math.isnan(metrics[key]):
            parts.append(f"{label} {metrics[key]:.4f}")
    seconds = metrics.get("epoch_seconds", 0.0) + metrics.get("eval_seconds", 0.0)
    return ", ".join(parts) + f" ({seconds:.1f}s)"


class ProgressPrinter:
    """Draws events: a tqdm bar over an epoch's batches, replaced by its metrics line.

    Args:
        num_epochs: epochs of the run (for "epoch 2/3").
        num_batches: batches per epoch (the bar's total).
        show: draw on ``stream``; False only logs the epoch lines.
        stream: where to draw (default: stderr).
    """

    def __init__(self, num_epochs: int, num_batches: int, *, show: bool = True,
                 stream: TextIO | None = None) -> None:
        self.num_epochs, self.num_batches, self.show = num_epochs, num_batches, show
        self.stream = stream or sys.stderr
        self._bar: Any = None
        self._bar_epoch: int | None = None

    def handle(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            if event.get("kind") == "batch":
                self._advance(int(event["epoch"]), int(event["done"]))
            elif event.get("kind") == "epoch":
                self._close_bar()
                line = epoch_line(event["metrics"], self.num_epochs)
                logger.info("%s", line)
                if self.show:
                    print(line, file=self.stream, flush=True)

    def _advance(self, epoch: int, done: int) -> None:
        if not self.show:
            return
        if self._bar_epoch != epoch:
            from tqdm import tqdm

            self._close_bar()
            self._bar = tqdm(total=self.num_batches, desc=f"epoch {epoch}/{self.num_epochs}",
                             unit="batch", file=self.stream, leave=False)
            self._bar_epoch = epoch
        self._bar.update(max(0, done - self._bar.n))

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._bar, self._bar_epoch = None, None

    def close(self) -> None:
        self._close_bar()


class LoopProgress:
    """What the training loop calls; sends events from rank 0 only, never waits on them.

    Args:
        handle: a :class:`ProgressLog` actor handle, or None (no progress: every call a no-op).
        num_batches: batches per epoch.
        rank: the worker's rank.
    """

    def __init__(self, handle: Any, num_batches: int, rank: int) -> None:
        self.handle = handle if rank == 0 else None
        self.num_batches = num_batches
        self.every = max(1, num_batches // BAR_STEPS)

    def batch(self, epoch: int, done: int) -> None:
        if self.handle is not None and (done % self.every == 0 or done == self.num_batches):
            self.handle.put.remote({"kind": "batch", "epoch": epoch, "done": done})

    def epoch(self, metrics: dict[str, Any]) -> None:
        if self.handle is None:
            return
        import ray

        try:  # once per epoch: wait, so that the last epoch's line is not lost at exit
            ray.get(self.handle.put.remote({"kind": "epoch", "metrics": dict(metrics)}),
                    timeout=WAIT_S)
        except Exception:  # noqa: BLE001 - progress must never fail a run
            logger.debug("progress event lost", exc_info=True)


@contextlib.contextmanager
def watch_progress(num_epochs: int, num_batches: int, *, show: bool) -> Iterator[Any]:
    """Start a :class:`ProgressLog` actor and a thread drawing its events; yield its handle.

    Yields None (and starts nothing) when ``show`` is False. On exit the last events are
    drawn and the actor is stopped.
    """
    if not show:
        yield None
        return
    import ray

    handle = ray.remote(ProgressLog).options(num_cpus=0).remote()
    printer = ProgressPrinter(num_epochs, num_batches, show=True)
    stop = threading.Event()

    def poll() -> None:
        pending = None  # one drain call in flight; a slow actor (busy machine) is waited for
        while True:
            stopping = stop.wait(POLL_S)
            try:
                if pending is None:
                    pending = handle.drain.remote()
                done, _ = ray.wait([pending], timeout=WAIT_S if stopping else 0)
                if done:
                    printer.handle(ray.get(pending))
                    pending = None
                if stopping:  # the loop's last events were put before fit() returned
                    printer.handle(ray.get(handle.drain.remote(), timeout=WAIT_S))
                    return
            except Exception:  # noqa: BLE001 - progress must never fail a run
                logger.debug("progress events lost", exc_info=True)
                return

    thread = threading.Thread(target=poll, name="pinsage-progress", daemon=True)
    thread.start()
    try:
        yield handle
    finally:
        stop.set()
        thread.join(timeout=2 * WAIT_S + 5)
        printer.close()
        ray.kill(handle)
