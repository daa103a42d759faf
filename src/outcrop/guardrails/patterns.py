"""Customer regexes, run with a time limit so a catastrophic pattern cannot stall the server.

Patterns come from CreateGuardrail and run against every text the guardrail sees, so a
pattern such as ``(a+)+$`` must not be able to spin for minutes on ``"aaaa...b"``. The
``regex`` module takes a ``timeout`` per call and raises ``TimeoutError`` when it runs
out; a timed-out pattern counts as "no match" for that text, and the evaluation says so
in the log. The budget is per pattern and text (25 ms), well under a request's latency.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

import regex

log = logging.getLogger("outcrop.guardrails")

TIMEOUT_S = 0.025


@lru_cache(maxsize=1024)
def compile_user_pattern(pattern: str) -> regex.Pattern[str]:
    """Compile a customer pattern; ValueError with the reason when it is not valid."""
    try:
        return regex.compile(pattern, regex.VERSION0)
    except (regex.error, OverflowError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


@dataclass
class Span:
    start: int
    end: int
    text: str


def find_all(pattern: str, text: str, timeout: float = TIMEOUT_S) -> list[Span]:
    """Non-empty matches of ``pattern`` in ``text``; [] when the time budget runs out."""
    compiled = compile_user_pattern(pattern)
    try:
        return [
            Span(m.start(), m.end(), m.group(0))
            for m in compiled.finditer(text, timeout=timeout)
            if m.end() > m.start()
        ]
    except TimeoutError:
        log.warning("guardrail regex %r timed out after %.0f ms", pattern, timeout * 1000)
        return []
