"""What an evaluation found, in neutral terms; the service renders Bedrock's assessment.

``action`` holds the runtime vocabulary already (``BLOCKED``/``ANONYMIZED``/``NONE``):
it is a verdict, not a config. ``detected`` says the policy matched at all; an item
whose action is ``NONE`` but which was detected is reported (Bedrock's "detect mode").
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TopicFinding:
    name: str
    action: str  # BLOCKED | NONE
    detected: bool
    score: float = 0.0


@dataclass
class ContentFinding:
    type: str
    confidence: str  # NONE | LOW | MEDIUM | HIGH
    strength: str
    action: str
    detected: bool
    score: float = 0.0


@dataclass
class WordFinding:
    match: str
    action: str
    detected: bool
    managed: bool = False  # True: from the managed PROFANITY list


@dataclass
class PiiFinding:
    type: str
    match: str
    action: str  # BLOCKED | ANONYMIZED | NONE
    detected: bool
    start: int = 0
    end: int = 0
    block: int = 0  # index of the evaluated text the match lies in


@dataclass
class RegexFinding:
    name: str
    regex: str
    match: str
    action: str
    detected: bool
    start: int = 0
    end: int = 0
    block: int = 0


@dataclass
class GroundingFinding:
    type: str
    threshold: float
    score: float
    action: str
    detected: bool


@dataclass
class Assessment:
    """One evaluation of one guardrail over some texts, in one direction."""

    topics: list[TopicFinding] = field(default_factory=list)
    content: list[ContentFinding] = field(default_factory=list)
    words: list[WordFinding] = field(default_factory=list)
    pii: list[PiiFinding] = field(default_factory=list)
    regexes: list[RegexFinding] = field(default_factory=list)
    grounding: list[GroundingFinding] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    """The evaluated texts after masking (unchanged when nothing was anonymized)."""
    units: dict[str, int] = field(default_factory=dict)
    """Policy units per policy (one unit = up to 1,000 characters), by policy name."""
    guarded_chars: int = 0
    total_chars: int = 0
    latency_ms: int = 0
    has_word_policy: bool = False
    has_sensitive_policy: bool = False

    def _items(self) -> list:
        return [*self.topics, *self.content, *self.words, *self.pii, *self.regexes, *self.grounding]

    @property
    def blocked(self) -> bool:
        return any(item.action == "BLOCKED" for item in self._items())

    @property
    def anonymized(self) -> bool:
        return any(item.action == "ANONYMIZED" for item in (*self.pii, *self.regexes))

    @property
    def intervened(self) -> bool:
        return self.blocked or self.anonymized

    @property
    def action_reason(self) -> str:
        if self.blocked:
            names = sorted({_policy_name(i) for i in self._items() if i.action == "BLOCKED"})
            return "Guardrail blocked. Policies: " + ", ".join(names) + "."
        if self.anonymized:
            return "Guardrail masked sensitive information."
        return "No action."


def _policy_name(item: object) -> str:
    return {
        TopicFinding: "topic",
        ContentFinding: "content",
        WordFinding: "word",
        PiiFinding: "sensitive information",
        RegexFinding: "sensitive information",
        GroundingFinding: "contextual grounding",
    }[type(item)]
