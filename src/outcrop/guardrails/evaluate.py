"""One evaluation of one guardrail version over some texts, in one direction.

Which text each policy reads:

* blocks qualified ``grounding_source`` or ``query`` are context for the grounding
  check only; every other block is *guarded* (words, PII, topics, content filters);
* PROMPT_ATTACK reads only ``guard_content``-qualified blocks, on input, as on Bedrock;
* grounding runs on output, when a grounding source is present (RELEVANCE also needs a
  query).

Masking (ANONYMIZE) rewrites the guarded texts right to left, so offsets stay valid;
PII entities win over regex matches that overlap them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from outcrop.guardrails import content as content_filters
from outcrop.guardrails import grounding, pii, segments
from outcrop.guardrails.findings import (
    Assessment,
    ContentFinding,
    GroundingFinding,
    PiiFinding,
    RegexFinding,
    TopicFinding,
    WordFinding,
)
from outcrop.guardrails.patterns import find_all
from outcrop.guardrails.policies import Policies, Source
from outcrop.guardrails.topics import topic_score
from outcrop.guardrails.vectors import PolicyVectors
from outcrop.guardrails.words import WordMatcher, profanity_matcher

_VERDICT = {"BLOCK": "BLOCKED", "ANONYMIZE": "ANONYMIZED", "NONE": "NONE"}
CONTEXT_QUALIFIERS = frozenset({"grounding_source", "query"})


@dataclass(frozen=True)
class Block:
    text: str
    qualifiers: frozenset[str] = frozenset()

    @property
    def guarded(self) -> bool:
        return not (self.qualifiers & CONTEXT_QUALIFIERS)


@dataclass
class Guardrail:
    """A guardrail version ready to evaluate (built once per version, then cached)."""

    guardrail_id: str
    version: str
    arn: str
    blocked_input_messaging: str
    blocked_outputs_messaging: str
    policies: Policies
    key: str = ""
    words: WordMatcher = field(init=False)

    def __post_init__(self) -> None:
        self.words = WordMatcher([w.text for w in self.policies.words])
        if not self.key:
            self.key = f"{self.guardrail_id}:{self.version}"

    def blocked_message(self, source: Source) -> str:
        return self.blocked_input_messaging if source == "INPUT" else self.blocked_outputs_messaging


def _units(chars: int) -> int:
    return math.ceil(chars / 1000) if chars else 0


async def evaluate(
    guardrail: Guardrail,
    blocks: list[Block],
    source: Source,
    vectors: PolicyVectors,
    *,
    full: bool = False,
) -> Assessment:
    started = time.perf_counter()
    p = guardrail.policies
    guarded = [b for b in blocks if b.guarded]
    out = Assessment(has_word_policy=p.has_word_policy, has_sensitive_policy=p.has_sensitive_policy)
    out.total_chars = sum(len(b.text) for b in blocks)
    out.guarded_chars = sum(len(b.text) for b in guarded)
    _words(guardrail, guarded, source, out)
    _sensitive(p, guarded, source, out)
    await _embedded(guardrail, blocks, guarded, source, vectors, out, full)
    out.outputs = _masked(guarded, out)
    units = sum(_units(len(b.text)) for b in guarded)
    out.units = {
        "topic": units if p.topics else 0,
        "content": units if p.content_filters else 0,
        "word": units if p.has_word_policy else 0,
        "sensitive": units if p.pii_entities else 0,
        "sensitive_free": units if p.regexes else 0,
        "grounding": sum(_units(len(b.text)) for b in blocks) if out.grounding else 0,
    }
    out.latency_ms = int((time.perf_counter() - started) * 1000)
    return out


def _words(g: Guardrail, guarded: list[Block], source: Source, out: Assessment) -> None:
    p = g.policies
    custom: dict[int, WordFinding] = {}
    managed: dict[str, WordFinding] = {}
    profanity = [m for m in p.managed_word_lists if m.enabled(source)]
    for block in guarded:
        for hit in g.words.find(block.text) if len(g.words) else []:
            word = p.words[hit.key]
            if word.enabled(source) and hit.key not in custom:
                action = _VERDICT[word.action_for(source)]
                custom[hit.key] = WordFinding(word.text, action, True)
        if profanity:
            for hit in profanity_matcher().find(block.text):
                match = block.text[hit.start : hit.end]
                if match.casefold() not in managed:
                    action = _VERDICT[profanity[0].action_for(source)]
                    managed[match.casefold()] = WordFinding(match, action, True, managed=True)
    out.words = [*custom.values(), *managed.values()]


def _sensitive(p: Policies, guarded: list[Block], source: Source, out: Assessment) -> None:
    entities = {e.type: e for e in p.pii_entities if e.enabled(source)}
    regexes = [r for r in p.regexes if r.enabled(source)]
    for index, block in enumerate(guarded):
        if entities:
            for found in pii.find_entities(block.text, entities):
                action = _VERDICT[entities[found.type].action_for(source)]
                out.pii.append(
                    PiiFinding(found.type, found.text, action, True, found.start, found.end, index)
                )
        for rule in regexes:
            for span in find_all(rule.pattern, block.text):
                action = _VERDICT[rule.action_for(source)]
                out.regexes.append(
                    RegexFinding(
                        rule.name,
                        rule.pattern,
                        span.text,
                        action,
                        True,
                        span.start,
                        span.end,
                        index,
                    )
                )


async def _embedded(
    g: Guardrail,
    blocks: list[Block],
    guarded: list[Block],
    source: Source,
    vectors: PolicyVectors,
    out: Assessment,
    full: bool,
) -> None:
    p = g.policies
    topics = [t for t in p.topics if t.enabled(source)]
    filters = [f for f in p.content_filters if f.enabled(source) and f.strength(source) != "NONE"]
    grounding_filters = [f for f in p.grounding_filters if f.enabled] if source == "OUTPUT" else []
    sources = [b.text for b in blocks if "grounding_source" in b.qualifiers]
    queries = [b.text for b in blocks if "query" in b.qualifiers]
    if not sources:
        grounding_filters = []
    if not (topics or filters or grounding_filters) or not guarded:
        return

    # Everything this request needs, embedded in one call.
    texts: list[str] = []
    piece_rows: list[tuple[int, int, bool]] = []  # (first row, row count, guard_content)
    for block in guarded:
        parts = segments.pieces(block.text)
        piece_rows.append((len(texts), len(parts), "guard_content" in block.qualifiers))
        texts.extend(parts)
    answer_text = " ".join(b.text for b in guarded)
    answer_sentences = segments.sentences(answer_text) if grounding_filters else []
    answer_at = len(texts)
    texts.extend(answer_sentences)
    source_text = " ".join(sources)
    source_sentences = segments.sentences(source_text) if grounding_filters else []
    source_at = len(texts)
    texts.extend(source_sentences)
    query_at = len(texts)
    if grounding_filters and queries:
        texts.append(" ".join(queries))
    matrix = await vectors.vectors(texts) if texts else np.zeros((0, 0), np.float32)
    all_pieces = matrix[:answer_at] if answer_at else matrix[:0]

    if topics and all_pieces.shape[0]:
        refs_by_name = {r.name: r for r in await vectors.topics(g.key, p.topics)}
        for topic in topics:
            score = topic_score(refs_by_name[topic.name], all_pieces)
            detected = score >= 1.0
            if detected or full:
                action = _VERDICT[topic.action_for(source)] if detected else "NONE"
                out.topics.append(TopicFinding(topic.name, action, detected, round(score, 4)))

    if filters:
        classifier = await vectors.classifier()
        probs = classifier.probabilities(matrix[:answer_at]) if answer_at else None
        for f in filters:
            k = content_filters.CATEGORIES.index(f.type)
            rows = [
                r
                for start, n, tagged in piece_rows
                if f.type != "PROMPT_ATTACK" or (tagged and source == "INPUT")
                for r in range(start, start + n)
            ]
            score = float(probs[rows, k].max()) if rows and probs is not None else 0.0
            level = content_filters.confidence(score)
            strength = f.strength(source)
            detected = content_filters.blocks(strength, level)
            if detected or full:
                action = _VERDICT[f.action_for(source)] if detected else "NONE"
                out.content.append(
                    ContentFinding(f.type, level, strength, action, detected, round(score, 4))
                )

    for f in grounding_filters:
        if f.type == "GROUNDING":
            score = grounding.grounding_score(
                answer_sentences,
                matrix[answer_at:source_at],
                source_text,
                matrix[source_at:query_at],
            )
        elif queries:
            score = grounding.relevance_score(matrix[query_at], matrix[answer_at:source_at])
        else:
            continue
        detected = score < f.threshold
        action = "BLOCKED" if detected and f.action == "BLOCK" else "NONE"
        out.grounding.append(GroundingFinding(f.type, f.threshold, score, action, detected))


def _masked(guarded: list[Block], out: Assessment) -> list[str]:
    texts = [b.text for b in guarded]
    if not out.anonymized:
        return texts
    spans: dict[int, list[tuple[int, int, str]]] = {}
    for f in out.pii:
        if f.action == "ANONYMIZED":
            spans.setdefault(f.block, []).append((f.start, f.end, "{" + f.type + "}"))
    for r in out.regexes:
        if r.action == "ANONYMIZED":
            taken = spans.get(r.block, [])
            if all(r.end <= s or r.start >= e for s, e, _ in taken):
                spans.setdefault(r.block, []).append((r.start, r.end, "{" + r.name + "}"))
    for index, items in spans.items():
        text = texts[index]
        for start, end, placeholder in sorted(items, reverse=True):
            text = text[:start] + placeholder + text[end:]
        texts[index] = text
    return texts
