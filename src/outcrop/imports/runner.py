"""Runs import jobs in worker processes for the server (one at a time: a conversion uses
every core it is given, and serving keeps the rest).

A job belongs to the process that claimed it (``owner_pid``, a conditional update): this
server, or an ``outcrop models import`` in a terminal. A job whose owner is gone (a server
killed mid-import, a CLI closed) is claimed again and resumes from its last phase; nothing
InProgress is forgotten. When a worker exits, ``settle`` (the service's) turns its
``result.json`` / ``error.json`` into Completed or Failed.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from outcrop.imports.records import IN_PROGRESS, ImportDatabase
from outcrop.imports.work import PROGRESS, read_json

log = logging.getLogger("outcrop.imports")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class _Running:
    job_id: str
    process: subprocess.Popen
    log_file: object


class ImportRunner:
    def __init__(
        self,
        db: ImportDatabase,
        settle: Callable[[str, int | None], None],
        threads: int = 1,
        poll_interval: float = 0.5,
        tick: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.settle = settle
        self.tick = tick
        self.threads = threads
        self.poll_interval = poll_interval
        self.pid = os.getpid()
        self._running: _Running | None = None
        self._lock = threading.RLock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="outcrop-imports", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop polling and end the worker; its job stays InProgress and resumes later."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self._running is not None:
                self._running.process.kill()
                self._running.process.wait(timeout=10)
                self._running.log_file.close()
                self.db.release(self._running.job_id)
                self._running = None

    def poll(self) -> None:
        with self._lock:
            run = self._running
            if run is not None:
                code = run.process.poll()
                if code is None:
                    progress = read_json(Path(self._work_dir(run.job_id)) / PROGRESS)
                    if progress:
                        self.db.set_progress(run.job_id, progress)
                    return
                run.log_file.close()
                self._running = None
                self.settle(run.job_id, code)
            self._launch_next()

    def _work_dir(self, job_id: str) -> str:
        job = self.db.job_by_id(job_id)
        return job.work_dir if job is not None else ""

    def _loop(self) -> None:
        while not self._closing.is_set():
            try:
                self.poll()
                if self.tick is not None:
                    self.tick()
            except Exception:
                log.exception("import poll failed")
            self._closing.wait(self.poll_interval)

    def _launch_next(self) -> None:
        waiting = sorted(
            (
                j
                for j in self.db.jobs()
                if j.status == IN_PROGRESS
                and (j.owner_pid == self.pid or not pid_alive(j.owner_pid))
            ),
            key=lambda j: j.creation_time,
        )
        for job in waiting:
            if not self.db.claim(job.job_id, self.pid, job.owner_pid):
                continue  # a CLI got there first
            if job.attempts:
                log.info("import %s: resuming (its previous runner is gone)", job.job_name)
            work = Path(job.work_dir)
            log_file = open(work / "worker.log", "ab")
            env = {
                **os.environ,
                "OMP_NUM_THREADS": str(self.threads),
                "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1",
            }
            process = subprocess.Popen(
                [sys.executable, "-m", "outcrop.imports.worker", str(work)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            )  # fmt: skip
            self._running = _Running(job.job_id, process, log_file)
            log.info("import %s: worker %d started", job.job_name, process.pid)
            return
