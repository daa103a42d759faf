"""Metadata filters: a small tree and its evaluation against a chunk's attributes.

Operators follow Bedrock's semantics: comparisons are false when the attribute is
missing; the negative ones (``ne``, ``not_in``) are true then, as a ``must_not`` is.
Numbers compare as numbers (``1`` equals ``1.0``); strings only equal strings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Op = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in",
    "starts_with", "list_contains", "string_contains",
]  # fmt: skip
OPS: tuple[str, ...] = Op.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Condition:
    op: Op
    key: str
    value: Any


@dataclass(frozen=True)
class AllOf:
    parts: tuple[Filter, ...]


@dataclass(frozen=True)
class AnyOf:
    parts: tuple[Filter, ...]


Filter = Condition | AllOf | AnyOf


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _same(a: Any, b: Any) -> bool:
    na, nb = _number(a), _number(b)
    if na is not None or nb is not None:
        return na is not None and na == nb
    return type(a) is type(b) and a == b


def _compare(a: Any, b: Any, test: Callable[[Any, Any], bool]) -> bool:
    na, nb = _number(a), _number(b)
    if na is not None and nb is not None:
        return test(na, nb)
    if isinstance(a, str) and isinstance(b, str):
        return test(a, b)
    return False


def _condition(c: Condition, attrs: Mapping[str, Any]) -> bool:
    present = c.key in attrs
    v = attrs.get(c.key)
    op = c.op
    if op == "ne":
        return not present or not _same(v, c.value)
    if op == "not_in":
        return not present or not any(_same(v, x) for x in c.value)
    if not present:
        return False
    if op == "eq":
        return _same(v, c.value)
    if op == "in":
        return any(_same(v, x) for x in c.value)
    if op == "gt":
        return _compare(v, c.value, lambda a, b: a > b)
    if op == "gte":
        return _compare(v, c.value, lambda a, b: a >= b)
    if op == "lt":
        return _compare(v, c.value, lambda a, b: a < b)
    if op == "lte":
        return _compare(v, c.value, lambda a, b: a <= b)
    if op == "starts_with":
        return isinstance(v, str) and v.startswith(c.value)
    if op == "list_contains":
        return isinstance(v, list) and any(_same(x, c.value) for x in v)
    if op == "string_contains":
        if isinstance(v, str):
            return c.value in v
        return isinstance(v, list) and any(isinstance(x, str) and c.value in x for x in v)
    raise ValueError(f"unknown filter operator {op!r}")


def matches(f: Filter, attrs: Mapping[str, Any]) -> bool:
    if isinstance(f, Condition):
        return _condition(f, attrs)
    if isinstance(f, AllOf):
        return all(matches(p, attrs) for p in f.parts)
    return any(matches(p, attrs) for p in f.parts)
