"""``process`` jobs on a Ray cluster: each one a detached actor on a node with a training
resource, watched by whichever API replica's JobRunner owns it.

The actor (``outcrop-job-<jobId>`` in the ``outcrop`` namespace) receives the job's input
files as bytes, writes them into a work dir on its own node and runs the same worker
module there (``python -m MODULE WORK_DIR``; with ``--model-bucket`` the worker pushes
its model file from there, as a local one does). The runner polls it: the exit code plus
what the worker reported (progress, result, error, the kind's small logs, and the node in
``node.json``) is written into the job's local work dir, so the runner settles it exactly
as a local worker.

Detached, so it outlives the API replica that started it: a replica starting after its
predecessor died re-attaches by name instead of starting the job again, and a replica
that closes hands the job back (queued) to be re-attached by the next one. When the
actor's node dies the runner queues the job again (``after_loss``): the new actor starts
in a fresh work dir on another node, without the lost node's ``checkpoint.pt``, so
training starts over; with no node left to run it, or no attempts left, it fails with
a message naming the lost node. The runner kills the actor once the job settled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from outcrop.jobs import files
from outcrop.jobs.kinds import JobKind
from outcrop.jobs.launch import WATCHED_ELSEWHERE, Unwatched, Watched, WorkerLost
from outcrop.jobs.records import JobRow

log = logging.getLogger("outcrop.scale")

JOB_NAMESPACE = "outcrop"
DEFAULT_JOB_RESOURCES = {"outcrop_training": 1.0}
MAX_INPUT_BYTES = 256 * 2**20
"""What a job may ship to its node through Ray's object store (training data is small;
model weights never travel this way)."""
STALE_WATCHER_S = 30.0
"""A watcher that has not polled for this long is gone: another runner may take over."""
LOG_TAIL_BYTES = 64 * 1024
MARK = ".outcrop-actor"
"""Written by the actor into its work dir: when the runner finds the same mark in its own
work dir, both are one folder (one machine, a shared disk) and nothing is copied."""
ORPHAN_AFTER_S = 3600.0
"""An actor whose worker ended and that nobody polled for this long exits by itself (its
API replicas are gone for good, e.g. the application was deleted): it would otherwise hold
its training node's resources forever. The job, still RUNNING in the records, is queued
again by the next outcrop start."""
CALL_TIMEOUT_S = 3.0
"""A job actor answers at once; one that does not is still waiting for a node."""


def actor_name(job_id: str) -> str:
    return f"outcrop-job-{job_id}"


def describe_node(node: Mapping[str, Any]) -> str:
    return f"node {node.get('id')} (host {node.get('host')}, {node.get('ip')})"


def fitting_nodes(nodes: Iterable[Mapping[str, Any]], demand: Mapping[str, float]) -> list[str]:
    """IDs of the live nodes (``ray.nodes()`` entries) whose totals cover ``demand``."""
    out = []
    for node in nodes:
        have = node.get("Resources") or {}
        if node.get("Alive") and all(have.get(k, 0) >= v for k, v in demand.items() if v > 0):
            out.append(str(node.get("NodeID")))
    return out


def gather_inputs(
    work: Path, names: Iterable[str], limit: int = MAX_INPUT_BYTES
) -> dict[str, bytes]:
    """The service's input files for the worker, by name (absent optional ones skipped)."""
    out: dict[str, bytes] = {}
    total = 0
    for name in names:
        path = work / name
        if not path.is_file():
            continue
        total += path.stat().st_size
        if total > limit:
            raise files.JobFailure(
                f"The job's input files exceed {limit // 2**20} MiB, too much to ship to a "
                "training node; use a smaller data set."
            )
        out[name] = path.read_bytes()
    return out


def apply_report(report: Mapping[str, Any], work: Path) -> None:
    """Write what a remote worker reported into the job's local work dir (unless that is
    the worker's own folder, which copying into would race with its writes)."""
    work.mkdir(parents=True, exist_ok=True)
    try:
        shared = bool(report.get("mark")) and (work / MARK).read_text() == report["mark"]
    except OSError:
        shared = False
    if shared:
        return
    for name, data in (report.get("json") or {}).items():
        if data is None:
            (work / name).unlink(missing_ok=True)
        else:
            files.write_json(work / name, data)
    for name, text in (report.get("text") or {}).items():
        tmp = work / f".{name}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, work / name)


