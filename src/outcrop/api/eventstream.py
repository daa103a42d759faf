"""AWS binary event-stream encoder (``application/vnd.amazon.eventstream``), server side.

Mirror of ``botocore.eventstream``'s decoder. A frame is::

    total_length:u32 | headers_length:u32 | prelude_crc:u32 | headers | payload | message_crc:u32

Every header Bedrock sends is a type-7 (string) header. This runs once per streamed token, so
the encoded header block for each event type is built once and cached, and a frame is
assembled with a single ``join``.
"""

from __future__ import annotations

import base64
import json
import struct
from binascii import crc32
from functools import lru_cache
from typing import Any

__all__ = [
    "CONTENT_TYPE",
    "chunk_frame",
    "encode_frame",
    "encode_headers",
    "event_frame",
    "exception_frame",
]

CONTENT_TYPE = "application/vnd.amazon.eventstream"

_STRING = 7
_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
# botocore rejects frames over these limits, so we fail early with a clear error instead.
_MAX_HEADERS_LENGTH = 128 * 1024
_MAX_PAYLOAD_LENGTH = 24 * 1024 * 1024


def _json(obj: Any) -> bytes:
    # Compact and raw UTF-8 (not \u-escaped): smallest payload botocore's json.loads accepts.
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (e.g. a half-decoded token) cannot be UTF-8; \u-escape it instead
        # of failing mid-stream.
        return json.dumps(obj, separators=(",", ":")).encode("ascii")


def encode_headers(headers: dict[str, str]) -> bytes:
    """Encode ``headers`` as type-7 string header records, in insertion order."""
    out = bytearray()
    for name, value in headers.items():
        n = name.encode("utf-8")
        v = value.encode("utf-8")
        if len(n) > 255 or len(v) > 0xFFFF:
            raise ValueError(f"event-stream header too long: {name!r}")
        out += bytes((len(n),)) + n + bytes((_STRING,)) + len(v).to_bytes(2, "big") + v
    return bytes(out)


def _frame(header_block: bytes, payload: bytes) -> bytes:
    hlen = len(header_block)
    if hlen > _MAX_HEADERS_LENGTH:
        raise ValueError("event-stream headers exceed 128 KiB")
    if len(payload) > _MAX_PAYLOAD_LENGTH:
        raise ValueError("event-stream payload exceeds 24 MiB")
    prelude = _PRELUDE.pack(hlen + len(payload) + 16, hlen)
    prelude_crc = _CRC.pack(crc32(prelude))
    # The message CRC covers everything before it; chaining crc32 avoids building a temp buffer.
    crc = crc32(payload, crc32(header_block, crc32(prelude_crc, crc32(prelude))))
    return b"".join((prelude, prelude_crc, header_block, payload, _CRC.pack(crc)))


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """Encode one event-stream message with string ``headers`` and raw ``payload``."""
    return _frame(encode_headers(headers), payload)


# Header order matches what Bedrock sends (and the reference's hex vectors).
@lru_cache(maxsize=256)
def _event_headers(event_type: str) -> bytes:
    return encode_headers(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        }
    )


@lru_cache(maxsize=64)
def _exception_headers(shape_lower_camel: str) -> bytes:
    return encode_headers(
        {
            ":exception-type": shape_lower_camel,
            ":content-type": "application/json",
            ":message-type": "exception",
        }
    )


def event_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """An ``:message-type=event`` frame, e.g. ConverseStream's ``contentBlockDelta``."""
    return _frame(_event_headers(event_type), _json(payload))


def chunk_frame(body: dict[str, Any] | bytes) -> bytes:
    """InvokeModelWithResponseStream's ``chunk`` event: ``{"bytes": base64(model JSON)}``.

    ``body`` is the native model chunk (a dict to JSON-encode, or already-encoded bytes).
    """
    raw = body if isinstance(body, bytes | bytearray | memoryview) else _json(body)
    # base64 output is ASCII, so the wrapper JSON can be built without json.dumps.
    payload = b'{"bytes":"' + base64.b64encode(raw) + b'"}'
    return _frame(_event_headers("chunk"), payload)


def exception_frame(shape_lower_camel: str, message: str) -> bytes:
    """A modeled in-stream error; botocore raises it as ``EventStreamError`` with that code."""
    return _frame(_exception_headers(shape_lower_camel), _json({"message": message}))
