"""Where an S3 data source's documents come from.

Like customization's data locations: with an S3-compatible endpoint (``--s3-endpoint-url``)
``s3://bucket/prefix`` is listed and read through boto3; without one it maps to the
folder ``<data-dir>/s3/<bucket>/<prefix>``, so a local "bucket" is just a folder of files.
``<file>.metadata.json`` sidecars are attached to their document, never ingested alone.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from outcrop.knowledge.metadata import is_sidecar, sidecar_name
from outcrop.knowledge.parsers import MAX_DOCUMENT_BYTES, DocumentError
from outcrop.locations import valid_bucket


@dataclass(frozen=True)
class SourceObject:
    key: str
    """The object key within the bucket."""
    uri: str
    sidecar: str | None = None
    """The key of its ``.metadata.json``, if there is one."""


class Bucket:
    """One bucket, read under a key prefix."""

    def __init__(
        self, bucket: str, prefix: str = "", *, data_dir: Path, endpoint_url: str | None = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        if not valid_bucket(bucket):
            raise DocumentError(f"{bucket!r} is not a valid S3 bucket name.")
        self.root = Path(data_dir) / "s3" / bucket
        self._client = None

    def _s3(self):  # noqa: ANN202
        if self._client is None:
            from outcrop.locations import s3_client

            self._client = s3_client(self.endpoint_url)
        return self._client

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def keys(self) -> list[str]:
        if self.endpoint_url:
            out: list[str] = []
            pages = self._s3().get_paginator("list_objects_v2")
            try:
                for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix):
                    out.extend(
                        o["Key"] for o in page.get("Contents", []) if not o["Key"].endswith("/")
                    )
            except Exception as exc:  # botocore raises many kinds
                raise DocumentError(
                    f"Cannot list s3://{self.bucket}/{self.prefix}: {exc}"
                ) from None
            return sorted(out)
        if not self.root.is_dir():
            raise DocumentError(
                f"The bucket {self.bucket} does not exist (no folder {self.root}, and no "
                "--s3-endpoint-url is set)."
            )
        out = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                key = (Path(dirpath) / name).relative_to(self.root).as_posix()
                if key.startswith(self.prefix):
                    out.append(key)
        return sorted(out)

    def objects(self) -> list[SourceObject]:
        """The documents under the prefix, each with its sidecar if present."""
        keys = self.keys()
        present = set(keys)
        return [
            SourceObject(k, self.uri(k), sidecar_name(k) if sidecar_name(k) in present else None)
            for k in keys
            if not is_sidecar(k)
        ]

    def read(self, key: str) -> bytes:
        if self.endpoint_url:
            try:
                body = self._s3().get_object(Bucket=self.bucket, Key=key)["Body"]
                data = body.read(MAX_DOCUMENT_BYTES + 1)
            except Exception as exc:
                raise DocumentError(f"The object cannot be read: {exc}") from None
        else:
            path = self.root / key
            try:
                with open(path, "rb") as fh:
                    data = fh.read(MAX_DOCUMENT_BYTES + 1)
            except OSError as exc:
                raise DocumentError(f"The file cannot be read: {exc.strerror}.") from None
        if len(data) > MAX_DOCUMENT_BYTES:
            raise DocumentError(f"The file is larger than {MAX_DOCUMENT_BYTES // 2**20} MB.")
        return data


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; ValueError if it is not one."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket or ".." in key.split("/"):
        raise ValueError(f"{uri} is not a valid S3 URI")
    return bucket, key
