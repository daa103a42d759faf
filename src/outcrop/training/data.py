"""Where training data comes from and what a valid record looks like.

Locations are ``file:///abs/path`` or ``s3://bucket/key``. With an S3-compatible endpoint
configured (``--s3-endpoint-url``) ``s3://`` goes through boto3; without one it maps to
``<data-dir>/s3/<bucket>/<key>``, so a local "bucket" is just a folder.

Record formats (one JSON object per line):

* FINE_TUNING: ``{"prompt": "...", "completion": "..."}`` or Bedrock's conversation format
  ``{"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "..."}],
  "messages": [{"role": "user", "content": [{"text": "..."}]}, {"role": "assistant", ...}]}``
* CONTINUED_PRE_TRAINING: ``{"input": "..."}``

:func:`validate_jsonl` checks every line before a job is accepted and names the first bad
one; what it returns is the normalized form the worker trains on.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from outcrop.errors import ValidationError

CONVERSATION_SCHEMA = "bedrock-conversation-2024"
MAX_DATA_BYTES = 1 << 30


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


def _s3_client(endpoint_url: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint_url)


class DataLocations:
    """Resolves and reads data URIs for one server."""

    def __init__(self, data_dir: Path, s3_endpoint_url: str | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.s3_endpoint_url = s3_endpoint_url

    def parse(self, uri: str, what: str) -> Location:
        if not isinstance(uri, str) or not uri:
            raise ValidationError(f"The {what} location is missing.")
        parsed = urlparse(uri)
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ValidationError(f"The {what} location {uri} must be file:///absolute/path.")
            return Location(uri, path=Path(unquote(parsed.path)))
        if parsed.scheme == "s3":
            bucket, key = parsed.netloc, unquote(parsed.path).lstrip("/")
            if not bucket or ".." in key.split("/"):
                raise ValidationError(f"The {what} location {uri} is not a valid S3 URI.")
            if self.s3_endpoint_url:
                return Location(uri, bucket=bucket, key=key, endpoint_url=self.s3_endpoint_url)
            return Location(uri, path=self.data_dir / "s3" / bucket / key)
        raise ValidationError(
            f"The {what} location {uri} is not supported: use s3://bucket/key or file:///path."
        )

    def read(self, location: Location, what: str) -> bytes:
        if location.is_s3:
            try:
                obj = _s3_client(location.endpoint_url).get_object(
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
                _s3_client(location.endpoint_url).head_bucket(Bucket=location.bucket)
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
        _s3_client(location.endpoint_url).put_object(
            Bucket=location.bucket, Key=location.key, Body=data
        )
        return
    assert location.path is not None
    location.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = location.path.with_name(f".{location.path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, location.path)


# --------------------------------------------------------------------------- records


def _text_blocks(value: Any, where: str) -> str:
    if not isinstance(value, list) or not value:
        raise ValueError(f'{where} must be a non-empty list of {{"text": ...}} blocks')
    parts = []
    for block in value:
        if not isinstance(block, dict) or not isinstance(block.get("text"), str):
            raise ValueError(f'{where} must contain only {{"text": "..."}} blocks')
        parts.append(block["text"])
    return "".join(parts)


def normalize_record(obj: Any, customization_type: str) -> dict[str, Any]:
    """One parsed line -> ``{"system", "turns": [[role, text], ...]}`` or ``{"text"}``."""
    if not isinstance(obj, dict):
        raise ValueError("the line is not a JSON object")
    if customization_type == "CONTINUED_PRE_TRAINING":
        text = obj.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ValueError('expected {"input": "<non-empty text>"}')
        return {"text": text}
    if "messages" in obj or "schemaVersion" in obj:
        if obj.get("schemaVersion") != CONVERSATION_SCHEMA:
            raise ValueError(f'schemaVersion must be "{CONVERSATION_SCHEMA}"')
        system = None
        if obj.get("system") is not None:
            system = _text_blocks(obj["system"], "system")
        messages = obj.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            raise ValueError("messages must be a list of at least one user and one assistant turn")
        turns = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ValueError(f"messages[{i}] is not an object")
            role = message.get("role")
            expected = "user" if i % 2 == 0 else "assistant"
            if role != expected:
                raise ValueError(f"messages[{i}].role must be {expected!r} (turns alternate)")
            turns.append([role, _text_blocks(message.get("content"), f"messages[{i}].content")])
        if turns[-1][0] != "assistant":
            raise ValueError("the last message must be the assistant's")
        return {"system": system, "turns": turns}
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise ValueError(
            'expected {"prompt": "...", "completion": "..."} or a '
            f'"{CONVERSATION_SCHEMA}" conversation'
        )
    if not completion.strip():
        raise ValueError("completion is empty")
    return {"system": None, "turns": [["user", prompt], ["assistant", completion]]}


def validate_jsonl(data: bytes, customization_type: str, what: str) -> list[dict[str, Any]]:
    """Every non-blank line, normalized, with its 1-based ``line`` number.

    Raises ValidationError naming the first bad line and what is wrong with it.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationError(f"The {what} file is not UTF-8 text (line {line}).") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"The {what} file has invalid JSON on line {number}: {exc.msg} "
                f"(column {exc.colno})."
            ) from None
        try:
            record = normalize_record(obj, customization_type)
        except ValueError as exc:
            raise ValidationError(
                f"The {what} file has an invalid record on line {number}: {exc}."
            ) from None
        record["line"] = number
        records.append(record)
    if not records:
        raise ValidationError(f"The {what} file is empty: it has no JSONL records.")
    return records
