"""Where a ``process`` job's worker runs: the runner asks a launcher, then watches a handle.

The default, :class:`LocalLauncher`, starts ``python -m MODULE WORK_DIR`` as a child of
this server. Another launcher (Ray: :mod:`outcrop.scale.jobs`) runs the same worker
elsewhere and copies what it reports back into the local work dir, so the runner reads
and settles every job the same way.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

from outcrop.jobs import files
from outcrop.jobs.kinds import JobKind
from outcrop.jobs.records import FAILED, QUEUED, STOPPED, JobRow


class WorkerLost(Exception):
    """The machine (or process) running a worker went away while it ran.

    ``resumable``: whether the job can be started again elsewhere."""

    def __init__(self, message: str, resumable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.resumable = resumable


class WorkerHandle(Protocol):
    """A running worker, as the runner sees it."""

    returncode: int | None
    log: str
    """Where the worker's log is, for failure messages."""

    def poll(self) -> int | None:
        """The exit code once it ended (its files are in the local work dir by then);
        raises :class:`WorkerLost` when the worker can no longer be reached."""

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def release(self) -> None:
        """After the job settled: free what the run holds."""

    def interrupt(self) -> None:
        """This server is closing: stop watching (the job is queued again)."""


class Watched:
    """``attach``'s answer when another live server watches the job's worker (or it
    does not answer yet: still waiting for a node)."""


WATCHED_ELSEWHERE = Watched()


@dataclass(frozen=True)
class Unwatched:
    """A RUNNING job this server may watch, if its worker lives on.

    ``owner_dead``: the job's recorded owner is known to be gone, so any other watcher
    is stale."""

    job: JobRow
    kind: JobKind
    work: Path
    owner_dead: bool


class Launcher(Protocol):
    adopts: bool
    """Whether running workers can outlive their server, to be attached to later."""

    def launch(self, job: JobRow, kind: JobKind, work: Path, owner: str) -> WorkerHandle: ...

    def attach(self, jobs: Sequence[Unwatched], owner: str) -> dict[str, WorkerHandle | Watched]:
        """The live workers of ``jobs``, by job ID: a handle to watch from now on, or
        WATCHED_ELSEWHERE; a job without one is absent. One round for all of them: the
        runner asks every few seconds."""

    def discard(self, job_id: str) -> None:
        """The job ended while no handle of this server watched it: end any worker of
        it that is still alive."""


class _LocalProcess:
    """A worker that is a child process of this server."""

    def __init__(self, process: subprocess.Popen, log_file: IO[bytes], log: Path) -> None:
        self.process = process
        self.log_file = log_file
        self.log = str(log)

    @property
    def returncode(self) -> int | None:  # type: ignore[override]
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        self.process.terminate()

    def kill(self) -> None:
        self.process.kill()

    def release(self) -> None:
        self.log_file.close()

    def interrupt(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        self.log_file.close()


class LocalLauncher:
    """Today's default: the worker is a subprocess of this server (it dies with it)."""

    adopts = False

    def launch(self, job: JobRow, kind: JobKind, work: Path, owner: str) -> WorkerHandle:
        for stale in (files.RESULT, files.ERROR, files.NODE):
            (work / stale).unlink(missing_ok=True)
        log_file = open(work / files.LOG, "ab")
        env = {**os.environ, **kind.env}
        process = subprocess.Popen(
            [sys.executable, "-m", str(kind.module), str(work)],
            stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        return _LocalProcess(process, log_file, work / files.LOG)

    def attach(self, jobs: Sequence[Unwatched], owner: str) -> dict[str, Any]:
        return {}  # a child process never outlives its server

    def discard(self, job_id: str) -> None:
        pass


def after_loss(
    lost: WorkerLost, attempts: int, max_attempts: int, stop_requested: bool
) -> tuple[str, str | None]:
    """A lost worker's job: (next state, failure message). Queued again while it may
    still be started (it resumes from its checkpoint where its new work dir has one)."""
    if stop_requested:
        return STOPPED, None
    if not lost.resumable:
        return FAILED, f"{lost.message} No node left can run it, so it is not started again."
    if attempts >= max_attempts:
        return (
            FAILED,
            f"{lost.message} The job was started {attempts} times and is not started again.",
        )
    return QUEUED, None
