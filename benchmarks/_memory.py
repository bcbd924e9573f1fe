"""Memory measurements shared by the benchmark scripts: the whole process tree, one process.

A benchmark that starts Ray spreads its memory over many processes (GCS, raylet, Train
workers, shard and producer actors), so its own ``ru_maxrss`` says little. :class:`TreeMemory`
samples the summed RSS of this process and all its descendants in a daemon thread and keeps
the peak (and each process's own peak); :func:`vm_hwm` reads the peak of one live process (a Ray actor) by pid. The
benchmark process's own peak is ``_common.peak_rss_bytes``.

Import it from a script in this folder with ``from _memory import ...``.
"""

from __future__ import annotations

import threading


class TreeMemory:
    """Peak summed RSS of this process and all its descendants (Ray's GCS, raylet, workers,
    actors), sampled every ``interval`` s in a daemon thread; :meth:`reset` starts a new peak.

    Pages shared between processes (Ray's object store, zero-copy arrays) count once per
    process mapping them, so the sum overstates the physical peak somewhat.

    Example::

        tree = TreeMemory(interval=1.0)
        ...                      # the measured work
        peak_bytes = tree.stop()
    """

    def __init__(self, interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"interval={interval!r}; expected seconds > 0 between samples")
        import psutil

        self._psutil = psutil
        self.interval = interval
        self.peak = 0
        self.peak_processes = 0
        #: pid -> (peak RSS in bytes, the start of its command line): each process's own peak
        self.per_process: dict[int, tuple[int, str]] = {}
        #: pid -> peak of RSS less shared-memory pages (``RssShmem``: Ray's object store,
        #: which every process reading objects maps, and which belongs to the node's store)
        self.private_per_process: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> int:
        """Take one sample now; return the summed RSS in bytes (and raise the peak to it)."""
        me = self._psutil.Process()
        total, n = 0, 0
        for p in [me, *me.children(recursive=True)]:
            try:
                rss = p.memory_info().rss
                if rss > self.per_process.get(p.pid, (0, ""))[0]:
                    self.per_process[p.pid] = (rss, " ".join(p.cmdline()[:2])[:80])
                private = rss - (rss_shmem(p.pid) or 0)
                if private > self.private_per_process.get(p.pid, 0):
                    self.private_per_process[p.pid] = private
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            total += rss
            n += 1
        with self._lock:
            if total > self.peak:
                self.peak, self.peak_processes = total, n
        return total

    def reset(self) -> None:
        """Forget the peak so far and start a new one from a sample taken now."""
        with self._lock:
            self.peak, self.peak_processes = 0, 0
            self.per_process, self.private_per_process = {}, {}
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def stop(self) -> int:
        """Stop sampling; return the peak summed RSS in bytes."""
        self._stop.set()
        self._thread.join()
        return self.peak


def _status_field(pid: int, field: str) -> int | None:
    """A ``kB`` field of ``/proc/PID/status`` in bytes (None where /proc lacks it)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def vm_hwm(pid: int) -> int | None:
    """Peak resident memory (VmHWM) of a live process, bytes (None where /proc lacks it)."""
    return _status_field(pid, "VmHWM:")


def rss_shmem(pid: int) -> int | None:
    """Resident shared-memory pages (RssShmem: Ray's object store) of a live process, bytes."""
    return _status_field(pid, "RssShmem:")


def rss_anon(pid: int | None = None) -> int | None:
    """Resident private memory (RssAnon: heap and anonymous maps) of a process (default: this
    one), bytes."""
    import os

    return _status_field(os.getpid() if pid is None else pid, "RssAnon:")
