"""Injected faults on a Ray cluster of several nodes on one machine, each checked for loss.

A :class:`LocalCluster` is ``ray.cluster_utils.Cluster`` shaped like ``cluster.yaml``: a head
that runs no work (``CPU: 0``) and worker nodes with their own raylet and object store, each
advertising one CPU and one unit of both custom resources (``pinsage_shard`` of a
``cpu_worker``, ``pinsage_trainer`` of a ``gpu_worker``, without the GPU). Nodes can be
removed (every process of the node and its object store go) and added while work runs.

Each scenario injects one fault at a known point of real work and compares the result with a
fault-free run (STYLE.md: same answer, every item once), returning a :class:`FaultOutcome`:

* :func:`walk_node_replaced`: the node of a walk shard removed mid-request, a replacement
  node added; the request must return the fault-free answer.
* :func:`walk_node_no_capacity`: the same without a replacement: a clear
  ``ShardUnavailableError`` naming the shard within ``recovery_timeout_s``, then, once a node
  returns, the fault-free answer again.
* :func:`train_worker_killed` / :func:`train_node_lost`: a Ray Train worker process killed
  (or its whole node removed and replaced) in epoch 2, once epoch 1's checkpoint is
  registered; the run must resume from that checkpoint (one checkpoint per epoch in the end:
  no epoch trained twice to completion), list every epoch once, and end with the
  uninterrupted run's model (batches are pure functions of (seed, rank, epoch, index), so
  redoing the interrupted epoch from its start is exact).
* :func:`embed_actor_killed`: a Ray Data inference actor killed mid-pass; every item must be
  embedded exactly once, equal to a fault-free pass.
* :func:`driver_killed`: ``pinsage-ray train`` SIGKILLed mid-epoch; rerunning the same
  command must resume and finish with the uninterrupted run's model.

``tests/multinode/test_faults.py`` runs each as a test; ``bench_faults.py`` runs them all and
writes ``faults_injected``, ``faults_survived``, ``wrong_answers`` and ``items_lost``.
Cluster nodes are added and removed from the main thread (Ray installs signal handlers
there); the work under fault runs in a background thread.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("fault_scenarios")

MIB = 2**20
#: GCS health checks every 0.5 s, a node dead after 5 failed: a node that is gone fails each
#: check at once and is noticed in about 3 s (Ray's defaults take 15-30 s); a node that only
#: hangs is declared dead after 5 checks have timed out (2 s each), so a busy machine's slow
#: raylet is not mistaken for a lost one.
HEALTH_CHECKS = {"health_check_period_ms": 500, "health_check_timeout_ms": 2000,
                 "health_check_failure_threshold": 5}
HEAD_ARGS = {"num_cpus": 0, "object_store_memory": 100 * MIB, "include_dashboard": False,
             "_system_config": HEALTH_CHECKS}
WORKER_ARGS = {"num_cpus": 1, "object_store_memory": 100 * MIB,
               "resources": {"pinsage_shard": 1, "pinsage_trainer": 1}}
#: Seconds any one wait of a scenario may take before it counts as a hang.
HANG_S = 300.0


# --------------------------------------------------------------------------- the cluster
class LocalCluster:
    """A head (no CPUs, like ``cluster.yaml``'s) and ``num_workers`` worker nodes here.

    Args:
        num_workers: worker nodes to start with (each ``WORKER_ARGS``).
    """

    def __init__(self, num_workers: int = 2) -> None:
        from ray.cluster_utils import Cluster

        t0 = time.perf_counter()
        self.cluster = Cluster(initialize_head=True, head_node_args=dict(HEAD_ARGS))
        for _ in range(num_workers):
            self.cluster.add_node(**WORKER_ARGS)
        self.cluster.wait_for_nodes()
        log.info("cluster of 1 + %d nodes up in %.1fs", num_workers, time.perf_counter() - t0)

    @property
    def address(self) -> str:
        return self.cluster.address

    def connect(self, **kwargs: Any) -> None:
        """Make this process a driver of the cluster (as ``pinsage-ray ... --address``);
        ``kwargs`` go to ``ray.init`` (a job ``runtime_env``, say)."""
        import ray.data

        from pinsage_ray.ray_utils import init_ray

        init_ray(self.address, **kwargs)
        ray.data.DataContext.get_current().enable_progress_bars = False

    def worker_ids(self) -> set[str]:
        return {n.node_id for n in self.cluster.worker_nodes}

    def head_id(self) -> str:
        return self.cluster.head_node.node_id

    def add_worker(self) -> Any:
        """Start one more worker node (main thread only) and wait until it is registered."""
        node = self.cluster.add_node(**WORKER_ARGS)
        self.cluster.wait_for_nodes()
        return node

    def remove_worker(self, node_id: str) -> None:
        """Kill every process of the worker node ``node_id`` (its object store goes too)."""
        node = next(n for n in self.cluster.worker_nodes if n.node_id == node_id)
        self.cluster.remove_node(node, allow_graceful=False)

    def ensure_workers(self, n: int) -> None:
        """Add worker nodes until there are ``n`` (restores the shape after a fault)."""
        while len(self.cluster.worker_nodes) < n:
            self.add_worker()

    def _raylets(self) -> dict[int, str]:
        """raylet pid -> node id, for every node of this cluster."""
        from ray._private import ray_constants

        out = {}
        for node in [self.cluster.head_node, *self.cluster.worker_nodes]:
            for info in node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, []):
                out[info.process.pid] = node.node_id
        return out

    def processes(self, needle: str) -> list[tuple[int, str]]:
        """``(pid, node id)`` of this cluster's worker processes whose title has ``needle``.

        Ray's worker processes are children of their node's raylet; matching only those keeps
        other Ray instances on the machine out of reach.
        """
        raylets = self._raylets()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid not in raylets:
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    title = f.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError, IndexError):
                continue
            if needle in title:
                found.append((int(entry), raylets[ppid]))
        return sorted(found)

    def shutdown(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


# --------------------------------------------------------------------------- outcomes
@dataclass
class FaultOutcome:
    """What one injected fault did.

    Attributes:
        name: the scenario.
        injected: faults that hit the work while it ran (0: the fault missed it).
        survived: the work finished (or failed as specified) with nothing lost or wrong.
        wrong_answers: results that differ from the fault-free run (queries, epochs, items).
        items_lost: results missing or duplicated (queries, epochs, items).
        seconds: wall time of the scenario.
        detail: scenario-specific evidence (times, node ids, differences).
    """

    name: str
    injected: int = 0
    survived: bool = False
    wrong_answers: int = 0
    items_lost: int = 0
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _background(fn: Any, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    fut = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return fut


def _wait_for(cond: Any, what: str, timeout: float = HANG_S, poll: float = 0.05) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(poll)


# --------------------------------------------------------------------------- walks
QUERIES = np.arange(400)


def walk_answers(walker: Any) -> dict[str, np.ndarray]:
    """One request of each kind whose answer is compared (planted graph: 400 items)."""
    nb = walker.importance_neighbors(QUERIES, num_walks=50, walk_length=3, restart_prob=0.5,
                                     top_t=8, seed=2)
    walks = walker.random_walks(QUERIES, num_walks=2, walk_length=4, seed=5)
    return {"nb_ids": nb.ids, "nb_weights": nb.weights, "walks": walks.reshape(len(QUERIES), -1)}


def _compare_walks(ref: dict, got: dict | None) -> tuple[int, int]:
    """(queries answered wrongly, queries without an answer)."""
    if got is None:
        return 0, len(QUERIES)
    wrong = np.zeros(len(QUERIES), dtype=bool)
    for key, value in ref.items():
        rows = value.reshape(len(QUERIES), -1) != got[key].reshape(len(QUERIES), -1)
        wrong |= rows.any(axis=1)
    return int(wrong.sum()), 0


def _lose_node_mid_request(lc: LocalCluster, svc: Any, shard: int) -> tuple[Any, bool, str, float]:
    """Start :func:`walk_answers` on ``svc`` in the background, then remove the node of
    ``shard`` while it runs. Returns (the request's future, whether the removal landed
    mid-request, the removed node's id, the time of the fault)."""
    victim = svc.shard_info[shard]["node_id"]
    fut = _background(walk_answers, svc)
    time.sleep(1.0)
    mid_request = not fut.done()
    t_fault = time.perf_counter()
    lc.remove_worker(victim)
    return fut, mid_request, victim, t_fault


def walk_node_replaced(lc: LocalCluster, graph: str) -> FaultOutcome:
    """Remove the node of shard 1 mid-request, add a replacement: the answer must not change."""
    from pinsage_ray.sampling.local import LocalWalker
    from pinsage_ray.sampling.service import ShardedGraph

    out, t0 = FaultOutcome("walk_node_lost_replaced"), time.perf_counter()
    ref = walk_answers(LocalWalker(graph))
    # small chunks: the request runs for seconds, so the removal lands inside it
    svc = ShardedGraph(graph, 2, max_walkers=100, recovery_timeout_s=HANG_S)
    try:
        fut, mid_request, victim, t_fault = _lose_node_mid_request(lc, svc, 1)
        replacement = lc.add_worker().node_id
        try:
            got, error = fut.result(timeout=HANG_S), None
        except Exception as err:  # noqa: BLE001 - recorded as a failure
            got, error = None, f"{type(err).__name__}: {err}"
        out.injected = int(mid_request and svc.recoveries > 0)
        out.wrong_answers, out.items_lost = _compare_walks(ref, got)
        out.survived = error is None and out.wrong_answers == out.items_lost == 0
        out.detail = {"mid_request": mid_request, "recoveries": svc.recoveries,
                      "error": error, "removed_node": victim, "replacement_node": replacement,
                      "shard_nodes_after": [i.get("node_id") for i in svc.shard_info],
                      "seconds_after_fault": round(time.perf_counter() - t_fault, 1)}
    finally:
        svc.shutdown()
    out.seconds = round(time.perf_counter() - t0, 1)
    return out


def walk_node_no_capacity(lc: LocalCluster, graph: str, recovery_s: float = 10.0) -> FaultOutcome:
    """Remove the node of shard 0 mid-request with no replacement: a clear error within
    ``recovery_s`` naming shard 0; after a node is added, the fault-free answer again."""
    from pinsage_ray.sampling.local import LocalWalker
    from pinsage_ray.sampling.service import ShardedGraph, ShardUnavailableError

    out, t0 = FaultOutcome("walk_node_lost_no_capacity"), time.perf_counter()
    ref = walk_answers(LocalWalker(graph))
    svc = ShardedGraph(graph, 2, max_walkers=100, recovery_timeout_s=recovery_s)
    try:
        fut, mid_request, _, t_fault = _lose_node_mid_request(lc, svc, 0)
        try:
            fut.result(timeout=HANG_S)
            error = None
        except Exception as err:  # noqa: BLE001 - the error is what is checked
            error = err
        error_after = time.perf_counter() - t_fault
        message = f"{type(error).__name__}: {error}" if error is not None else None
        # the specified failure: this type, naming the shard, within the recovery time plus
        # the time to notice the loss and to ask the shards (a hang would be HANG_S)
        clear = (isinstance(error, ShardUnavailableError) and "shard 0 of 2" in str(error)
                 and "pinsage_shard" in str(error) and error_after < recovery_s + 30)
        lc.add_worker()
        svc.recovery_timeout_s = HANG_S  # the next call waits for the shard's restart
        t_back = time.perf_counter()
        try:
            got, again_error = walk_answers(svc), None
        except Exception as err:  # noqa: BLE001
            got, again_error = None, f"{type(err).__name__}: {err}"
        out.injected = int(mid_request)
        out.wrong_answers, out.items_lost = _compare_walks(ref, got)
        out.survived = clear and again_error is None and out.wrong_answers == out.items_lost == 0
        out.detail = {"mid_request": mid_request, "error": message,
                      "error_seconds_after_fault": round(error_after, 1),
                      "recovery_timeout_s": recovery_s, "clear_error": clear,
                      "after_node_returned": again_error or "same answer as fault-free",
                      "seconds_to_answer_after_node_returned":
                          round(time.perf_counter() - t_back, 1)}
    finally:
        svc.shutdown()
    out.seconds = round(time.perf_counter() - t0, 1)
    return out


# --------------------------------------------------------------------------- training
def fault_train_config() -> Any:
    """A tiny 2-worker run: 3 epochs of 30 batches (about a second each), its walks served
    by 2 shard actors (one per ``pinsage_shard`` node: losing a node loses a shard too)."""
    from pinsage_ray.training import TrainConfig

    return TrainConfig.preset(
        "paper", num_epochs=3, num_workers=2, num_shards=2, batch_size=32,
        batches_per_epoch=30, hidden_dim=16, embedding_dim=16, num_shared_negatives=32,
        max_hard_negatives=1, hard_band=(0.05, 0.4), lr=3e-3, val_fraction=0.1, prefetch=2,
        seed=1, max_failures=3, neighbors={"num_walks": 20, "top_t": 5})


def actor_nodes(class_name_part: str) -> dict[str, str]:
    """Actors ever started on the cluster whose class name contains ``class_name_part``
    (dead ones included): actor id -> node id."""
    from ray._private import state

    return {aid: a["Address"]["NodeID"] for aid, a in state.actors().items()
            if class_name_part in a["ActorClassName"]}


def train_worker_nodes() -> dict[str, str]:
    """Ray Train worker actors ever started on the cluster: actor id -> node id."""
    return actor_nodes("RayTrainWorker")


def checkpoints(run: Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first (``state.json`` is written last)."""
    root = Path(run) / "train"
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob("checkpoint_*") if (p / "state.json").is_file())


def registered(run: Path) -> list[dict]:
    """Metrics of the checkpoints Ray Train has registered (those a restart resumes from).

    A checkpoint's files exist a moment before the controller registers it; a worker killed
    in between restarts the run from the previous registered one.
    """
    try:
        snap = json.loads((Path(run) / "train" / "checkpoint_manager_snapshot.json").read_text())
        return [r["metrics"] for r in snap["checkpoint_results"]]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _mid_epoch_2(run: Path, done: Any) -> tuple[int, float]:
    """Wait until epoch 1's checkpoint is registered, then about 40% into epoch 2 (by epoch
    1's duration); returns (checkpoints registered, seconds slept)."""
    _wait_for(lambda: registered(run) or done(), "epoch 1's registered checkpoint")
    reg = registered(run)
    delay = 0.4 * float(reg[0].get("epoch_seconds", 0.0)) if reg else 0.0
    time.sleep(delay)
    return len(registered(run)), round(delay, 2)


def final_state(run: Path) -> tuple[dict, list[dict]]:
    """(model state dict, history) of a run's last checkpoint."""
    from pinsage_ray.training.checkpoint import load_checkpoint

    state = load_checkpoint(str(checkpoints(run)[-1]))
    return state["model"], state["history"]


def _compare_runs(ref_run: Path, run: Path, num_epochs: int) -> dict[str, Any]:
    """Final model and history of ``run`` against the uninterrupted ``ref_run``."""
    ref_model, ref_hist = final_state(ref_run)
    model, hist = final_state(run)
    epochs = [m["epoch"] for m in hist]
    diff = max(float((model[k].float() - ref_model[k].float()).abs().max()) for k in ref_model)
    loss_diff = max((abs(a["loss"] - b["loss"]) for a, b in zip(hist, ref_hist)), default=0.0)
    metrics_lines = [json.loads(x)["epoch"] for x in
                     (Path(run) / "metrics.jsonl").read_text().splitlines()]
    return {"epochs": epochs, "metrics_jsonl_epochs": metrics_lines,
            "checkpoints": len(checkpoints(run)), "max_state_diff": diff,
            "max_epoch_loss_diff": loss_diff,
            "epochs_missing_or_repeated": (len(set(range(1, num_epochs + 1)) ^ set(epochs))
                                           + len(epochs) - len(set(epochs))),
            "model_equal": diff <= 1e-6}


def train_reference(lc: LocalCluster, graph: str, run: Path) -> tuple[Path, Any, list[str]]:
    """The uninterrupted run every training fault is compared with.

    Returns:
        ``(run_dir, TrainResult, node ids of its Train workers)``.
    """
    from pinsage_ray.training import train

    before = train_worker_nodes()
    result = train(graph, run, fault_train_config())
    nodes = [n for aid, n in train_worker_nodes().items() if aid not in before]
    return run, result, nodes


def _train_with_fault(name: str, lc: LocalCluster, graph: str, run: Path, ref_run: Path,
                      inject: Any) -> FaultOutcome:
    """Train in the background, call ``inject()`` in epoch 2 (epoch 1's checkpoint
    registered), compare with ``ref_run``."""
    from pinsage_ray.training import train

    out, t0 = FaultOutcome(name), time.perf_counter()
    cfg = fault_train_config()
    fut = _background(train, graph, run, cfg)
    before, delay = _mid_epoch_2(run, fut.done)
    info = inject() if not fut.done() else {"missed": "the run had finished"}
    info["seconds_into_epoch_2"] = delay
    try:
        fut.result(timeout=HANG_S)
        error = None
    except Exception as err:  # noqa: BLE001
        error = f"{type(err).__name__}: {err}"
    out.injected = int(before < cfg.num_epochs and "missed" not in info)
    out.detail = {**info, "checkpoints_before_fault": before, "error": error}
    if error is None:
        cmp = _compare_runs(ref_run, run, cfg.num_epochs)
        out.detail.update(cmp)
        out.items_lost = cmp["epochs_missing_or_repeated"]
        out.wrong_answers = int(not cmp["model_equal"])
        # resumed, not restarted: one checkpoint per epoch, no epoch trained twice
        resumed = cmp["checkpoints"] == cfg.num_epochs
        out.survived = out.items_lost == out.wrong_answers == 0 and resumed
    else:
        out.items_lost = cfg.num_epochs
    out.seconds = round(time.perf_counter() - t0, 1)
    return out


def train_worker_killed(lc: LocalCluster, graph: str, run: Path, ref_run: Path) -> FaultOutcome:
    """SIGKILL one Ray Train worker process just after epoch 1's checkpoint (in epoch 2)."""
    def inject() -> dict:
        procs = lc.processes("RayTrainWorker")
        if not procs:
            return {"missed": "no Train worker process found"}
        pid, node = procs[-1]
        os.kill(pid, signal.SIGKILL)
        return {"killed_pid": pid, "node": node, "train_workers_seen": len(procs)}

    return _train_with_fault("train_worker_killed", lc, graph, run, ref_run, inject)


def train_node_lost(lc: LocalCluster, graph: str, run: Path, ref_run: Path) -> FaultOutcome:
    """Remove the node of one Train worker just after epoch 1's checkpoint; add a new node."""
    def inject() -> dict:
        procs = lc.processes("RayTrainWorker")
        nodes = [n for _, n in procs if n in lc.worker_ids()]
        if not nodes:
            return {"missed": "no Train worker on a worker node"}
        lc.remove_worker(nodes[-1])
        replacement = lc.add_worker().node_id
        return {"removed_node": nodes[-1], "replacement_node": replacement,
                "train_worker_nodes": sorted(set(nodes))}

    return _train_with_fault("train_node_lost", lc, graph, run, ref_run, inject)


def driver_killed(lc: LocalCluster, graph: str, run: Path, ref_run: Path,
                  workdir: Path) -> FaultOutcome:
    """SIGKILL ``pinsage-ray train`` (a driver of this cluster) in epoch 2, then rerun it."""
    out, t0 = FaultOutcome("driver_killed"), time.perf_counter()
    cfg = fault_train_config()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg_path = workdir / "train_config.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    cmd = [sys.executable, "-m", "pinsage_ray.cli", "train", graph, str(run), "--config",
           str(cfg_path), "--address", lc.address]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(workdir / "first.log", "wb") as logf:
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)
        try:
            before, delay = _mid_epoch_2(run, lambda: proc.poll() is not None)
            running = proc.poll() is None
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait()
    second = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            timeout=HANG_S * 2)
    (workdir / "second.log").write_bytes(second.stdout)
    out.injected = int(running and before < cfg.num_epochs)
    out.detail = {"checkpoints_before_kill": before, "seconds_into_epoch_2": delay,
                  "killed_exit_code": proc.returncode,
                  "rerun_exit_code": second.returncode,
                  "rerun_says_resumed": b"resum" in second.stdout.lower()}
    if second.returncode == 0:
        cmp = _compare_runs(ref_run, run, cfg.num_epochs)
        out.detail.update(cmp)
        out.items_lost = cmp["epochs_missing_or_repeated"]
        out.wrong_answers = int(not cmp["model_equal"])
        out.survived = (out.items_lost == out.wrong_answers == 0
                        and cmp["checkpoints"] == cfg.num_epochs)
    else:
        out.detail["rerun_tail"] = second.stdout.decode(errors="replace")[-2000:]
        out.items_lost = cfg.num_epochs
    out.seconds = round(time.perf_counter() - t0, 1)
    return out


