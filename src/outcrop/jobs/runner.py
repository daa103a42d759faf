"""Runs every kind of job: slots per kind, progress, stops, settling, and recovery.

A poll thread launches QUEUED jobs into free slots of their kind (never two with the same
lock key at once), copies progress, enforces stop requests and settles jobs that ended.
``process`` jobs are worker processes (SIGTERM on stop, SIGKILL after a grace period),
started by a launcher: a child of this server by default, a detached Ray actor on a
training node on a cluster (:mod:`outcrop.scale.jobs`); ``inline`` jobs are threads that
poll ``should_stop()``.

On start, what a previous server left is recovered: a job with a stop request becomes
STOPPED; a RUNNING process job whose worker left a result or an error is settled from it;
any other RUNNING job is queued again to resume from its checkpoint, or FAILED with the
reason once it has been started ``max_attempts`` times. Nothing is forgotten. A launcher
whose workers outlive their server (Ray) is asked first: a live worker is watched again,
never started twice, and a worker whose node died is queued again or failed the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcrop.jobs import files
from outcrop.jobs.kinds import JobContext, JobKind
from outcrop.jobs.launch import (
    Launcher,
    LocalLauncher,
    Unwatched,
    Watched,
    WorkerHandle,
    WorkerLost,
    after_loss,
)
from outcrop.jobs.records import ACTIVE, FAILED, QUEUED, RUNNING, STOPPED, SUCCEEDED, JobRow
from outcrop.jobs.store import JobStore

log = logging.getLogger("outcrop.jobs")

STOP_GRACE_S = 3.0
ADOPT_EVERY_S = 10.0
"""How often a runner whose launcher's workers outlive their server looks for running
jobs nobody watches any more (their server died on another host)."""


@dataclass
class _Running:
    job_id: str
    kind: JobKind
    process: WorkerHandle | None = None
    thread: threading.Thread | None = None
    context: JobContext | None = None
    outcome: tuple[str, Any] | None = None  # inline: ("result", dict) | ("error", message)
    stop_sent: float | None = None
    interrupted: bool = field(default=False)


class JobRunner:
    def __init__(
        self, store: JobStore, poll_interval: float = 0.5, launcher: Launcher | None = None
    ) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.launcher: Launcher = launcher or LocalLauncher()
        self._adopted_at = time.monotonic()
        self.kinds: dict[str, JobKind] = {}
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def register(self, kind: JobKind) -> None:
        self.kinds[kind.name] = kind

    # ------------------------------------------------------------------ lifecycle

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Recover jobs a previous server left, then start polling.

        ``loop`` is the server's event loop, which inline jobs reach through ``ctx.call``.
        """
        self.loop = loop
        orphans: list[JobRow] = []
        for job in self.store.of_kind(states=ACTIVE):
            kind = self.kinds.get(job.kind)
            if kind is None:
                continue  # a kind this server does not run: left for one that does
            if job.stop_requested_at is not None:
                self._end(job.job_id, STOPPED, None, expect=ACTIVE, discard=True)
            elif job.state == RUNNING and not _alive_elsewhere(job.owner, self.owner):
                orphans.append(job)
        found = self._attach(orphans)
        for job in orphans:
            if job.job_id not in found:
                self._recover(job, self.kinds[job.kind])
        self._thread = threading.Thread(target=self._loop, name="outcrop-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling and interrupt running jobs: they are queued again, to resume later."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for run in self._running.values():
                run.interrupted = True
                if run.process is not None:
                    run.process.interrupt()
                elif run.context is not None:
                    run.context._stop.set()
            for run in self._running.values():
                if run.thread is not None:
                    run.thread.join(timeout=10)
                job = self.store.get(run.job_id)
                if job is not None and job.state == RUNNING and job.stop_requested_at is None:
                    # Not the job's fault: this start does not count against its attempts.
                    self.store.transition(
                        run.job_id, QUEUED, [RUNNING], attempts=max(0, job.attempts - 1)
                    )
            self._running.clear()

    # ------------------------------------------------------------------ control

    def stop(self, job_id: str) -> bool:
        """Ask a job to stop; False if it had already ended. A queued job stops at once."""
        if not self.store.request_stop(job_id):
            return False
        with self._lock:
            run = self._running.get(job_id)
            if run is None:
                self._end(job_id, STOPPED, None, expect=[QUEUED], discard=True)
            else:
                self._signal_stop(run)
        return True

    def running(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._running

    def poll(self) -> None:
        """One round: progress, exits, stop requests, launches."""
        with self._lock:
            flagged = {
                j.job_id
                for j in self.store.many(self._running).values()
                if j.stop_requested_at is not None
            }
            for job_id, run in list(self._running.items()):
                if job_id in flagged and run.stop_sent is None:
                    self._signal_stop(run)
                try:
                    ended = self._ended(run)
                except WorkerLost as lost:
                    del self._running[job_id]
                    self._lost(run, lost)
                    continue
                if not ended:
                    if run.process is not None:
                        if run.stop_sent and time.monotonic() - run.stop_sent > STOP_GRACE_S:
                            run.process.kill()
                        self._copy_progress(job_id)
                    continue
                del self._running[job_id]
                self._settle(run)
            self._launch_waiting()
        if self.launcher.adopts and time.monotonic() - self._adopted_at > ADOPT_EVERY_S:
            self._adopted_at = time.monotonic()
            self._adopt()  # outside the lock: it may wait a moment for the launcher

    # ------------------------------------------------------------------ internals

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("job poll failed")
            self._closing.wait(self.poll_interval)

    def _attach(self, jobs: list[JobRow]) -> set[str]:
        """Watch the live workers of ``jobs`` (RUNNING, their server gone) instead of
        recovering them, all in one round; the IDs of those that have one (watched here
        now, or by another live server)."""
        wanted = [
            Unwatched(job, kind, Path(job.work_dir or "."), _owner_dead(job.owner, self.owner))
            for job in jobs
            if (kind := self.kinds[job.kind]).executor == "process"
        ]
        if not wanted or not self.launcher.adopts:
            return set()
        try:
            found = self.launcher.attach(wanted, self.owner)
        except Exception:  # noqa: BLE001 - then the jobs are recovered as without one
            log.exception("could not look for the workers of %d running jobs", len(wanted))
            return set()
        with self._lock:
            for item in wanted:
                handle = found.get(item.job.job_id)
                if handle is None or isinstance(handle, Watched):
                    continue
                job = item.job
                if not self.store.set_owner(job.job_id, self.owner, expect=job.owner):
                    handle.interrupt()  # another server took it over first
                    continue
                self._running[job.job_id] = _Running(job.job_id, item.kind, handle)
                log.info("%s job %s: watching its running worker again", job.kind, job.job_id)
        return set(found)

    def _adopt(self) -> None:
        """Running jobs whose server is gone but whose worker lives on: watch them."""
        self._attach(
            [
                job
                for job in self.store.of_kind(states=[RUNNING])
                if job.kind in self.kinds
                and job.job_id not in self._running
                and job.owner != self.owner
                and not _alive_elsewhere(job.owner, self.owner)  # watched by its live server
            ]
        )  # a stop request is enforced once watched

    def _lost(self, run: _Running, lost: WorkerLost) -> None:
        """A worker whose node died: queued again to start elsewhere, or failed."""
        try:
            run.process.release()  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001
            log.exception("job %s: releasing its lost worker failed", run.job_id)
        job = self.store.get(run.job_id)
        if job is None:
            return
        state, message = after_loss(
            lost, job.attempts, run.kind.max_attempts, job.stop_requested_at is not None
        )
        log.warning("%s job %s: %s -> %s", run.kind.name, run.job_id, lost.message, state)
        if state == QUEUED:
            self.store.transition(run.job_id, QUEUED, [RUNNING])
        else:
            self._end(run.job_id, state, message)

    def _recover(self, job: JobRow, kind: JobKind) -> None:
        work = Path(job.work_dir) if job.work_dir else None
        if kind.executor == "process" and work is not None:
            if (work / files.RESULT).exists() or (work / files.ERROR).exists():
                self._settle(_Running(job.job_id, kind))  # finished while nobody watched
                return
        if job.attempts >= kind.max_attempts:
            self._end(
                job.job_id, FAILED,
                f"The job was interrupted {job.attempts} times (the server stopped while it "
                "ran) and is not started again.",
                expect=[RUNNING],
            )  # fmt: skip
            return
        log.info("%s job %s: resuming after a restart", job.kind, job.job_id)
        self.store.transition(job.job_id, QUEUED, [RUNNING])

    def _launch_waiting(self) -> None:
        queued = self.store.of_kind(states=[QUEUED])
        if not queued:
            return
        locks = {
            j.lock_key for j in self.store.many(self._running).values() if j.lock_key is not None
        }
        for job in queued:
            kind = self.kinds.get(job.kind)
            if kind is None or self._closing.is_set():
                continue
            if job.stop_requested_at is not None:
                self._end(job.job_id, STOPPED, None, expect=[QUEUED], discard=True)
                continue
            busy = sum(1 for r in self._running.values() if r.kind.name == kind.name)
            if busy >= kind.max_running or (job.lock_key and job.lock_key in locks):
                continue
            if not self.store.transition(
                job.job_id, RUNNING, [QUEUED], attempts=job.attempts + 1, owner=self.owner
            ):
                continue
            if job.lock_key:
                locks.add(job.lock_key)
            try:
                self._launch(job, kind)
            except Exception as exc:  # noqa: BLE001 - a launch failure fails the job
                if isinstance(exc, files.JobFailure):  # the launcher's reason, for the user
                    log.warning("%s job %s: not started: %s", kind.name, job.job_id, exc)
                else:
                    log.exception("%s job %s: launch failed", kind.name, job.job_id)
                self._end(
                    job.job_id, FAILED, f"The job could not be started: {exc}", [RUNNING],
                    discard=True,  # a worker handed back while it was queued, if any
                )  # fmt: skip

    def _launch(self, job: JobRow, kind: JobKind) -> None:
        if kind.executor == "process":
            work = Path(job.work_dir or ".")
            handle = self.launcher.launch(job, kind, work, self.owner)
            self._running[job.job_id] = _Running(job.job_id, kind, handle)
            log.info("%s job %s: worker started", kind.name, job.job_id)
            return
        ctx = JobContext(
            job.job_id,
            Path(job.work_dir) if job.work_dir else None,
            job.attempts + 1,
            lambda values, jid=job.job_id: self.store.set_progress(jid, values),
            self.loop,
        )
        run = _Running(job.job_id, kind, context=ctx)

        def target() -> None:
            try:
                run.outcome = ("result", kind.run(ctx) or {})  # type: ignore[misc]
            except files.JobFailure as exc:
                run.outcome = ("error", str(exc))
            except Exception as exc:  # noqa: BLE001 - the job fails, the server does not
                log.error("%s job %s failed:\n%s", kind.name, job.job_id, traceback.format_exc())
                run.outcome = ("error", f"Internal error in the {kind.name} job: {exc!r}")

        run.thread = threading.Thread(target=target, name=f"job-{job.job_id}", daemon=True)
        self._running[job.job_id] = run
        run.thread.start()

    def _signal_stop(self, run: _Running) -> None:
        run.stop_sent = time.monotonic()
        if run.process is not None:
            run.process.terminate()
        elif run.context is not None:
            run.context._stop.set()

    @staticmethod
    def _ended(run: _Running) -> bool:
        if run.process is not None:
            return run.process.poll() is not None
        return run.thread is None or not run.thread.is_alive()

    def _copy_progress(self, job_id: str) -> None:
        job = self.store.get(job_id)
        if job is None or not job.work_dir:
            return
        work = Path(job.work_dir)
        progress = files.read_json(work / files.PROGRESS)
        node = files.read_json(work / files.NODE)
        if progress and node:
            progress["node"] = node  # a worker on another machine: which one
        if progress:
            self.store.set_progress(job_id, progress)

    def _settle(self, run: _Running) -> None:
        """Decide a job's end from what its run left: a result wins over a late stop."""
        job = self.store.get(run.job_id)
        if job is None:
            return
        result: dict[str, Any] | None = None
        message: str | None = None
        if run.kind.executor == "process":
            if run.process is not None:
                run.process.release()
            self._copy_progress(run.job_id)
            work = Path(job.work_dir or ".")
            result = files.read_json(work / files.RESULT)
            error = files.read_json(work / files.ERROR)
            if result is None and error is not None:
                message = str(error.get("message"))
            elif result is None and job.stop_requested_at is None:
                code = run.process.returncode if run.process is not None else None
                message = (
                    f"The {run.kind.name} worker exited unexpectedly (exit code {code}); "
                    f"its log is {run.process.log if run.process else work / files.LOG}."
                )
        elif run.outcome is not None:
            kind_of, value = run.outcome
            if kind_of == "result" and not (job.stop_requested_at and run.context.should_stop()):
                result = value
            elif kind_of == "error":
                message = value
        if result is not None:
            try:
                if run.kind.on_succeeded is not None:
                    run.kind.on_succeeded(job, result)
            except Exception as exc:  # noqa: BLE001
                log.exception("%s job %s: on_succeeded failed", run.kind.name, job.job_id)
                self._end(job.job_id, FAILED, f"The job's result could not be kept: {exc}")
                return
            self.store.transition(job.job_id, SUCCEEDED, [RUNNING])
        elif message is not None:
            self._end(job.job_id, FAILED, message)
        else:
            self._end(job.job_id, STOPPED, None)

    def _end(
        self,
        job_id: str,
        state: str,
        message: str | None,
        expect: Any = (RUNNING,),
        discard: bool = False,
    ) -> None:
        """``discard``: the job ends while no handle here watches its worker, which may
        live on all the same (a stop while nobody watched, a worker a closing server
        handed back): the launcher ends it. A watched worker was released already."""
        if not self.store.transition(job_id, state, expect, failure_message=message):
            return
        job = self.store.get(job_id)
        kind = self.kinds.get(job.kind) if job else None
        if discard and kind is not None and kind.executor == "process" and self.launcher.adopts:
            try:
                self.launcher.discard(job_id)
            except Exception:  # noqa: BLE001
                log.exception("job %s: discarding its worker failed", job_id)
        if job is not None and kind is not None and kind.on_ended is not None:
            try:
                kind.on_ended(job)
            except Exception:  # noqa: BLE001
                log.exception("%s job %s: on_ended failed", job.kind, job_id)


def _owner_dead(owner: str | None, me: str) -> bool:
    """Whether the job's owner is known to be gone: an earlier process on this host."""
    if not owner or owner == me:
        return True
    host, _, pid = owner.rpartition(":")
    return host == socket.gethostname() and not _alive_elsewhere(owner, me)


def _alive_elsewhere(owner: str | None, me: str) -> bool:
    """Whether another live process on this host runs the job (``outcrop models import``
    runs its import itself): recovering it would run it twice."""
    if not owner or owner == me:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
