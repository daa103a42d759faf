"""Request size and time limits, checked before a request costs memory or a slot.

uvicorn parses the request head; these limits refuse what it lets through, in Bedrock's
error shape (ValidationException, 400, which every operation's botocore model lists).
A body is refused from its Content-Length before a byte of it is read, and while it
streams (chunked bodies have no length); it is never buffered past the limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from outcrop.errors import ValidationError

MAX_BODY_BYTES = 25_000_000 + 1_000_000  # InvokeModel's documented body limit, plus framing
MAX_HEADER_BYTES = 64 * 1024  # names + values, all headers together
MAX_HEADERS = 128
BODY_TIMEOUT_S = 60.0
"""A body that does not arrive within this is refused: a slow client cannot hold a
request open (engine slots are taken only once the body is in)."""


def check_head(headers: list[tuple[bytes, bytes]]) -> int | None:
    """Refuse oversized headers; return the declared Content-Length (None if absent)."""
    if len(headers) > MAX_HEADERS:
        raise ValidationError(f"The request has more than {MAX_HEADERS} headers.")
    if sum(len(k) + len(v) for k, v in headers) > MAX_HEADER_BYTES:
        raise ValidationError(f"The request headers are larger than {MAX_HEADER_BYTES} bytes.")
    lengths = {v for k, v in headers if k.lower() == b"content-length"}
    if not lengths:
        return None
    if len(lengths) > 1:
        raise ValidationError("The request has conflicting Content-Length headers.")
    raw = lengths.pop().strip()
    if not raw.isdigit():
        raise ValidationError("The request's Content-Length is not a number.")
    length = int(raw)
    if length > MAX_BODY_BYTES:
        raise ValidationError(
            f"The request body ({length} bytes) is larger than the {MAX_BODY_BYTES}-byte limit."
        )
    return length


async def read_limited(chunks: AsyncIterator[bytes]) -> bytes:
    """The whole body, refused once it passes the limit or takes longer than the timeout."""
    parts: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in chunks:
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise ValidationError(
                        f"The request body is larger than the {MAX_BODY_BYTES}-byte limit."
                    )
                parts.append(chunk)
    except TimeoutError:
        raise ValidationError(
            f"The request body did not arrive within {BODY_TIMEOUT_S:g} seconds."
        ) from None
    return b"".join(parts)
