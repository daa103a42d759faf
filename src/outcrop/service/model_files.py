"""Where a finished job's model file is kept: on this node, or also in the model bucket.

Customization and import jobs report their model file in their result: a local ``path``
(no ``--model-bucket``), or ``bucket_key`` and ``sha256`` too (with one, the worker pushed
the file from the machine that made it, :mod:`outcrop.jobs.publish`: recorded as is,
pulled by whichever node serves it). Nothing is uploaded here, on the runner's thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.jobs.files import JobFailure
from outcrop.models.bucket import (
    SHA256,
    ModelBucket,
    cache_path,
    forget,
    verified,
)

log = logging.getLogger("outcrop.bucket")


@dataclass(frozen=True)
class KeptFile:
    path: str | None
    bucket_key: str | None = None
    sha256: str | None = None


def keep_model_file(
    result: dict[str, Any], bucket: ModelBucket | None, data_dir: Path, what: str
) -> KeptFile:
    """What to record for the model file ``result`` names; JobFailure if it cannot be
    kept. ``what`` names the worker in errors."""
    path, key, sha = result.get("path"), result.get("bucket_key"), result.get("sha256")
    if key is not None or sha is not None:
        if (
            not isinstance(key, str)
            or not key.strip("/")
            or ".." in key.split("/")
            or not isinstance(sha, str)
            or not SHA256.fullmatch(sha)
        ):
            raise JobFailure(f"{what} reported an invalid model bucket key or sha256")
        if bucket is None:
            log.warning("model file %s is in a model bucket, but this server has none", key)
        if path and _in(Path(str(path)), data_dir) and Path(str(path)).is_file():
            # Made here after all: checked once now, so loads here need not pull it.
            verified(Path(str(path)), sha)
        return KeptFile(str(path) if path else None, key, sha)
    if not path or not Path(str(path)).is_file():
        raise JobFailure(f"{what} reported a model file that is missing")
    if bucket is not None:  # its spec had no push target: made before the bucket was set
        raise JobFailure(
            f"{what} did not push its model file to the model bucket {bucket.uri}; "
            "start the job again"
        )
    return KeptFile(str(path))


def _in(path: Path, data_dir: Path) -> bool:
    return path.resolve().is_relative_to(Path(data_dir).resolve())


def forget_model_file(bucket: ModelBucket | None, bucket_key: str | None, data_dir: Path) -> None:
    """A deleted model: its object and this node's cached copy go (best effort)."""
    if not bucket_key:
        return
    if bucket is not None:
        bucket.delete(bucket_key)
    forget(cache_path(data_dir, bucket_key))
