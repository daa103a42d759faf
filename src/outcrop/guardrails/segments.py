"""Cutting text into the pieces the embedding policies score.

Topics and content filters score every sentence on its own and the whole text as one
piece (a topic can be spread over sentences that each look harmless). Sentences longer
than ``MAX_CHARS`` are cut at word boundaries so one piece stays within the embedding
model's useful length.
"""

from __future__ import annotations

import re

MAX_CHARS = 320
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+|\n+")


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (stripped, non-empty), long ones cut into pieces."""
    out: list[str] = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        _add(out, text[start : m.start()])
        start = m.end()
    _add(out, text[start:])
    return out


def _add(out: list[str], sentence: str) -> None:
    sentence = sentence.strip()
    while len(sentence) > MAX_CHARS:
        cut = sentence.rfind(" ", 0, MAX_CHARS)
        cut = cut if cut > MAX_CHARS // 2 else MAX_CHARS
        out.append(sentence[:cut].strip())
        sentence = sentence[cut:].strip()
    if sentence:
        out.append(sentence)


def pieces(text: str) -> list[str]:
    """Sentences, plus the whole text when it has more than one sentence."""
    parts = sentences(text)
    if len(parts) > 1 and len(text) <= 4 * MAX_CHARS:
        parts.append(" ".join(parts))
    return parts
