"""What ``pinsage-ray`` prints, and where everything else goes.

The terminal shows the product's output: progress bars, one line per epoch, the command's
summary, and warnings or errors of this package. Everything else goes to a log file in the
run directory (``RUN_DIR/logs/<command>.log``, or ``WORKDIR/logs/`` for ``quickstart`` and
``evaluate --protocol``; appended to, one header per invocation): this
package's INFO logs, Ray's driver log lines (token authentication, "Started a local Ray
instance", Ray Train and Ray Data messages) and Python warnings. Ray's worker and actor logs
stay in Ray's session log directory, which the log file and the summary name.

``-v`` puts Ray back on the terminal (worker logs included) and this package's INFO logs;
``-vv`` adds DEBUG.
"""

from __future__ import annotations

import datetime
import logging
import os
import sys

logger = logging.getLogger(__name__)

_PREVIOUS_LEVEL: list[int] = []  # the root logger's level before setup_logging
#: Loggers whose records stay off the terminal unless -v (they go to the log file).
_BACKSTAGE = ("ray", "py.warnings", "filelock", "torch", "asyncio", "urllib3")


class _ProductOnly(logging.Filter):
    """Let through records of this package and the program, not Ray's or libraries'."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.name
        return not any(name == b or name.startswith(b + ".") for b in _BACKSTAGE)


class DeferredFileHandler(logging.Handler):
    """Append records to a file once the command has begun its work; until then hold them.

    The log lives in the run directory, but a command that fails on bad input must leave
    that directory as it was (and ``train`` refuses a non-empty directory holding no run).
    So records wait in memory until the directory is ready (``ready()``, e.g. its
    ``run.json`` exists) *and* the work has begun (Ray was started for it) or the command
    succeeded (:meth:`keep`); then they go to ``path``. Otherwise they are dropped.
    """

    MAX_PENDING = 10_000

    def __init__(self, path: str, ready, header: str = "") -> None:
        from pinsage_ray.ray_utils import init_ray_calls

        super().__init__()
        self.path, self.ready, self.header = path, ready, header
        self._pending: list[logging.LogRecord] = []
        self._file = None
        self._kept = False
        self._inits_before = init_ray_calls()

    def keep(self) -> None:
        """The command succeeded: write its log (if the directory is there)."""
        self._kept = True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if self._file is None and not self._open():
                if len(self._pending) < self.MAX_PENDING:
                    self._pending.append(record)
                return
            self._file.write(self.format(record) + "\n")
            self._file.flush()
        except Exception:  # noqa: BLE001 - logging must not fail the command
            self.handleError(record)

    def _open(self) -> bool:
        from pinsage_ray.ray_utils import init_ray_calls

        if not (self._kept or init_ray_calls() > self._inits_before) or not self.ready():
            return False
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if self.header:
            self._file.write(self.header + "\n")
        for record in self._pending:
            self._file.write(self.format(record) + "\n")
        self._pending.clear()
        return True

    @property
    def written(self) -> bool:
        """Whether the file has been opened (the directory became ready)."""
        with self.lock:
            return self._file is not None or self._open()

    def close(self) -> None:
        if self._file is None and self._pending:
            self._open()
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


def log_target(command: str, run_dir: str | None = None,
               workdir: str | None = None) -> tuple[str, object] | None:
    """``(log file path, ready check)`` for a command, or None when it keeps no log file.

    ``run_dir``: the file is ``RUN_DIR/logs/<command>.log``, written once the run exists
    (``run.json``, written by ``train`` after its checks). ``workdir``: the file is
    ``WORKDIR/logs/<command>.log``, written once the folder exists. A URI (``s3://``) gets
    no file: Ray's session log directory still has the worker logs.
    """
    base = run_dir or workdir
    if not base or "://" in base:
        return None
    base = os.path.abspath(base)
    path = os.path.join(base, "logs", f"{command}.log")
    marker = os.path.join(base, "run.json") if run_dir else base
    return path, (lambda: os.path.exists(marker))


def setup_logging(verbose: int, target: tuple[str, object] | None = None, *,
                  argv: list[str] | None = None,
                  divert_native: bool = False) -> DeferredFileHandler | None:
    """Configure the root logger for a CLI command (replaces any handlers it had).

    Args:
        verbose: 0 product output only; 1 adds INFO logs and Ray's output; 2 adds DEBUG.
        target: ``(log file, ready check)`` from :func:`log_target`: everything (INFO, DEBUG
            at ``verbose >= 2``) is appended there. None: no file.
        argv: the command line, written as the file's header.
        divert_native: also :func:`divert_native_stderr` (only for a real CLI process).

    Returns:
        The file handler, or None.
    """
    from pinsage_ray.ray_utils import set_ray_console

    reset_logging()
    root = logging.getLogger()
    _PREVIOUS_LEVEL[:] = [root.level]
    for handler in list(root.handlers):  # e.g. an earlier basicConfig; a test's own stay
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)
    root.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
    full = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    file = None
    if target is not None:
        stamp = datetime.datetime.now().isoformat(timespec="seconds")
        file = DeferredFileHandler(target[0], target[1],
                                   header=f"\n===== {stamp} pinsage-ray {' '.join(argv or [])}")
        file.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
        file.setFormatter(full)
        file.pinsage_console = True
        root.addHandler(file)
    if divert_native and not verbose:
        divert_native_stderr(file)  # before the console handler picks up sys.stderr
    console = logging.StreamHandler(sys.stderr)
    if verbose:
        console.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO)
        console.setFormatter(full)
    else:
        console.setLevel(logging.WARNING)
        console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        console.addFilter(_ProductOnly())
    console.pinsage_console = True
    root.addHandler(console)
    logging.captureWarnings(True)  # library warnings: to the file, on the terminal with -v
    set_ray_console(verbose > 0)
    return file


def reset_logging() -> None:
    """Undo :func:`setup_logging` (for ``main`` called in a process that goes on: tests)."""
    from pinsage_ray.ray_utils import set_ray_console

    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "pinsage_console", False):
            root.removeHandler(handler)
            handler.close()
    logging.captureWarnings(False)
    set_ray_console(True)
    if _PREVIOUS_LEVEL:
        root.setLevel(_PREVIOUS_LEVEL.pop())


def divert_native_stderr(file: DeferredFileHandler | None) -> None:
    """Send what native code writes to file descriptor 2 to the log; keep Python's on screen.

    Ray's C++ core worker in this process writes its error lines straight to fd 2 (they are
    also in Ray's ``python-core-driver-*.log``); Ray Data's actor pools trigger one on every
    run (ray-project/ray#53727). Here fd 2 goes to a temp file and ``sys.stderr`` (progress
    bars, this package's warnings, tracebacks) to a copy of the terminal's descriptor. At
    exit the temp file is appended to ``file``'s log, or, when no log was written, shown on
    the terminal after all. Only for a real command line process: it replaces
    ``sys.stderr`` for good.
    """
    import atexit
    import tempfile

    sys.stderr.flush()
    terminal = os.dup(2)
    tmp = tempfile.NamedTemporaryFile(prefix="pinsage-ray-stderr-", suffix=".log",
                                      delete=False)
    os.dup2(tmp.fileno(), 2)
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding="utf-8",
                           errors="backslashreplace")

    def restore() -> None:
        tmp.flush()
        with open(tmp.name, encoding="utf-8", errors="backslashreplace") as f:
            text = f.read().strip()
        if text and file is not None and file.written:
            file.acquire()
            try:
                file._file.write(f"--- native stderr (Ray's C++ lines) ---\n{text}\n")
                file._file.flush()
            finally:
                file.release()
        elif text:
            print(text, file=sys.stderr)
        tmp.close()
        os.unlink(tmp.name)

    atexit.register(restore)


def where_logs_are(file: DeferredFileHandler | None) -> str:
    """Where this command's log file and Ray's worker logs are, for the final summary."""
    from pinsage_ray.ray_utils import ray_logs_dir

    if file is not None:
        file.keep()  # a summary is printed only on success
    parts = [file.path] if file is not None and file.written else []
    ray_dir = ray_logs_dir() if "ray" in sys.modules else None
    if ray_dir:
        parts.append(f"Ray's worker logs in {ray_dir}")
    return "; ".join(parts) or "none written"


def next_command(*argv: object, note: str = "") -> str:
    """``next: pinsage-ray ARGV...``: the line that ends a command's output with the command
    to run next (arguments shell-quoted where needed; ``note`` follows as a ``# comment``)."""
    import shlex

    line = "next: pinsage-ray " + " ".join(shlex.quote(str(a)) for a in argv)
    return f"{line}   # {note}" if note else line


def hint(*argv: object, note: str = "") -> None:
    """Print the next command to run on stderr (stdout holds the command's JSON)."""
    print(next_command(*argv, note=note), file=sys.stderr, flush=True)


def progress_default(show_progress: bool | None) -> bool:
    """The library's ``show_progress=None``: progress bars when stderr is a terminal.

    A Python user at a terminal (or in a notebook cell, whose stderr is not a TTY: pass
    ``show_progress=True`` there) sees what a long step is doing, as Ray's own output already
    shows; scripts, logs redirected to a file and tests (no TTY) stay quiet.
    """
    if show_progress is not None:
        return bool(show_progress)
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # stderr replaced or closed
        return False


def train_summary(result, seconds: float, file: DeferredFileHandler | None) -> str:
    """What ``pinsage-ray train`` wrote where, its best epoch, and the next command."""
    best = result.best
    scores = [f"{k.replace('val_', 'val ').replace('_at_', '@').replace('_', ' ')} {v:.4f}"
              for k, v in best.items() if k.startswith("val_") and isinstance(v, float)]
    return "\n".join([
        f"trained {len(result.history)} epoch(s) in {seconds:.0f}s; best epoch "
        f"{best['epoch']}" + (f": {', '.join(scores)}" if scores else ""),
        f"  model:   {result.model_dir}",
        f"  metrics: {result.run_dir}/metrics.jsonl (one line per epoch)",
        f"  logs:    {where_logs_are(file)}",
        next_command("embed", result.run_dir)])


def embed_summary(res, run_dir: str, file: DeferredFileHandler | None) -> str:
    """What ``pinsage-ray embed`` wrote and the next command."""
    return "\n".join([
        f"embedded {res.count} items ({res.dim} dims, {res.mode} mode) in {res.seconds:.1f}s",
        f"  embeddings: {res.path}",
        f"  logs:       {where_logs_are(file)}",
        next_command("index", run_dir)])


def index_summary(index, path: str, run_dir: str, file: DeferredFileHandler | None) -> str:
    """What ``pinsage-ray index`` built and the next command (with a real item id)."""
    m = index.manifest
    if m.get("kind") == "partitioned":  # one line for the whole, one per partition
        parts = [f"  partition {p}: {pm['count']} items, {pm['search']} search, ef={pm['ef']}, "
                 f"recall@{pm.get('k_for_recall', 10)} {pm.get('recall_at_k') or float('nan'):.3f}"
                 for p, pm in enumerate(m["parts"])]
        example = index.ids[0].item() if hasattr(index.ids[0], "item") else index.ids[0]
        return "\n".join([
            f"index: {len(index)} items in {len(parts)} partitions (fan-out queries, exact "
            f"top-k merge), {m.get('space')} space", *parts,
            f"  index: {path}", f"  logs:  {where_logs_are(file)}",
            next_command("recommend", run_dir, "--item", example)])
    recall = m.get("hnsw_recall_at_k", m.get("recall_at_k"))
    example = index.ids[0].item() if hasattr(index.ids[0], "item") else index.ids[0]
    hnsw = (f"held-out recall@{m.get('k_for_recall', 10)} {recall:.3f} against exact search"
            if recall is not None else "")
    if getattr(index, "search", "hnsw") == "exact":
        qps = (f"; exact {m['exact_qps']:.0f} vs HNSW {m['hnsw_qps']:.0f} QPS" if m.get("exact_qps") else "")
        how = (f"exact search ({m.get('search_reason', 'chosen')}{qps}; HNSW {hnsw or 'recall not measured'}"
               f" at ef={index.ef})")
    else:
        how = f"HNSW search, ef={index.ef}" + (f", {hnsw}" if hnsw else "")
    return "\n".join([
        f"index: {len(index)} items, {m.get('space')} space, {how}"
        + f", built in {m.get('build_seconds', 0.0):.1f}s",
        f"  index: {path}",
        f"  logs:  {where_logs_are(file)}",
        next_command("recommend", run_dir, "--item", example)])