# --------------------------------------------------------------------------- inference
def _embed_copy(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("embeddings", "inference", "train"))
    return dst


#: 20 batches per pass. One pool actor: on 1-CPU nodes two actors (0.5 CPU each, one per node)
#: leave no whole CPU for Ray Data's read tasks, and the pass waits forever.
EMBED_ARGS = {"mode": "ray", "batch_size": 20, "num_actors": 1}


def embed_actor_killed(lc: LocalCluster, ref_run: Path, workdir: Path) -> FaultOutcome:
    """SIGKILL a Ray Data inference actor while a layer pass runs; compare with a clean pass."""
    from pinsage_ray.inference.pipeline import embed, load_embeddings

    out, t0 = FaultOutcome("embed_actor_killed"), time.perf_counter()
    clean = _embed_copy(ref_run, workdir / "embed-clean")
    embed(clean, **EMBED_ARGS)
    ref_ids, ref_emb = load_embeddings(clean)

    run = _embed_copy(ref_run, workdir / "embed-fault")
    layers = run / "inference" / "layers"
    fut = _background(embed, run, **EMBED_ARGS)

    def parts(layer: str) -> int:
        d = layers / layer
        return len(list(d.glob("part-*.ids.npy"))) if d.is_dir() else 0

    # first pass under way (some of its parts written, not all) and an actor to kill
    _wait_for(lambda: fut.done() or (parts("h0") > 0 and lc.processes("_LayerPass")),
              "the first inference pass")
    procs = lc.processes("_LayerPass")
    info: dict[str, Any] = {"missed": "the embedding had finished"}
    if not fut.done() and procs:
        pid, node = procs[0]
        info = {"h0_parts_at_kill": parts("h0"), "killed_pid": pid, "node": node,
                "actors_seen": len(procs)}
        os.kill(pid, signal.SIGKILL)
    try:
        fut.result(timeout=HANG_S)
        error = None
    except Exception as err:  # noqa: BLE001
        error = f"{type(err).__name__}: {err}"
    out.injected = int("missed" not in info)
    out.detail = {**info, "error": error, "passes": 1 + len(list(layers.glob("h*")))}
    n = len(ref_ids)
    if error is None:
        ids, emb = load_embeddings(run)
        keys = ids.to_pylist()
        lost = n - len(set(keys) & set(ref_ids.to_pylist())) + len(keys) - len(set(keys))
        same_order = ids.equals(ref_ids)
        diff = float(np.abs(emb - ref_emb).max()) if same_order else float("inf")
        wrong = (int((np.abs(emb - ref_emb) > 1e-6).any(axis=1).sum()) if same_order else n)
        out.items_lost, out.wrong_answers = lost, wrong
        out.detail.update(items=len(keys), unique=len(set(keys)), max_abs_diff=diff)
        out.survived = lost == wrong == 0
    else:
        out.items_lost = n
    out.seconds = round(time.perf_counter() - t0, 1)
    return out


