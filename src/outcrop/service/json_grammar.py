"""JSON Schema -> llama.cpp grammar (GBNF), tightened where validity depends on it.

llama-cpp-python's converter ignores integer ``minimum``/``maximum`` and leaves strings
unbounded, so a sampled value could break the schema or loop until maxTokens. This
subclass adds exact integer ranges and bounded strings (with llama.cpp's native
``{m,n}`` repetition instead of the converter's deep nesting).
"""

from __future__ import annotations

import json
import math
from typing import Any

from llama_cpp.llama_grammar import PRIMITIVE_RULES, RESERVED_NAMES, SchemaConverter

# Strings whose schema sets no maxLength are capped at this many characters: a small
# model can otherwise repeat itself inside a string until maxTokens cuts the JSON.
MAX_FREE_STRING_CHARS = 256
_MAX_DIGITS = 18


def _same_length(lo: str, hi: str) -> list[str]:
    """Alternatives matching every digit string of len(lo) between lo and hi."""
    if len(lo) == 1:
        return [f"[{lo}-{hi}]"]
    if lo[0] == hi[0]:
        return [f'"{lo[0]}" {rest}' for rest in _same_length(lo[1:], hi[1:])]
    tail = len(lo) - 1
    out = [f'"{lo[0]}" {rest}' for rest in _same_length(lo[1:], "9" * tail)]
    if int(lo[0]) + 1 <= int(hi[0]) - 1:
        out.append(f"[{int(lo[0]) + 1}-{int(hi[0]) - 1}] " + " ".join(["[0-9]"] * tail))
    out += [f'"{hi[0]}" {rest}' for rest in _same_length("0" * tail, hi[1:])]
    return out


def _nonneg_range(lo: int, hi: int | None) -> list[str]:
    """Alternatives for lo <= n <= hi (hi None: unbounded), no leading zeros."""
    out: list[str] = []
    top = hi if hi is not None else 10**_MAX_DIGITS - 1
    for digits in range(len(str(lo)), len(str(top)) + 1):
        first = 0 if digits == 1 else 10 ** (digits - 1)
        a, b = max(lo, first), min(top, 10**digits - 1)
        if a > b:
            continue
        if hi is None and a == first and digits > 1:
            # Everything from here up is "a non-zero digit, then up to N more digits".
            out.append(f"[1-9] [0-9]{{{digits - 1},{_MAX_DIGITS - 1}}}")
            break
        out += _same_length(str(a), str(b))
    return out


def integer_range_rule(lo: int | None, hi: int | None) -> str:
    alternatives: list[str] = []
    if lo is None or lo < 0:
        # Negative part: -m for m in [max(1, -hi), -lo].
        neg_lo = 1 if hi is None or hi >= 0 else -hi
        neg_hi = None if lo is None else -lo
        alternatives += [f'"-" ({alt})' for alt in _nonneg_range(neg_lo, neg_hi)]
    if hi is None or hi >= 0:
        alternatives += _nonneg_range(max(lo or 0, 0), hi)
    if not alternatives:
        raise ValueError(f"integer range [{lo}, {hi}] is empty")
    return "(" + " | ".join(f"({a})" for a in alternatives) + ") space"


def _bounds(schema: dict[str, Any]) -> tuple[int | None, int | None]:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    lo = None if lo is None else math.ceil(lo)
    hi = None if hi is None else math.floor(hi)
    if "exclusiveMinimum" in schema:
        x = math.floor(schema["exclusiveMinimum"]) + 1
        lo = x if lo is None else max(lo, x)
    if "exclusiveMaximum" in schema:
        x = math.ceil(schema["exclusiveMaximum"]) - 1
        hi = x if hi is None else min(hi, x)
    return lo, hi


class _StrictConverter(SchemaConverter):
    def visit(self, schema, name):  # noqa: ANN001 - overrides the library's signature
        rule_name = name + "-" if name in RESERVED_NAMES else (name or "root")
        kind = schema.get("type")
        limited = any(
            k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
        )
        if kind == "integer" and limited and not any(k in schema for k in ("enum", "const")):
            lo, hi = _bounds(schema)
            return self._add_rule(rule_name, integer_range_rule(lo, hi))
        plain_string = kind == "string" and not any(
            k in schema for k in ("enum", "const", "pattern", "format", "$ref", "oneOf", "anyOf")
        )
        if plain_string:
            char = self._add_primitive("char", PRIMITIVE_RULES["char"])
            lo = int(schema.get("minLength", 0))
            hi = int(schema.get("maxLength", max(lo, MAX_FREE_STRING_CHARS)))
            return self._add_rule(rule_name, f'"\\"" {char}{{{lo},{hi}}} "\\"" space')
        return super().visit(schema, name)


def schema_to_gbnf(schema: dict[str, Any], prop_order: list[str] | None = None) -> str:
    converter = _StrictConverter(
        prop_order={n: i for i, n in enumerate(prop_order or [])},
        allow_fetch=False,
        dotall=False,
        raw_pattern=False,
    )
    resolved = converter.resolve_refs(json.loads(json.dumps(schema)), "input")
    converter.visit(resolved, "")
    return converter.format_grammar()
