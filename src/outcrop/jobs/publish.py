"""A ``process`` worker's last step: its model file leaves the machine it was made on.

With ``--model-bucket`` the service puts a push target in the job's spec
(:func:`outcrop.models.bucket.publish_target`); the worker pushes the file itself, on the
node that made it, before it reports its result (``bucket_key`` and ``sha256`` join it).
So a local child process and a Ray actor on a training node take the same path, and the
server's runner never uploads a model on its poll thread. Without a target the result's
local path must be where the servers read it (one machine, or a shared data dir).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from outcrop.jobs.files import ERROR, RESULT, SPEC, read_json, write_json
from outcrop.models.bucket import push_result


def publish(result: dict[str, Any], job_dir: Path) -> dict[str, Any]:
    """``result`` with its model file pushed where the spec says (unchanged without a
    target, or once pushed). Raises ModelBucketError if the upload fails."""
    spec = read_json(job_dir / SPEC) or {}
    pushed = push_result(result, spec.get("publish"))
    if pushed is not result:
        print(f"outcrop: pushed {pushed['path']} to {pushed['bucket_key']}", flush=True)
    return pushed


def finish(job_dir: Path, result: dict[str, Any]) -> int:
    """Publish ``result``'s model file, then write ``result.json`` (last); on a failed
    upload, ``error.json`` instead. The worker's exit code."""
    try:
        result = publish(result, job_dir)
    except Exception as exc:  # noqa: BLE001 - the job fails with the reason
        (job_dir / RESULT).unlink(missing_ok=True)  # one an earlier run of the job left
        write_json(job_dir / ERROR, {"message": f"The job's model could not be published: {exc}"})
        return 2
    write_json(job_dir / RESULT, result)
    return 0
