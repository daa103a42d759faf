"""Checks and paging every ``bedrock`` control-plane operation shares, with the messages
AWS gives (``1 validation error detected: Value ... at 'member' failed to satisfy ...``).

Lifted so that new surfaces do not copy them again; service/customization.py still has
its own private copies (``_enum``, ``_pattern``, ``_page``, ``parse_time``) to move here.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from outcrop.errors import ValidationError


def missing(member: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value null at '{member}' failed to satisfy "
        "constraint: Member must not be null"
    )


def pattern_value(member: str, value: Any, pattern: re.Pattern[str], max_len: int) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or len(value) > max_len:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {pattern.pattern}"
        )
    return value


def enum_value(member: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return value


def parse_time(member: str, value: str | None) -> float | None:
    """A query-string timestamp: ISO 8601 (botocore's default) or epoch seconds."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise ValidationError(f"Value '{value}' at '{member}' is not a valid timestamp.") from None


def page(
    items: list[Any], max_results: str | None, next_token: str | None
) -> tuple[list, str | None]:
    """One page of *items* (maxResults 1..1000, default 100) and the next token, if any."""
    limit = 100
    if max_results is not None:
        try:
            limit = int(max_results)
        except ValueError:
            raise ValidationError(
                f"Value '{max_results}' at 'maxResults' is not an integer."
            ) from None
        if not 1 <= limit <= 1000:
            raise ValidationError(
                f"1 validation error detected: Value '{limit}' at 'maxResults' failed to "
                "satisfy constraint: Member must have value between 1 and 1000"
            )
    start = 0
    if next_token is not None:
        try:
            start = int(next_token)
        except ValueError:
            raise ValidationError("The pagination token is invalid.") from None
        if start < 0:
            raise ValidationError("The pagination token is invalid.")
    chunk = items[start : start + limit]
    more = start + limit < len(items)
    return chunk, str(start + limit) if more else None
