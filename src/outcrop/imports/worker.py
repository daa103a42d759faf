"""The import worker: ``python -m outcrop.imports.worker JOB_DIR``.

The ``model-import`` job kind's ``process`` executor: runs
:func:`outcrop.imports.work.run_import` and reports on :mod:`outcrop.jobs.files`' protocol:
``progress.json`` (replaced atomically), then ``result.json`` (written last, once the
model folder is installed and, with ``--model-bucket``, its file pushed from here) or
``error.json`` (``message`` is the job's failureMessage).
It dies with its parent; a restarted server resumes the job from the phase it reached.
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path
from typing import Any

from outcrop.imports.layout import ImportFailure
from outcrop.imports.work import discard, run_import
from outcrop.jobs.files import ERROR, PROGRESS, die_with_parent, write_json
from outcrop.jobs.publish import finish


class FileReporter:
    """Progress into ``progress.json``, at most a few times a second."""

    def __init__(self, job_dir: Path) -> None:
        self.path = job_dir / PROGRESS
        self.progress: dict[str, Any] = {}
        self._last = 0.0

    def __call__(self, **values: Any) -> None:
        phase_changed = values.get("phase") != self.progress.get("phase")
        if phase_changed:
            self.progress = {}
        self.progress.update(values, updated=time.time())
        now = time.monotonic()
        if phase_changed or now - self._last > 0.25:
            self._last = now
            write_json(self.path, self.progress)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    die_with_parent()
    job_dir = Path(argv[0])
    try:
        result = run_import(job_dir, FileReporter(job_dir))
    except ImportFailure as exc:
        discard(job_dir)
        write_json(job_dir / ERROR, {"message": str(exc)})
        return 2
    except MemoryError:
        discard(job_dir)
        write_json(job_dir / ERROR, {"message": "The import ran out of memory."})
        return 2
    except Exception as exc:
        traceback.print_exc()
        discard(job_dir)
        write_json(job_dir / ERROR, {"message": f"The import failed: {type(exc).__name__}: {exc}"})
        return 1
    return finish(job_dir, result)  # its model file pushed first, with a bucket


if __name__ == "__main__":
    sys.exit(main())
