"""What a kind of job declares to the runner."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from outcrop.jobs.records import JobRow

T = TypeVar("T")


@dataclass
class JobContext:
    """What an ``inline`` job's run sees: where it works, how it reports, when to stop."""

    job_id: str
    work_dir: Path | None
    attempt: int
    _report: Callable[[dict[str, Any]], None]
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def progress(self, **values: Any) -> None:
        self._report(values)

    def should_stop(self) -> bool:
        return self._stop.is_set()

    def call(self, work: Awaitable[T], timeout: float | None = None) -> T:
        """Run a coroutine on the server's event loop (where the engines live) and wait."""
        if self._loop is None:
            raise RuntimeError("this job runs without the server's event loop")
        return asyncio.run_coroutine_threadsafe(work, self._loop).result(timeout)  # type: ignore[arg-type]


@dataclass(frozen=True)
class JobKind:
    """A kind of job, registered with the runner by ``name``.

    ``process``: ``python -m {module} WORK_DIR`` per job, reporting through
    :mod:`outcrop.jobs.files`; for work that must not share the server's process (PyTorch
    training, model conversion). ``inline``: ``run(ctx)`` on a thread of the server, for
    work that needs the loaded engines (ingestion, batch); it returns the result dict,
    raises :class:`~outcrop.jobs.files.JobFailure` with a message for the user, and polls
    ``ctx.should_stop()``.

    Either way the job restarts from its own checkpoint after a server restart, up to
    ``max_attempts`` starts; ``on_succeeded`` (with the result) runs before the job is
    marked SUCCEEDED, ``on_ended`` after any other terminal state.
    """

    name: str
    executor: Literal["process", "inline"]
    module: str | None = None
    run: Callable[[JobContext], dict[str, Any]] | None = None
    max_running: int = 1
    max_attempts: int = 3
    env: dict[str, str] = field(default_factory=dict)
    on_succeeded: Callable[[JobRow, dict[str, Any]], None] | None = None
    on_ended: Callable[[JobRow], None] | None = None
    threads: int = 1
    """Cores a ``process`` worker uses (a launcher on a cluster reserves them)."""
    inputs: tuple[str, ...] = ("spec.json",)
    """Files the service writes into the work dir for the worker (small: a launcher on
    a cluster ships them to the worker's node)."""
    reports: tuple[str, ...] = ()
    """Small files the worker appends to and the server reads besides progress, result
    and error (copied back from a worker on another node)."""

    def __post_init__(self) -> None:
        if self.executor == "process" and not self.module:
            raise ValueError(f"job kind {self.name}: a process executor needs a module")
        if self.executor == "inline" and self.run is None:
            raise ValueError(f"job kind {self.name}: an inline executor needs run")
