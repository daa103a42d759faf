"""The file protocol between the runner and a ``process`` worker (``python -m MODULE DIR``).

The worker reads ``spec.json`` from its job folder and reports through files the runner
polls, each replaced atomically:

* ``progress.json`` — anything the kind wants to show (``phase`` becomes an event);
* ``result.json`` — written last, once the outcome is complete and durable;
* ``error.json`` — a failure the user can act on (``message`` is the failure message);
* ``node.json`` — the machine running the worker, written by a launcher that runs it on
  another one (a Ray actor); the runner adds it to the job's progress as ``node``.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
from pathlib import Path
from typing import Any

SPEC = "spec.json"
PROGRESS = "progress.json"
RESULT = "result.json"
ERROR = "error.json"
NODE = "node.json"
LOG = "worker.log"


class JobFailure(Exception):
    """A failure whose message is meant for the job's failure message as is."""


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def die_with_parent() -> None:
    """A killed server leaves no orphan worker: the next start resumes the job instead."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
