"""The JSON-schema grammar accepts exactly the values the schema allows (checked by
llama.cpp's own grammar engine on a real vocabulary is in the integration tests; here
the integer-range construction is checked exhaustively with a regex translation)."""

from __future__ import annotations

import re

import pytest

from outcrop.service.json_grammar import integer_range_rule, schema_to_gbnf


def _as_regex(rule: str) -> re.Pattern[str]:
    body = rule.removesuffix(" space")
    body = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), body)
    body = body.replace(" ", "")
    return re.compile(f"^{body}$")


@pytest.mark.parametrize(
    "lo, hi",
    [(1, 20), (0, 100), (-15, 7), (-300, -12), (5, 5), (0, 9), (10, 99), (123, 4567), (-9, 0)],
)
def test_integer_range_matches_exactly(lo, hi):
    pattern = _as_regex(integer_range_rule(lo, hi))
    for n in range(lo - 50, hi + 51):
        assert bool(pattern.match(str(n))) == (lo <= n <= hi), n
    assert not pattern.match("01") and not pattern.match("-0")


def test_half_open_ranges():
    ge = _as_regex(integer_range_rule(42, None))
    assert ge.match("42") and ge.match("1000000") and not ge.match("41") and not ge.match("-1")
    le = _as_regex(integer_range_rule(None, -3))
    assert le.match("-3") and le.match("-99999") and not le.match("-2") and not le.match("0")


def test_strings_are_bounded_and_integers_ranged_in_a_schema():
    g = schema_to_gbnf(
        {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 1, "maximum": 20},
                "s": {"type": "string"},
            },
            "required": ["n", "s"],
        }
    )
    assert "char{0,256}" in g
    assert "[1-9]" in g and "integral-part" not in g
