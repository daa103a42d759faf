"""Where a finished job's model file is kept: on this node, or also in the model bucket.

Customization and import jobs report their model file in their result: a local ``path``
(this node made it: pushed here when ``--model-bucket`` is set), or ``bucket_key`` and
``sha256`` too (a worker elsewhere, a Ray actor on a training node, pushed it already:
recorded as is, pulled by whichever node serves it).
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
    ModelBucketError,
    cache_path,
    forget,
    remember_checksum,
    verified,
)

log = logging.getLogger("outcrop.bucket")


@dataclass(frozen=True)
class KeptFile:
    path: str | None
    bucket_key: str | None = None
    sha256: str | None = None


def keep_model_file(
    result: dict[str, Any],
    bucket: ModelBucket | None,
    folder: str,
    model_id: str,
    data_dir: Path,
    what: str,
) -> KeptFile:
    """What to record for the model file ``result`` names; JobFailure if it cannot be
    kept. Pushed to ``<prefix>/<folder>/<model_id>/<file name>``; ``what`` names the
    worker in errors."""
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
    local = Path(str(path))
    if bucket is None:
        return KeptFile(str(local))
    key = bucket.key(folder, model_id, local.name)
    try:
        sha = bucket.push(local, key)
    except ModelBucketError as exc:
        raise JobFailure(str(exc)) from None
    # This node serves its own copy without hashing it again; a file outside the data
    # dir (an import that references an Ollama blob) gets no sidecar next to it.
    if _in(local, data_dir):
        remember_checksum(local, sha)
    return KeptFile(str(local), key, sha)


def _in(path: Path, data_dir: Path) -> bool:
    return path.resolve().is_relative_to(Path(data_dir).resolve())


def forget_model_file(bucket: ModelBucket | None, bucket_key: str | None, data_dir: Path) -> None:
    """A deleted model: its object and this node's cached copy go (best effort)."""
    if not bucket_key:
        return
    if bucket is not None:
        bucket.delete(bucket_key)
    forget(cache_path(data_dir, bucket_key))
