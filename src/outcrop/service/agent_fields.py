"""bedrock-agent's request checks: its bodies are JSON (even List operations are POSTs
with ``maxResults``/``nextToken`` in the body), so these read through
:class:`~outcrop.service.fields.Obj`, where :mod:`outcrop.service.control_fields` reads
the bedrock control plane's query strings. Also its IDs (``[0-9A-Z]{10}``), ISO 8601
timestamps and ``clientToken``.

Messages follow AWS's ``1 validation error detected: Value '...' at '...' failed to
satisfy constraint: ...`` wording, as ``Obj`` does in its ``converse`` style.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from outcrop.errors import ValidationError
from outcrop.service.fields import Obj

_ID_ALPHABET = string.ascii_uppercase + string.digits
CLIENT_TOKEN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,256}")


def request(body: dict[str, Any]) -> Obj:
    """A control-plane request body, read with AWS's ``Value at 'a.b'`` messages."""
    return Obj.of(body, (), "converse")


def client_token(o: Obj) -> str | None:
    """``clientToken``: 33 to 256 characters of bedrock-agent's pattern."""
    token = pattern(o, "clientToken", CLIENT_TOKEN, max_len=256)
    if token is not None and len(token) < 33:
        raise o.fail("clientToken", "Member must have length greater than or equal to 33")
    return token


def new_id(length: int = 10) -> str:
    """Bedrock-agent resource IDs: ``[0-9A-Z]{10}``."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def iso(ts: float) -> str:
    """A timestamp as botocore's rest-json parser reads it (ISO 8601, UTC)."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def pattern(
    o: Obj, key: str, regex: re.Pattern[str], *, required: bool = False, max_len: int = 2048
) -> str | None:
    value = o.string(key, required=required)
    if value is None:
        return None
    if len(value) > max_len:
        raise o.fail(key, f"Member must have length less than or equal to {max_len}")
    if not regex.fullmatch(value):
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{'.'.join(map(str, o.at(key)))}' "
            f"failed to satisfy constraint: Member must satisfy regular expression pattern: "
            f"{regex.pattern}"
        )
    return value


def length(o: Obj, key: str, lo: int, hi: int, *, required: bool = False) -> str | None:
    value = o.string(key, required=required)
    if value is not None and not lo <= len(value) <= hi:
        raise o.fail(key, f"Member must have length between {lo} and {hi}")
    return value


def page(items: list[Any], body: Obj, *, limit: int = 1000) -> tuple[list[Any], str | None]:
    """One page of ``items`` for a ``{maxResults, nextToken}`` body (tokens are offsets)."""
    size = body.integer("maxResults", minimum=1, maximum=limit) or limit
    token = body.string("nextToken")
    start = 0
    if token is not None:
        if not token.isdigit():
            raise ValidationError("The pagination token is invalid.")
        start = int(token)
    end = start + size
    return items[start:end], (str(end) if end < len(items) else None)


def paged(
    results: str, items: list[Any], body: Obj, summary: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    """A List* response: one page of ``items`` summarized under ``results``, the token."""
    chunk, token = page(items, body)
    out: dict[str, Any] = {results: [summary(item) for item in chunk]}
    if token:
        out["nextToken"] = token
    return out
