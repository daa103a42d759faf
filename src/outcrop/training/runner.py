"""Supervises training workers from the server process.

One worker process per running job (``python -m outcrop.training.worker JOB_DIR``), at most
``max_running`` at once; the rest wait their turn. A poll thread copies each worker's
``progress.json`` into the database and, when a worker exits, settles the job from what it
left: ``result.json`` (Completed: the model is registered), ``error.json`` (Failed, with
its message), a stop request (Stopped) or nothing (Failed, with the exit code).

On start, jobs the database still calls InProgress are resumed from their last checkpoint
(or settled, if their worker finished while no server was watching); Stopping becomes
Stopped. Nothing is forgotten.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from outcrop.training import worker as files
from outcrop.training.records import CustomModelRecord, Database, JobRecord

log = logging.getLogger("outcrop.training")

STOP_GRACE_S = 3.0


@dataclass
class _Running:
    job_id: str
    process: subprocess.Popen
    log_file: object
    stop_requested: float | None = None


class JobRunner:
    def __init__(
        self,
        db: Database,
        on_completed: Callable[[JobRecord, CustomModelRecord], None],
        threads: int = 1,
        max_running: int = 1,
        poll_interval: float = 0.5,
    ) -> None:
        self.db = db
        self.on_completed = on_completed
        self.threads = threads
        self.max_running = max_running
        self.poll_interval = poll_interval
        self._running: dict[str, _Running] = {}
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Recover jobs left by a previous server, then start polling."""
        for job in self.db.jobs():
            if job.status == "Stopping":
                self._settle(job.job_id, "Stopped", None)
            elif job.status == "InProgress":
                work = Path(job.work_dir)
                if (work / files.RESULT).exists() or (work / files.ERROR).exists():
                    self._finish(job.job_id, exit_code=None)
                else:
                    log.info("job %s: resuming after a restart", job.job_name)
        self._thread = threading.Thread(target=self._loop, name="outcrop-jobs", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling and end the workers; their jobs stay InProgress and resume later."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for run in self._running.values():
                run.process.kill()
                run.process.wait(timeout=10)
                run.log_file.close()
            self._running.clear()

    # ------------------------------------------------------------------ control

    def stop(self, job_id: str) -> None:
        """Ask a job to stop: its worker gets SIGTERM now and SIGKILL after a grace period."""
        with self._lock:
            run = self._running.get(job_id)
            if run is None:
                self._settle(job_id, "Stopped", None)
                return
            run.stop_requested = time.monotonic()
            run.process.terminate()

    def poll(self) -> None:
        """One round: progress, exits, stop deadlines, queued launches."""
        with self._lock:
            for job_id, run in list(self._running.items()):
                code = run.process.poll()
                if code is None:
                    if run.stop_requested and time.monotonic() - run.stop_requested > STOP_GRACE_S:
                        run.process.kill()
                    self._copy_progress(job_id)
                    continue
                run.log_file.close()
                del self._running[job_id]
                if run.stop_requested is not None:
                    self._settle(job_id, "Stopped", None)
                else:
                    self._finish(job_id, code)
            self._launch_waiting()

    # ------------------------------------------------------------------ internals

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                self.poll()
            except Exception:
                log.exception("job poll failed")
            self._closing.wait(self.poll_interval)

    def _launch_waiting(self) -> None:
        if len(self._running) >= self.max_running:
            return
        waiting = sorted(
            (
                j
                for j in self.db.jobs()
                if j.status == "InProgress" and j.job_id not in self._running
            ),
            key=lambda j: j.creation_time,
        )
        for job in waiting[: self.max_running - len(self._running)]:
            self._launch(job)

    def _launch(self, job: JobRecord) -> None:
        work = Path(job.work_dir)
        for stale in (files.RESULT, files.ERROR):
            (work / stale).unlink(missing_ok=True)
        log_file = open(work / "worker.log", "ab")
        env = {
            **os.environ,
            "OMP_NUM_THREADS": str(self.threads),
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "outcrop.training.worker", str(work)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        self._running[job.job_id] = _Running(job.job_id, process, log_file)
        log.info("job %s: worker %d started", job.job_name, process.pid)

    def _copy_progress(self, job_id: str) -> None:
        job = self.db.job_by_id(job_id)
        if job is None:
            return
        progress = files.read_json(Path(job.work_dir) / files.PROGRESS)
        if progress and progress != job.progress:
            values: dict = {"progress": progress}
            if progress.get("loss") is not None:
                values["training_loss"] = progress["loss"]
            if progress.get("validation_loss") is not None:
                values["validation_losses"] = [progress["validation_loss"]]
            self.db.update_job(job_id, **values)

    def _finish(self, job_id: str, exit_code: int | None) -> None:
        job = self.db.job_by_id(job_id)
        if job is None:
            return
        work = Path(job.work_dir)
        self._copy_progress(job_id)
        result = files.read_json(work / files.RESULT)
        if result is not None and Path(result["path"]).exists():
            model = self.db.update_model(job.model_id, status="Active", path=result["path"])
            job = self.db.update_job(
                job_id,
                status="Completed",
                end_time=time.time(),
                training_loss=result.get("training_loss"),
                validation_losses=result.get("validation_losses") or [],
            )
            if model is not None and job is not None:
                self.on_completed(job, model)
            return
        error = files.read_json(work / files.ERROR)
        if error is not None:
            message = str(error.get("message"))
        else:
            message = (
                f"The training worker exited unexpectedly (exit code {exit_code}); "
                f"its log is {work / 'worker.log'}."
            )
        self._settle(job_id, "Failed", message)

    def _settle(self, job_id: str, status: str, message: str | None) -> None:
        job = self.db.update_job(
            job_id, status=status, failure_message=message, end_time=time.time()
        )
        if job is None:
            return
        model_message = message or "The customization job was stopped."
        self.db.update_model(job.model_id, status="Failed", failure_message=model_message)
