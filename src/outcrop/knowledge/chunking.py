"""Text -> chunks, counting tokens with the embedding model's own tokenizer.

Four strategies, as Bedrock names them:

* ``fixed_size``: windows of ``max_tokens`` tokens; each starts ``overlap_percentage``
  percent of a window before the previous one ended. A window never ends inside a word.
* ``hierarchical``: parent windows of ``parent_max_tokens``, each cut into child windows
  of ``child_max_tokens`` (both layers overlap by ``overlap_tokens``). Children are what
  is embedded and searched; a hit returns its parent's text (broader context).
* ``semantic``: sentences, grouped with ``buffer_size`` neighbours on each side and
  embedded; a chunk ends where the distance between consecutive groups is above the
  ``breakpoint_percentile`` of all such distances, or where it would pass ``max_tokens``.
  Embedding is the caller's (async) job: :func:`semantic_groups` gives the texts,
  :func:`semantic_chunks` takes their vectors.
* ``none``: the whole document is one chunk.

Spans are character offsets into the document text; ``text == document[start:end]``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

Strategy = Literal["fixed_size", "hierarchical", "semantic", "none"]
Offsets = list[tuple[int, int]]


class Tokenizer(Protocol):
    def offsets(self, text: str) -> Offsets:
        """Character span of every token of ``text`` (no special tokens)."""
        ...


@dataclass(frozen=True)
class ChunkingConfig:
    strategy: Strategy = "fixed_size"
    max_tokens: int = 300  # Bedrock's default: ~300 tokens, 20% overlap
    overlap_percentage: int = 20
    parent_max_tokens: int = 1500
    child_max_tokens: int = 300
    overlap_tokens: int = 60
    buffer_size: int = 0
    breakpoint_percentile: int = 95

    def fingerprint(self) -> str:
        """Changes whenever the chunks of an unchanged document would change."""
        return repr(self)


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int
    end: int
    parent: str | None = None
    """hierarchical only: the parent window's text, returned instead of the child's."""


def chunk(text: str, config: ChunkingConfig, tokenizer: Tokenizer) -> list[Chunk]:
    """Chunks for every strategy but ``semantic`` (see :func:`semantic_chunks`)."""
    if config.strategy == "none":
        return [Chunk(text, 0, len(text))]
    offsets = tokenizer.offsets(text)
    if config.strategy == "fixed_size":
        overlap = config.max_tokens * config.overlap_percentage // 100
        return [_span(text, offsets, i, j) for i, j in windows(offsets, config.max_tokens, overlap)]
    if config.strategy == "hierarchical":
        out: list[Chunk] = []
        for pi, pj in windows(offsets, config.parent_max_tokens, config.overlap_tokens):
            parent = _span(text, offsets, pi, pj)
            child_offsets = offsets[pi:pj]
            for ci, cj in windows(child_offsets, config.child_max_tokens, config.overlap_tokens):
                c = _span(text, child_offsets, ci, cj)
                out.append(Chunk(c.text, c.start, c.end, parent=parent.text))
        return out
    raise ValueError(f"chunk() does not do {config.strategy!r}; use semantic_chunks()")


def windows(offsets: Offsets, size: int, overlap: int) -> list[tuple[int, int]]:
    """Token index ranges ``[i, j)`` of at most ``size`` tokens, overlapping by ``overlap``.

    A window that would end inside a word ends at the word's start instead (unless the
    word alone fills the window).
    """
    n = len(offsets)
    if n == 0:
        return []
    size = max(1, size)
    overlap = min(max(0, overlap), size - 1)
    out = []
    i = 0
    while i < n:
        j = min(n, i + size)
        if j < n:
            k = j
            while k > i + 1 and offsets[k][0] == offsets[k - 1][1]:  # k continues a word
                k -= 1
            if offsets[k][0] != offsets[k - 1][1]:  # else one word fills the whole window
                j = k
        out.append((i, j))
        if j >= n:
            break
        i = max(i + 1, j - overlap)
    return out


def _span(text: str, offsets: Offsets, i: int, j: int) -> Chunk:
    start, end = offsets[i][0], offsets[j - 1][1]
    return Chunk(text[start:end], start, end)


# --------------------------------------------------------------------------- semantic

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*\n+|\n(?=\s*[-*#\d])")


def sentences(text: str) -> list[tuple[int, int]]:
    """Character spans of the sentences (and paragraphs, list items) of ``text``."""
    spans = []
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() > start:
            spans.append((start, m.start()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def semantic_groups(text: str, config: ChunkingConfig) -> tuple[list[tuple[int, int]], list[str]]:
    """The sentences of ``text`` and, per sentence, the text to embed (it and its buffer)."""
    spans = sentences(text)
    b = config.buffer_size
    groups = [
        text[spans[max(0, i - b)][0] : spans[min(len(spans) - 1, i + b)][1]]
        for i in range(len(spans))
    ]
    return spans, groups


def semantic_chunks(
    text: str,
    spans: Sequence[tuple[int, int]],
    vectors: np.ndarray,
    config: ChunkingConfig,
    tokenizer: Tokenizer,
) -> list[Chunk]:
    """Chunks cut where the meaning shifts, none longer than ``max_tokens``."""
    if not spans:
        return []
    v = np.asarray(vectors, dtype=np.float32)
    v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    distances = 1.0 - np.sum(v[:-1] * v[1:], axis=1) if len(v) > 1 else np.zeros(0)
    threshold = (
        float(np.percentile(distances, config.breakpoint_percentile)) if len(distances) else 1.0
    )
    counts = [len(tokenizer.offsets(text[s:e])) for s, e in spans]
    out: list[Chunk] = []
    first, tokens = 0, 0
    for i, (_, _e) in enumerate(spans):
        if i > first and tokens + counts[i] > config.max_tokens:
            out.extend(_bounded(text, spans[first][0], spans[i - 1][1], config, tokenizer))
            first, tokens = i, 0
        tokens += counts[i]
        breaks = i < len(distances) and distances[i] > threshold
        if breaks or i == len(spans) - 1:
            out.extend(_bounded(text, spans[first][0], spans[i][1], config, tokenizer))
            first, tokens = i + 1, 0
    return out


def _bounded(
    text: str, start: int, end: int, config: ChunkingConfig, tokenizer: Tokenizer
) -> list[Chunk]:
    """``text[start:end]`` as one chunk, or fixed windows if one sentence is too long."""
    piece = text[start:end]
    offsets = tokenizer.offsets(piece)
    if len(offsets) <= config.max_tokens:
        return [Chunk(piece, start, end)]
    out = []
    for i, j in windows(offsets, config.max_tokens, 0):
        c = _span(piece, offsets, i, j)
        out.append(Chunk(c.text, start + c.start, start + c.end))
    return out
