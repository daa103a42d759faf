"""Control-plane request checks in the Bedrock control plane's words: missing members,
patterns, enums, query timestamps and pagination; and the 12-character resource IDs.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from outcrop.errors import ConflictError, ValidationError

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def missing(member: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value null at '{member}' failed to satisfy "
        "constraint: Member must not be null"
    )


def pattern(member: str, value: Any, pattern: re.Pattern[str], max_len: int) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value) or len(value) > max_len:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{member}' failed to satisfy "
            f"constraint: Member must satisfy regular expression pattern: {pattern.pattern}"
        )
    return value


def enum(member: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
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
    items: list[Any], max_results: str | None, next_token: str | None, limit: int = 100
) -> tuple[list, str | None]:
    """One page of ``items`` (already filtered and sorted) and the next token, if any."""
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
    page = items[start : start + limit]
    more = start + limit < len(items)
    return page, str(start + limit) if more else None


def replayed_job(jobs: Iterable[Any], token: str | None, job_name: str) -> str | None:
    """The ARN of the job this ``clientRequestToken`` already created (a retried Create
    is answered with it), or None; the same token for another job is a conflict."""
    if token is None:
        return None
    for job in jobs:
        if job.client_request_token == token:
            if job.job_name != job_name:
                raise ConflictError(
                    f"The client request token {token} was used for job {job.job_name}."
                )
            return job.job_arn
    return None


@dataclass(frozen=True)
class ListQuery:
    """A List* operation's filters and order, checked in the control plane's words."""

    status: str | None
    name: str | None
    after: float | None
    before: float | None
    descending: bool

    @classmethod
    def parse(
        cls,
        q: dict[str, str | None],
        statuses: tuple[str, ...],
        *,
        time_field: str = "creationTime",
        sort_by: tuple[str, ...] = ("CreationTime",),
    ) -> ListQuery:
        status = enum("statusEquals", q.get("statusEquals"), statuses)
        enum("sortBy", q.get("sortBy"), sort_by)
        order = enum("sortOrder", q.get("sortOrder"), ("Ascending", "Descending")) or "Descending"
        after = parse_time(f"{time_field}After", q.get(f"{time_field}After"))
        before = parse_time(f"{time_field}Before", q.get(f"{time_field}Before"))
        return cls(status, q.get("nameContains"), after, before, order == "Descending")

    def keeps(self, status: str, name: str | None, when: float) -> bool:
        return (
            (self.status is None or status == self.status)
            and (self.name is None or self.name.lower() in (name or "").lower())
            and (self.after is None or when > self.after)
            and (self.before is None or when < self.before)
        )

    def respond(
        self,
        items: Iterable[Any],
        facts: Callable[[Any], tuple[str, str | None, float]],
        q: dict[str, str | None],
        results: str,
        summary: Callable[[Any], dict[str, Any]] = lambda item: item,
    ) -> dict[str, Any]:
        """The List* response: ``items`` filtered by their (status, name, time) ``facts``,
        ordered by time, one page of them summarized under ``results``, and the token."""
        kept = [item for item in items if self.keeps(*facts(item))]
        kept.sort(key=lambda item: facts(item)[2], reverse=self.descending)
        chunk, token = page(kept, q.get("maxResults"), q.get("nextToken"))
        out: dict[str, Any] = {results: [summary(item) for item in chunk]}
        if token:
            out["nextToken"] = token
        return out
