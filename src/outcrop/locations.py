"""Where a job's data lives: ``file:///abs/path`` or ``s3://bucket/key``.

With an S3-compatible endpoint configured (``--s3-endpoint-url``) ``s3://`` goes through
boto3; without one it maps to ``<data-dir>/s3/<bucket>/<key>``, so a local "bucket" is just
a folder. Shared by every kind of job that reads or writes user data (customization,
batch, import, ingestion).
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from outcrop.errors import ValidationError

MAX_DATA_BYTES = 1 << 30
#: Outbound S3 calls never wait forever: a dead endpoint fails the job with a reason.
S3_CONNECT_TIMEOUT_S = 10
S3_READ_TIMEOUT_S = 60
# Loose on purpose (legacy names, test buckets like "b"), strict where it matters: a local
# "bucket" must be one folder name under <data-dir>/s3 ('..', '.', '/' and '' fail).
_BUCKET = re.compile(r"[A-Za-z0-9_.-]{1,255}")
FileRoots = tuple[Path, ...] | None
"""Where ``file://`` may read and write: None = anywhere (loopback servers without
``--file-roots``), ``()`` = nowhere, else under one of these folders (after symlinks)."""


def valid_bucket(bucket: str) -> bool:
    return bool(_BUCKET.fullmatch(bucket)) and bucket not in (".", "..")


def confined_file(path: Path, roots: FileRoots, uri: str, what: str) -> Path:
    """``path`` if ``file://`` access to it is allowed, else a ValidationError.

    ``..`` is refused outright (a location names a place, it does not climb); with roots,
    the path is resolved (symlinks followed) and must land under one of them.
    """
    if not path.is_absolute() or ".." in path.parts:
        raise ValidationError(
            f"The {what} location {uri} must be an absolute file:/// path without '..'."
        )
    if roots is None:
        return path
    if not roots:
        raise ValidationError(
            f"The {what} location {uri} is refused: file:// locations are disabled on a "
            "server that listens beyond loopback unless --file-roots names the folders "
            "it may use."
        )
    real = path.resolve()
    if not any(real.is_relative_to(root.resolve()) for root in roots):
        raise ValidationError(
            f"The {what} location {uri} is outside the folders this server may use (--file-roots)."
        )
    return path


def local_s3_path(data_dir: Path, bucket: str, key: str, uri: str, what: str) -> Path:
    """``<data-dir>/s3/<bucket>/<key>``, refused if it would leave that bucket's folder."""
    if not valid_bucket(bucket) or ".." in key.split("/"):
        raise ValidationError(f"The {what} location {uri} is not a valid S3 URI.")
    root = Path(data_dir) / "s3" / bucket
    path = root / key
    # A symlink inside the bucket folder must not lead out of it.
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValidationError(f"The {what} location {uri} resolves outside its bucket.")
    return path


@dataclass(frozen=True)
class Location:
    """A parsed data URI: a local path, or an object on an S3-compatible endpoint."""

    uri: str
    path: Path | None = None
    bucket: str | None = None
    key: str | None = None
    endpoint_url: str | None = None

    @property
    def is_s3(self) -> bool:
        return self.endpoint_url is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "path": str(self.path) if self.path else None,
            "bucket": self.bucket,
            "key": self.key,
            "endpoint_url": self.endpoint_url,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Location:
        return cls(
            d["uri"],
            Path(d["path"]) if d.get("path") else None,
            d.get("bucket"),
            d.get("key"),
            d.get("endpoint_url"),
        )

    def child(self, relative: str) -> Location:
        """``relative`` under this location taken as a folder."""
        if self.path is not None:
            return Location(self.uri.rstrip("/") + "/" + relative, path=self.path / relative)
        key = "/".join(p for p in ((self.key or "").strip("/"), relative) if p)
        return Location(
            f"s3://{self.bucket}/{key}", bucket=self.bucket, key=key, endpoint_url=self.endpoint_url
        )


def s3_client(endpoint_url: str | None):
    """A boto3 S3 client with bounded connect/read timeouts and retries."""
    import boto3
    from botocore.config import Config

    config = Config(
        connect_timeout=S3_CONNECT_TIMEOUT_S,
        read_timeout=S3_READ_TIMEOUT_S,
        retries={"max_attempts": 3, "mode": "standard"},
    )
    return boto3.client("s3", endpoint_url=endpoint_url, config=config)