def this_node() -> dict[str, Any]:
    """The Ray node this process runs on: its ID, host name and address."""
    import ray

    return {
        "id": ray.get_runtime_context().get_node_id(),
        "host": socket.gethostname(),
        "ip": ray.util.get_node_ip_address(),
    }


def _safe_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or name.startswith("."):
        raise ValueError(f"not a plain file name: {name!r}")
    return name


class JobActor:
    """One job's worker process on this node (a detached Ray actor, see the module)."""

    def __init__(
        self,
        job_id: str,
        module: str,
        env: dict[str, str],
        work_dir: str,
        inputs: dict[str, bytes],
        reports: tuple[str, ...],
        owner: str,
    ) -> None:
        self.job_id = job_id
        self.work = Path(work_dir)
        self.reports = tuple(reports)
        self.node = this_node()
        self.watcher: str | None = owner
        self.last_poll = time.monotonic()
        self.sent: dict[str, tuple[int, int]] = {}
        self.failure: str | None = None
        self.process: subprocess.Popen | None = None
        self.mark = f"{self.node['id']}:{os.getpid()}:{time.time_ns()}"
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            (self.work / MARK).write_text(self.mark)
            files.write_json(self.work / files.NODE, self.node)
            for stale in (files.RESULT, files.ERROR):
                (self.work / stale).unlink(missing_ok=True)
            for name, data in inputs.items():
                path = self.work / _safe_name(name)
                tmp = path.with_name(f".{name}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            with open(self.work / files.LOG, "ab") as log_file:
                log_file.write(
                    f"outcrop: job {job_id} runs on {describe_node(self.node)} "
                    f"in {self.work}\n".encode()
                )
                log_file.flush()
                self.process = subprocess.Popen(
                    [sys.executable, "-m", module, str(self.work)],
                    stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env={**os.environ, **env}, cwd=self.work,
                )  # fmt: skip
        except (OSError, ValueError) as exc:
            self.failure = f"The job could not be started on {describe_node(self.node)}: {exc}"
        threading.Thread(target=self._watchdog, name="outcrop-job-watchdog", daemon=True).start()

    def orphaned(self, orphan_after_s: float = ORPHAN_AFTER_S) -> bool:
        """Whether this actor should go: its worker ended and nobody asks any more."""
        ended = self.process is None or self.process.poll() is not None
        return ended and time.monotonic() - self.last_poll > orphan_after_s

    def _watchdog(self) -> None:
        while not self.orphaned():
            time.sleep(min(60.0, ORPHAN_AFTER_S / 10))
        log.warning("job %s: nobody polled its finished worker; the actor exits", self.job_id)
        os._exit(0)

    # -- who watches it -------------------------------------------------------------
    def _take(self, owner: str) -> None:
        if owner != self.watcher:
            self.sent.clear()  # a new watcher gets every file once
        self.watcher = owner
        self.last_poll = time.monotonic()

    def claim(self, owner: str, force: bool, stale_s: float = STALE_WATCHER_S) -> bool:
        """Become the job's watcher unless another one polled it lately."""
        if force or self.watcher in (None, owner) or time.monotonic() - self.last_poll > stale_s:
            self._take(owner)
            return True
        return False

    def release(self, owner: str) -> None:
        if self.watcher == owner:
            self.watcher = None

    # -- what the runner asks -------------------------------------------------------
    def poll(self, owner: str) -> dict[str, Any]:
        if self.watcher in (None, owner) or time.monotonic() - self.last_poll > STALE_WATCHER_S:
            self._take(owner)
        if self.failure is not None:
            return {
                "exit_code": -1, "node": self.node, "work_dir": str(self.work), "mark": None,
                "json": {
                    files.RESULT: None, files.ERROR: {"message": self.failure},
                    files.NODE: self.node,
                },
                "text": {},
            }  # fmt: skip
        code = self.process.poll() if self.process is not None else -1
        report: dict[str, Any] = {
            "exit_code": code,  # read before the files: once set, they are final
            "node": self.node,
            "work_dir": str(self.work),
            "mark": self.mark,
            "json": {
                name: files.read_json(self.work / name)
                for name in (files.PROGRESS, files.RESULT, files.ERROR, files.NODE)
            },
            "text": {},
        }
        for name in (*self.reports, files.LOG):
            text = self._changed(name)
            if text is not None:
                report["text"][name] = text
        return report

    def _changed(self, name: str) -> str | None:
        path = self.work / name
        try:
            st = path.stat()
        except OSError:
            return None
        mark = (st.st_size, st.st_mtime_ns)
        if self.sent.get(name) == mark:
            return None
        self.sent[name] = mark
        with path.open("rb") as f:
            if name == files.LOG and st.st_size > LOG_TAIL_BYTES:
                f.seek(st.st_size - LOG_TAIL_BYTES)
            return f.read().decode("utf-8", "replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()


class RayJobRun:
    """The runner's handle on a job actor: polled without blocking the runner's loop."""

    def __init__(self, actor: Any, work: Path, owner: str, launcher: RayJobLauncher,
                 demand: dict[str, float]) -> None:  # fmt: skip
        self.actor = actor
        self.work = work
        self.owner = owner
        self.launcher = launcher
        self.demand = demand
        self.returncode: int | None = None
        self.node: dict[str, Any] | None = None
        self.log = f"{work / files.LOG} (the tail of the log on the job's node)"
        self._pending: Any = None
        self._signalled = self._killed = False

    def poll(self) -> int | None:
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        if self._pending is None:
            self._pending = self.actor.poll.remote(self.owner)
        ready, _ = ray.wait([self._pending], timeout=0)
        if not ready:
            return None  # not scheduled yet (waiting for a node's resources) or busy
        ref, self._pending = self._pending, None
        try:
            report = ray.get(ref)
        except ActorUnavailableError:
            return None  # a transient network problem: ask again
        except RayActorError as exc:
            raise self._lost(exc) from exc
        self.node = report.get("node")
        apply_report(report, self.work)
        if self.node:
            self.log = (
                f"{report.get('work_dir')}/{files.LOG} on {describe_node(self.node)} "
                f"(its tail: {self.work / files.LOG})"
            )
        self.returncode = report.get("exit_code")
        return self.returncode

    def _lost(self, exc: BaseException) -> WorkerLost:
        import ray

        nodes = ray.nodes()
        alive = {n.get("NodeID") for n in nodes if n.get("Alive")}
        if self.node is None:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = f"The Ray actor running the job died before it reported ({first})."
        elif self.node.get("id") not in alive:
            message = f"The job's {describe_node(self.node)} was lost while the job ran."
        else:
            message = f"The Ray actor running the job on {describe_node(self.node)} died."
        return WorkerLost(message, resumable=bool(fitting_nodes(nodes, self.demand)))

    def terminate(self) -> None:
        if not self._signalled:
            self._signalled = True
            self.actor.stop.remote()

    def kill(self) -> None:
        if not self._killed:  # once: calls queue up at an actor still waiting for a node
            self._killed = True
            self.actor.kill.remote()

    def release(self) -> None:
        import ray

        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            pass

    def interrupt(self) -> None:
        """The server closes: the worker keeps running; the next runner re-attaches."""
        import ray

        try:
            ray.get(self.actor.release.remote(self.owner), timeout=CALL_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - then its claim goes stale instead
            pass


_actor_class: Any = None


def _remote_actor() -> Any:
    global _actor_class
    if _actor_class is None:
        import ray

        _actor_class = ray.remote(JobActor)
    return _actor_class


class RayJobLauncher:
    """Starts ``process`` jobs as detached actors on nodes that offer ``resources``."""

    adopts = True

    def __init__(
        self,
        resources: Mapping[str, float] | None = None,
        work_root: Path | None = None,
        namespace: str = JOB_NAMESPACE,
    ) -> None:
        self.resources = dict(DEFAULT_JOB_RESOURCES if resources is None else resources)
        self.work_root = Path(work_root) if work_root else None
        self.namespace = namespace
        self._claims: dict[str, Any] = {}  # job ID -> a claim an unscheduled actor holds

    def demand(self, kind: JobKind) -> dict[str, float]:
        return {"CPU": float(kind.threads), **self.resources}

    def node_work_dir(self, job: JobRow, work: Path) -> Path:
        """The job's work dir on its node: the same path by default (one machine, or a
        shared data dir), else ``work_root/<kind>/<jobId>`` on every node."""
        if self.work_root is None:
            return work
        return self.work_root / job.kind / job.job_id

    def launch(self, job: JobRow, kind: JobKind, work: Path, owner: str) -> RayJobRun:
        import ray

        demand = self.demand(kind)
        if not fitting_nodes(ray.nodes(), demand):
            wanted = ", ".join(f"{k}={v:g}" for k, v in demand.items())
            raise files.JobFailure(
                f"no node of the Ray cluster offers {wanted}; start one with "
                f"ray start --resources='{json.dumps(self.resources)}'"
            )
        inputs = gather_inputs(work, kind.inputs)
        for stale in (files.RESULT, files.ERROR, files.NODE):  # NODE: a lost node's
            (work / stale).unlink(missing_ok=True)
        actor = (
            _remote_actor()
            .options(
                name=actor_name(job.job_id), namespace=self.namespace, lifetime="detached",
                get_if_exists=True,  # a worker handed back by a closing replica: re-attach
                num_cpus=kind.threads, resources=dict(self.resources), max_restarts=0,
            )
            .remote(job.job_id, str(kind.module), dict(kind.env),
                    str(self.node_work_dir(job, work)), inputs, tuple(kind.reports), owner)
        )  # fmt: skip
        return RayJobRun(actor, work, owner, self, demand)

    def attach(self, jobs: Sequence[Unwatched], owner: str) -> dict[str, RayJobRun | Watched]:
        """One round for all ``jobs``: which job actors exist (one listing), then every
        claim at once and one wait. An actor still waiting for a node does not answer
        yet: its claim is kept and read in a later round, not sent again."""
        import ray
        from ray.exceptions import RayActorError

        named = {
            a["name"]
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a.get("namespace") == self.namespace
        }
        wanted = {item.job.job_id for item in jobs}
        self._claims = {k: ref for k, ref in self._claims.items() if k in wanted}
        asked: dict[str, tuple[Unwatched, Any, Any]] = {}
        for item in jobs:
            job_id = item.job.job_id
            if actor_name(job_id) not in named:
                self._claims.pop(job_id, None)
                continue
            try:
                actor = ray.get_actor(actor_name(job_id), namespace=self.namespace)
            except ValueError:  # gone since the listing
                continue
            ref = self._claims.pop(job_id, None) or actor.claim.remote(owner, item.owner_dead)
            asked[job_id] = (item, actor, ref)
        if not asked:
            return {}
        refs = [ref for _, _, ref in asked.values()]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=CALL_TIMEOUT_S)
        done = set(ready)
        found: dict[str, RayJobRun | Watched] = {}
        for job_id, (item, actor, ref) in asked.items():
            if ref not in done:
                self._claims[job_id] = ref  # still waiting for a node: looked at later
                found[job_id] = WATCHED_ELSEWHERE
                continue
            try:
                claimed = ray.get(ref)
            except RayActorError:
                continue  # died: the job is recovered as without one
            found[job_id] = (
                RayJobRun(actor, item.work, owner, self, self.demand(item.kind))
                if claimed
                else WATCHED_ELSEWHERE
            )
        return found

    def discard(self, job_id: str) -> None:
        import ray

        self._claims.pop(job_id, None)
        try:
            actor = ray.get_actor(actor_name(job_id), namespace=self.namespace)
        except ValueError:
            return
        ray.kill(actor, no_restart=True)
