"""Runs ingestion jobs as asyncio tasks inside the server, one per data source at a time.

Kept in one module so it can be swapped for the shared job machinery (``outcrop.jobs``)
without touching the rest: it needs only ``submit``, ``request_stop``, ``stop_and_wait``
and ``resume``.

States: STARTING (queued) -> IN_PROGRESS -> COMPLETE | FAILED | STOPPED; a stop request
moves a live job to STOPPING. Every transition is a conditional update (the expected
states are checked inside the transaction), so a stop that races the job's end cannot
resurrect a finished job. On restart, STOPPING jobs become STOPPED and STARTING or
IN_PROGRESS ones run again from the documents table (see :mod:`.ingest`), up to
``MAX_ATTEMPTS`` times.

The task runs on the server's event loop (the embedding model is shared with live
requests and batched with them); parsing, chunking and SQLite writes go to threads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from outcrop.knowledge.ingest import Stopped
from outcrop.knowledge.records import IngestionJobRecord, KnowledgeDatabase

log = logging.getLogger("outcrop.knowledge")

TERMINAL = ("COMPLETE", "FAILED", "STOPPED")
MAX_ATTEMPTS = 3

JobWork = Callable[[IngestionJobRecord, Callable[[], bool]], Awaitable[None]]


class IngestionRunner:
    def __init__(self, db: KnowledgeDatabase, work: JobWork) -> None:
        self.db = db
        self.work = work
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop: set[str] = set()

    # ------------------------------------------------------------------ state

    def transition(self, job_id: str, to: str, expect: tuple[str, ...], **values) -> bool:  # noqa: ANN003
        """Move the job to ``to`` if it is in one of ``expect``; False on a lost race."""
        with self.db.session() as s:
            job = s.get(IngestionJobRecord, job_id)
            if job is None or job.status not in expect:
                return False
            job.status = to
            job.updated_at = time.time()
            for k, v in values.items():
                setattr(job, k, v)
            return True

    def running(self, job_id: str) -> bool:
        task = self._tasks.get(job_id)
        return task is not None and not task.done()

    # ------------------------------------------------------------------ control

    def submit(self, job_id: str) -> None:
        """Start the job now (call on the event loop)."""
        task = asyncio.get_running_loop().create_task(self._run(job_id))
        self._tasks[job_id] = task
        task.add_done_callback(lambda _t: self._tasks.pop(job_id, None))

    def request_stop(self, job_id: str) -> None:
        self._stop.add(job_id)
        if not self.transition(job_id, "STOPPING", ("IN_PROGRESS",), stop_requested=True):
            # Not running yet (or never will be on this server): stopped at once.
            self.transition(job_id, "STOPPED", ("STARTING",), stop_requested=True)

    async def stop_and_wait(self, job_id: str, timeout: float = 30.0) -> None:
        """Stop the job and wait for its task to end (cancelling it past ``timeout``)."""
        self.request_stop(job_id)
        task = self._tasks.get(job_id)
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        except Exception:  # the job's own failure is recorded by _run
            pass

    def resume(self) -> None:
        """After a restart: settle or rerun what the last server left unfinished."""
        for job in self.db.jobs():
            if job.status == "STOPPING":
                self.transition(job.job_id, "STOPPED", ("STOPPING",))
            elif job.status in ("STARTING", "IN_PROGRESS"):
                if job.attempts >= MAX_ATTEMPTS:
                    self.transition(
                        job.job_id, "FAILED", ("STARTING", "IN_PROGRESS"),
                        failure_reasons=[*job.failure_reasons,
                                         f"The job was interrupted {job.attempts} times."],
                    )  # fmt: skip
                else:
                    log.info("ingestion job %s: resuming after a restart", job.job_id)
                    self.submit(job.job_id)

    async def close(self) -> None:
        """Cancel running tasks; their jobs stay IN_PROGRESS and resume on the next start."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ------------------------------------------------------------------ work

    async def _run(self, job_id: str) -> None:
        job = self.db.get(IngestionJobRecord, job_id)
        if job is None or job.status in TERMINAL or job.status == "STOPPING":
            if job is not None and job.status == "STOPPING":
                self.transition(job_id, "STOPPED", ("STOPPING",))
            return
        self.transition(
            job_id, "IN_PROGRESS", ("STARTING", "IN_PROGRESS"), attempts=job.attempts + 1
        )
        job = self.db.get(IngestionJobRecord, job_id)

        def should_stop() -> bool:
            return job_id in self._stop

        try:
            await self.work(job, should_stop)
        except Stopped:
            self.transition(job_id, "STOPPED", ("IN_PROGRESS", "STOPPING"))
        except asyncio.CancelledError:
            if job_id in self._stop:
                self.transition(job_id, "STOPPED", ("IN_PROGRESS", "STOPPING"))
            raise
        except Exception as exc:
            log.exception("ingestion job %s failed", job_id)
            current = self.db.get(IngestionJobRecord, job_id)
            reasons = list(current.failure_reasons) if current else []
            self.transition(
                job_id, "FAILED", ("IN_PROGRESS", "STOPPING"),
                failure_reasons=[*reasons, f"The ingestion failed: {exc}"],
            )  # fmt: skip
        else:
            if not self.transition(job_id, "COMPLETE", ("IN_PROGRESS",)):
                self.transition(job_id, "STOPPED", ("STOPPING",))
        finally:
            self._stop.discard(job_id)
