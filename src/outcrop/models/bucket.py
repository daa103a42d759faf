"""The model bucket: S3-compatible storage as the source of truth for custom and imported
model files when several servers share one records database (``--model-bucket``).

A node that finishes a customization job or an import pushes the model file; every node
that serves it pulls it into its own data dir, verified by sha256, and keeps a
``<file>.sha256`` sidecar (checksum, size, mtime) so later loads need only a ``stat``.
A sidecar that disagrees with the record, or a file changed since it was verified, means
the file is checked again and pulled again if it does not match. Weights never travel
through Ray's object store.

Keys: ``<prefix>/custom-models/<model-id>/<file>``, ``<prefix>/imported-models/<id>/<file>``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from outcrop.errors import ModelNotReadyError
from outcrop.locations import s3_client, valid_bucket
from outcrop.models.formats import sha256_file

log = logging.getLogger("outcrop.bucket")

CHUNK = 1 << 20
SIDECAR_SUFFIX = ".sha256"
CACHE_DIR = "model-bucket"
CUSTOM_MODELS = "custom-models"
IMPORTED_MODELS = "imported-models"
#: A failed pull is answered from memory this long: a client's automatic retries must not
#: download a corrupt multi-GB object again and again.
RETRY_AFTER_S = 15.0
SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelBucketError(ModelNotReadyError):
    """A model's files could not be fetched (unreachable bucket, missing object)."""


class ModelChecksumError(ModelBucketError):
    """A fetched file does not have the recorded sha256; nothing was kept."""


def parse_bucket_uri(uri: str) -> tuple[str, str]:
    """``s3://BUCKET/PREFIX`` -> (bucket, prefix without slashes at either end)."""
    parsed = urlparse(uri)
    prefix = parsed.path.strip("/")
    if parsed.scheme != "s3" or not valid_bucket(parsed.netloc) or ".." in prefix.split("/"):
        raise ValueError(f"the model bucket {uri!r} must be s3://BUCKET or s3://BUCKET/PREFIX")
    return parsed.netloc, prefix


def cache_path(data_dir: Path, key: str) -> Path:
    """Where a node keeps its copy of ``key``: ``<data-dir>/model-bucket/<key>`` (not under
    ``cache/``, which several data dirs may share)."""
    return Path(data_dir) / CACHE_DIR / key


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def remember_checksum(path: Path, sha256: str) -> None:
    """Write ``path``'s sidecar: this checksum was verified for the file as it is now."""
    st = path.stat()
    record = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    tmp = path.with_name(f".{path.name}{SIDECAR_SUFFIX}.tmp-{uuid.uuid4().hex}")
    tmp.write_text(json.dumps(record) + "\n")
    os.replace(tmp, sidecar(path))


def verified(path: Path, sha256: str, *, rehash: bool = True) -> bool:
    """Whether ``path`` holds content with ``sha256``, by its sidecar when the file is
    unchanged since (size and mtime), else by hashing it (``rehash``) and remembering."""
    try:
        st = path.stat()
    except OSError:
        return False
    try:
        record = json.loads(sidecar(path).read_text())
    except (OSError, ValueError):
        record = None
    if isinstance(record, dict):
        if record.get("sha256") != sha256:
            return False  # verified as another version than the record names
        if record.get("size") == st.st_size and record.get("mtime_ns") == st.st_mtime_ns:
            return True
    if not rehash or sha256_file(path) != sha256:
        return False
    remember_checksum(path, sha256)
    return True


def forget(path: Path) -> None:
    """Remove a cached file and its sidecar (a deleted model)."""
    for p in (path, sidecar(path)):
        p.unlink(missing_ok=True)


