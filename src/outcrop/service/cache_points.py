"""Explicit cache points: where in the *token* prompt a client's ``cachePoint`` falls.

A cache point marks the end of a cacheable prefix in a structured request (Converse
``cachePoint`` blocks in ``system``, ``messages`` and ``toolConfig.tools``; Anthropic
``cache_control`` on blocks and tools). The prompt the model reads is rendered by the
model's chat template, so the parsers leave an invisible marker in the text where a
point falls; after rendering, the markers are found, removed, and their character
offsets mapped to token counts by tokenizing the text before each one and keeping what
agrees with the whole prompt's tokens (a token that merges across the boundary is not
counted in the prefix).

Usage is then reported the way Bedrock does: cache reads and writes count whole
prefixes up to a cache point, from what the engine really reused or stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from outcrop.engines.base import CachePoint
from outcrop.engines.prompt_cache import TTL_SECONDS, common_prefix
from outcrop.errors import ValidationError

MAX_CACHE_POINTS = 4
TTLS = tuple(TTL_SECONDS)
DEFAULT_TTL = "5m"
# Supplementary private-use code points: no tokenizer text or template produces them.
_OPEN, _CLOSE = "\U000f0000", "\U000f0001"
_MARKER = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


@dataclass
class CacheMarks:
    """Cache points met while parsing one request, in the order they were met."""

    ttls: list[str] = field(default_factory=list)
    places: list[str] = field(default_factory=list)

    def add(self, ttl: str | None, place: str) -> str:
        """Record a point; returns the marker to leave in the text where it falls."""
        self.ttls.append(ttl or DEFAULT_TTL)
        self.places.append(place)
        return f"{_OPEN}{len(self.ttls) - 1}{_CLOSE}"

    def check(self, noun: str = "cachePoint blocks") -> None:
        """At most four points; a 1h point may not follow a 5m one in prompt order
        (tools, then system, then messages), as Anthropic's caching requires."""
        if len(self.ttls) > MAX_CACHE_POINTS:
            raise ValidationError(
                f"A maximum of {MAX_CACHE_POINTS} {noun} may be provided. Found {len(self.ttls)}."
            )
        rank = {"tools": 0, "system": 1, "messages": 2}
        order = sorted(range(len(self.ttls)), key=lambda i: (rank.get(self.places[i], 3), i))
        seen_short = False
        for i in order:
            if self.ttls[i] == "5m":
                seen_short = True
            elif seen_short:
                raise ValidationError(
                    "A cache point with ttl '1h' must not come after a cache point with "
                    "ttl '5m' (prompt order: tools, system, messages)."
                )


def strip_markers(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The text without markers, and each marker's ``(index, character offset)``."""
    found: list[tuple[int, int]] = []
    parts: list[str] = []
    last = 0
    length = 0
    for match in _MARKER.finditer(text):
        parts.append(text[last : match.start()])
        length += match.start() - last
        found.append((int(match.group(1)), length))
        last = match.end()
    parts.append(text[last:])
    return "".join(parts), found


def token_positions(
    text: str,
    offsets: list[tuple[int, int]],
    tokens: list[int],
    tokenize: Callable[[str], list[int]],
) -> list[tuple[int, int]]:
    """``(index, tokens before the point)`` for each marker offset in ``text``."""
    out: list[tuple[int, int]] = []
    for index, offset in offsets:
        out.append((index, common_prefix(tokenize(text[:offset]), tokens) if offset else 0))
    return out


def engine_points(
    positions: list[tuple[int, int]], ttls: list[str], n_prompt: int
) -> list[CachePoint]:
    """The points worth asking the engine for: non-empty prefixes, shorter than the
    prompt (its last token is always computed), one per position."""
    best: dict[int, float] = {}
    for index, pos in positions:
        pos = min(pos, n_prompt - 1)
        if pos <= 0 or index >= len(ttls):
            continue
        ttl = TTL_SECONDS.get(ttls[index], TTL_SECONDS[DEFAULT_TTL])
        best[pos] = max(best.get(pos, 0.0), ttl)
    return [CachePoint(pos, ttl) for pos, ttl in sorted(best.items())]


@dataclass
class CacheUsage:
    """Bedrock's view of one request's prompt: read from the cache, written, the rest."""

    read: int = 0
    write: int = 0
    cached: int = 0
    """Every prompt token reused, cache point or not (OpenAI ``cached_tokens``)."""
    details: list[tuple[str, int]] = field(default_factory=list)
    """Written tokens per TTL (Bedrock ``cacheDetails``), 1h before 5m."""


def _ttl_label(seconds: float | None) -> str:
    return "1h" if seconds is not None and seconds >= TTL_SECONDS["1h"] else "5m"


def cache_usage(points: list[CachePoint], cached: int, stored: int) -> CacheUsage:
    """Reads count the longest point prefix the engine found cached; writes, the tokens
    from there to the longest point prefix it stored. Without points both stay 0
    (automatic reuse is not Bedrock prompt caching), as on Bedrock."""
    if not points:
        return CacheUsage(cached=cached)
    read = max((p.position for p in points if p.position <= cached), default=0)
    write = max(stored - read, 0)
    # Each written segment belongs to the cache point that closes it.
    per_ttl: dict[str, int] = {}
    start = read
    for point in sorted(points, key=lambda p: p.position):
        if start < point.position <= stored:
            label = _ttl_label(point.ttl)
            per_ttl[label] = per_ttl.get(label, 0) + point.position - start
            start = point.position
    details = [(ttl, per_ttl[ttl]) for ttl in ("1h", "5m") if per_ttl.get(ttl)]
    return CacheUsage(read=read, write=write, cached=cached, details=details)