class DataLocations:
    """Resolves and reads data URIs for one server."""

    def __init__(
        self, data_dir: Path, s3_endpoint_url: str | None = None, file_roots: FileRoots = None
    ) -> None:
        self.data_dir = Path(data_dir)
        self.s3_endpoint_url = s3_endpoint_url
        self.file_roots = file_roots

    def parse(self, uri: str, what: str) -> Location:
        if not isinstance(uri, str) or not uri:
            raise ValidationError(f"The {what} location is missing.")
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ValidationError(f"The {what} location {uri} must be file:///absolute/path.")
            path = confined_file(Path(unquote(parsed.path)), self.file_roots, uri, what)
            return Location(uri, path=path)
        if parsed.scheme == "s3":
            bucket, key = parsed.netloc, unquote(parsed.path).lstrip("/")
            if not bucket or ".." in key.split("/"):
                raise ValidationError(f"The {what} location {uri} is not a valid S3 URI.")
            if self.s3_endpoint_url:
                return Location(uri, bucket=bucket, key=key, endpoint_url=self.s3_endpoint_url)
            return Location(uri, path=local_s3_path(self.data_dir, bucket, key, uri, what))
        raise ValidationError(
            f"The {what} location {uri} is not supported: use s3://bucket/key or file:///path."
        )

    def read(self, location: Location, what: str) -> bytes:
        if location.is_s3:
            try:
                obj = s3_client(location.endpoint_url).get_object(
                    Bucket=location.bucket, Key=location.key
                )
                return obj["Body"].read(MAX_DATA_BYTES + 1)
            except Exception as exc:  # botocore raises many kinds
                raise ValidationError(
                    f"The {what} file {location.uri} could not be read: {exc}"
                ) from None
        assert location.path is not None
        try:
            if location.path.is_dir():
                raise ValidationError(
                    f"The {what} location {location.uri} is a folder, not a JSONL file."
                )
            with open(location.path, "rb") as fh:
                data = fh.read(MAX_DATA_BYTES + 1)
        except OSError as exc:
            raise ValidationError(
                f"The {what} file {location.uri} could not be read: {exc.strerror}."
            ) from None
        if len(data) > MAX_DATA_BYTES:
            raise ValidationError(f"The {what} file {location.uri} is larger than 1 GiB.")
        return data

    def check_writable(self, location: Location) -> None:
        """Fail now, not after hours of training, if outputs could not be written."""
        if location.is_s3:
            try:
                s3_client(location.endpoint_url).head_bucket(Bucket=location.bucket)
            except Exception as exc:
                raise ValidationError(
                    f"The output location {location.uri} is not writable: {exc}"
                ) from None
            return
        assert location.path is not None
        probe = location.path / f".outcrop-probe-{uuid.uuid4().hex}"
        try:
            location.path.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ValidationError(
                f"The output location {location.uri} is not writable: {exc.strerror}."
            ) from None


def write_output(location: Location, data: bytes) -> None:
    """Write one output object atomically (local) or in one PUT (S3)."""
    if location.is_s3:
        s3_client(location.endpoint_url).put_object(
            Bucket=location.bucket, Key=location.key, Body=data
        )
        return
    assert location.path is not None
    location.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = location.path.with_name(f".{location.path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, location.path)


def list_objects(location: Location) -> list[Location]:
    """Every object at or under ``location`` (a file, a folder or a key prefix), sorted."""
    if location.is_s3:
        client = s3_client(location.endpoint_url)
        found: list[Location] = []
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=location.bucket, Prefix=location.key or ""
        ):
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                found.append(
                    Location(f"s3://{location.bucket}/{key}", bucket=location.bucket, key=key,
                             endpoint_url=location.endpoint_url)
                )  # fmt: skip
        return sorted(found, key=lambda loc: loc.uri)
    assert location.path is not None
    if location.path.is_file():
        return [location]
    if not location.path.is_dir():
        return []
    base = location.uri.rstrip("/")
    return [
        Location(f"{base}/{p.relative_to(location.path).as_posix()}", path=p)
        for p in sorted(location.path.rglob("*"))
        if p.is_file()
    ]