class ModelBucket:
    """Push and pull model files to ``s3://bucket/prefix`` through boto3's transfer manager
    (multipart above 8 MiB, parallel parts)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        *,
        client: Any = None,
        retry_after_s: float = RETRY_AFTER_S,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url
        self.retry_after_s = retry_after_s
        self._client = client
        self._failed: dict[tuple[str, str], tuple[float, ModelBucketError]] = {}
        self._failed_lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any) -> ModelBucket | None:
        """The bucket ``--model-bucket`` names (on ``--s3-endpoint-url``), or None."""
        uri = getattr(settings, "model_bucket", None)
        if not uri:
            return None
        bucket, prefix = parse_bucket_uri(uri)
        return cls(bucket, prefix, getattr(settings, "s3_endpoint_url", None))

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client(self.endpoint_url)
        return self._client

    # ------------------------------------------------------------------ keys

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def custom_model_key(self, model_id: str, file_name: str) -> str:
        return self.key(CUSTOM_MODELS, model_id, file_name)

    def imported_model_key(self, model_id: str, file_name: str) -> str:
        return self.key(IMPORTED_MODELS, model_id, file_name)

    # ------------------------------------------------------------------ transfers

    def push(self, local: Path, key: str) -> str:
        """Upload ``local`` to ``key`` and return its sha256 (also the object's
        ``x-amz-meta-sha256``). Raises ModelBucketError if the upload fails."""
        local = Path(local)
        started = time.monotonic()
        try:
            digest = sha256_file(local)  # first: the object's metadata carries it
            self.client.upload_file(
                str(local), self.bucket, key, ExtraArgs={"Metadata": {"sha256": digest}}
            )
        except Exception as exc:  # botocore and s3transfer raise many kinds
            raise ModelBucketError(
                f"The model file {local.name} could not be uploaded to "
                f"s3://{self.bucket}/{key}: {exc}"
            ) from None
        log.info("pushed %s to s3://%s/%s (%.1f MiB in %.1fs)", local, self.bucket, key,
                 local.stat().st_size / 2**20, time.monotonic() - started)  # fmt: skip
        return digest

    def pull(self, key: str, sha256: str, dest: Path) -> Path:
        """``dest`` holding ``key`` with content ``sha256``: kept if already verified, else
        downloaded next to it, checked, and renamed into place. A mismatch or a failed
        download raises (ModelChecksumError / ModelBucketError) and leaves no partial file."""
        dest = Path(dest)
        if not SHA256.fullmatch(sha256 or ""):
            raise ModelBucketError(f"The recorded checksum of s3://{self.bucket}/{key} is invalid.")
        if verified(dest, sha256):
            return dest
        forget(dest)  # a copy that fails its check is never served, whatever comes next
        with self._failed_lock:
            failed = self._failed.get((key, sha256))
        if failed is not None and time.monotonic() - failed[0] < self.retry_after_s:
            raise failed[1]
        try:
            path = self._download(key, sha256, dest)
        except ModelBucketError as exc:
            with self._failed_lock:
                self._failed[(key, sha256)] = (time.monotonic(), exc)
            raise
        with self._failed_lock:
            self._failed.pop((key, sha256), None)
        return path

    def _download(self, key: str, sha256: str, dest: Path) -> Path:
        uri = f"s3://{self.bucket}/{key}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.partial-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        started = time.monotonic()
        try:
            try:
                self.client.download_file(self.bucket, key, str(tmp))
            except Exception as exc:
                raise ModelBucketError(
                    f"The model file {uri} could not be fetched: {_why(exc)}"
                ) from None
            digest = sha256_file(tmp)
            if digest != sha256:
                raise ModelChecksumError(
                    f"The model file {uri} does not match its recorded checksum (expected "
                    f"sha256 {sha256}, got {digest}); nothing was kept."
                )
            sidecar(dest).unlink(missing_ok=True)  # the old file's, if any
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        remember_checksum(dest, sha256)
        log.info("pulled %s into %s (%.1f MiB in %.1fs)", uri, dest,
                 dest.stat().st_size / 2**20, time.monotonic() - started)  # fmt: skip
        return dest

    def delete(self, key: str) -> None:
        """Remove ``key`` (a deleted model); a failure is logged, not raised."""
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            log.warning("could not delete s3://%s/%s: %s", self.bucket, key, exc)


def _why(exc: Exception) -> str:
    """A botocore error in a few words (404 from download_file is a bare ClientError)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str((response.get("Error") or {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return "the object does not exist"
        if code in ("NoSuchBucket",):
            return "the bucket does not exist"
        if code in ("403", "AccessDenied"):
            return "access was denied"
    return str(exc) or type(exc).__name__


def publish_target(
    bucket: ModelBucket | None, folder: str, model_id: str, data_dir: Path | None = None
) -> dict[str, Any] | None:
    """What a job's spec carries so that the worker, wherever it runs (a child process, a
    Ray actor on a training node whose disk the API replica cannot read), pushes the model
    file itself; None without a bucket. A file under ``data_dir`` gets a sidecar (one
    elsewhere, an import that references an Ollama blob, is left as it is)."""
    if bucket is None:
        return None
    return {
        "bucket": bucket.bucket,
        "prefix": bucket.prefix,
        "endpoint_url": bucket.endpoint_url,
        "folder": folder,
        "model_id": model_id,
        "data_dir": str(data_dir) if data_dir is not None else None,
    }


def push_result(result: dict[str, Any], target: dict[str, Any] | None) -> dict[str, Any]:
    """Push the model file ``result['path']`` names to ``target`` (see publish_target) and
    add its ``bucket_key`` and ``sha256``; the result unchanged without a target or once
    pushed. Raises ModelBucketError if the upload fails."""
    if not target or result.get("bucket_key") or not result.get("path"):
        return result
    local = Path(str(result["path"]))
    bucket = ModelBucket(target["bucket"], target.get("prefix") or "", target.get("endpoint_url"))
    key = bucket.key(target["folder"], target["model_id"], local.name)
    digest = bucket.push(local, key)
    root = target.get("data_dir")
    if root is None or local.resolve().is_relative_to(Path(root).resolve()):
        remember_checksum(local, digest)  # a server sharing this disk checks it by a stat
    return {**result, "bucket_key": key, "sha256": digest}