# --------------------------------------------------------------------------- all of them
def planted_graph(path: Path) -> str:
    """The tests' planted graph (400 items, 8 communities, features)."""
    from pinsage_ray.data.synthetic import SyntheticConfig, generate_synthetic
    from pinsage_ray.graph import prepare

    if not (path / "manifest.json").exists():
        prepare(generate_synthetic(SyntheticConfig(
            num_items=400, num_groups=300, num_communities=8, mean_group_size=10.0, p_in=0.9,
            feature_dim=16, feature_noise=0.5, timestamps=True, seed=7)), path)
    return str(path)


def run_all(workdir: Path) -> list[FaultOutcome]:
    """Every scenario on one fresh cluster, in order; a scenario that raises counts as lost."""
    import ray

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    graph = planted_graph(workdir / "graph")
    if ray.is_initialized():
        ray.shutdown()
    lc = LocalCluster(2)
    outcomes: list[FaultOutcome] = []
    try:
        lc.connect()
        ref_run = train_reference(lc, graph, workdir / "run-reference")[0]
        steps = [
            ("walk_node_lost_replaced", lambda: walk_node_replaced(lc, graph)),
            ("walk_node_lost_no_capacity", lambda: walk_node_no_capacity(lc, graph)),
            ("train_worker_killed", lambda: train_worker_killed(
                lc, graph, workdir / "run-worker-killed", ref_run)),
            ("train_node_lost", lambda: train_node_lost(
                lc, graph, workdir / "run-node-lost", ref_run)),
            ("embed_actor_killed", lambda: embed_actor_killed(lc, ref_run, workdir)),
            ("driver_killed", lambda: driver_killed(
                lc, graph, workdir / "run-driver-killed", ref_run, workdir / "driver")),
        ]
        for name, step in steps:
            t0 = time.perf_counter()
            try:
                outcome = step()
            except Exception as err:  # noqa: BLE001 - a scenario that breaks is not survived
                log.exception("scenario %s raised", name)
                outcome = FaultOutcome(name, injected=1, detail={"error": repr(err)},
                                       seconds=round(time.perf_counter() - t0, 1))
            log.info("%-28s injected %d survived %s wrong %d lost %d (%.0fs)", name,
                     outcome.injected, outcome.survived, outcome.wrong_answers,
                     outcome.items_lost, outcome.seconds)
            outcomes.append(outcome)
            lc.ensure_workers(2)
    finally:
        lc.shutdown()
    return outcomes
