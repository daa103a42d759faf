"""What a guardrail is configured to check, in neutral (snake_case) terms.

The service layer parses Bedrock's ``*PolicyConfig`` members into these and renders them
back for GetGuardrail; records keep them as plain JSON (:func:`to_json` /
:func:`from_json`). Actions keep the config vocabulary (``BLOCK``/``ANONYMIZE``/``NONE``);
findings (:mod:`outcrop.guardrails.findings`) speak the runtime one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

Source = Literal["INPUT", "OUTPUT"]

PII_TYPES = (
    "ADDRESS", "AGE", "AWS_ACCESS_KEY", "AWS_SECRET_KEY", "CA_HEALTH_NUMBER",
    "CA_SOCIAL_INSURANCE_NUMBER", "CREDIT_DEBIT_CARD_CVV", "CREDIT_DEBIT_CARD_EXPIRY",
    "CREDIT_DEBIT_CARD_NUMBER", "DRIVER_ID", "EMAIL", "INTERNATIONAL_BANK_ACCOUNT_NUMBER",
    "IP_ADDRESS", "LICENSE_PLATE", "MAC_ADDRESS", "NAME", "PASSWORD", "PHONE", "PIN",
    "SWIFT_CODE", "UK_NATIONAL_HEALTH_SERVICE_NUMBER", "UK_NATIONAL_INSURANCE_NUMBER",
    "UK_UNIQUE_TAXPAYER_REFERENCE_NUMBER", "URL", "USERNAME", "US_BANK_ACCOUNT_NUMBER",
    "US_BANK_ROUTING_NUMBER", "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER",
    "US_PASSPORT_NUMBER", "US_SOCIAL_SECURITY_NUMBER", "VEHICLE_IDENTIFICATION_NUMBER",
)  # fmt: skip
CONTENT_TYPES = ("SEXUAL", "VIOLENCE", "HATE", "INSULTS", "MISCONDUCT", "PROMPT_ATTACK")
STRENGTHS = ("NONE", "LOW", "MEDIUM", "HIGH")
GROUNDING_TYPES = ("GROUNDING", "RELEVANCE")


@dataclass
class Directions:
    """Per-direction switches shared by every rule: what to do on input and on output."""

    input_action: str = "BLOCK"
    output_action: str = "BLOCK"
    input_enabled: bool = True
    output_enabled: bool = True

    def action_for(self, source: Source) -> str:
        """The configured action for ``source``; ``NONE`` when that direction is off."""
        if source == "INPUT":
            return self.input_action if self.input_enabled else "NONE"
        return self.output_action if self.output_enabled else "NONE"

    def enabled(self, source: Source) -> bool:
        return self.input_enabled if source == "INPUT" else self.output_enabled


@dataclass
class Topic(Directions):
    name: str = ""
    definition: str = ""
    examples: list[str] = field(default_factory=list)


@dataclass
class ContentFilter(Directions):
    type: str = "HATE"
    input_strength: str = "NONE"
    output_strength: str = "NONE"
    input_modalities: list[str] = field(default_factory=lambda: ["TEXT"])
    output_modalities: list[str] = field(default_factory=lambda: ["TEXT"])

    def strength(self, source: Source) -> str:
        return self.input_strength if source == "INPUT" else self.output_strength


@dataclass
class Word(Directions):
    text: str = ""


@dataclass
class ManagedWords(Directions):
    type: str = "PROFANITY"


@dataclass
class PiiEntity(Directions):
    type: str = "EMAIL"
    action: str = "BLOCK"


@dataclass
class Regex(Directions):
    name: str = ""
    pattern: str = ""
    action: str = "BLOCK"
    description: str | None = None


@dataclass
class GroundingFilter:
    type: str = "GROUNDING"
    threshold: float = 0.5
    action: str = "BLOCK"
    enabled: bool = True


@dataclass
class Policies:
    """Every policy of one guardrail version. An empty list means the policy is absent."""

    topics: list[Topic] = field(default_factory=list)
    topics_tier: str | None = None
    content_filters: list[ContentFilter] = field(default_factory=list)
    content_tier: str | None = None
    words: list[Word] = field(default_factory=list)
    managed_word_lists: list[ManagedWords] = field(default_factory=list)
    pii_entities: list[PiiEntity] = field(default_factory=list)
    regexes: list[Regex] = field(default_factory=list)
    grounding_filters: list[GroundingFilter] = field(default_factory=list)
    grounding_tier: str | None = None
    has_word_policy: bool = False
    has_sensitive_policy: bool = False


_LISTS: dict[str, type] = {
    "topics": Topic,
    "content_filters": ContentFilter,
    "words": Word,
    "managed_word_lists": ManagedWords,
    "pii_entities": PiiEntity,
    "regexes": Regex,
    "grounding_filters": GroundingFilter,
}


def to_json(policies: Policies) -> dict[str, Any]:
    return asdict(policies)


def from_json(data: dict[str, Any]) -> Policies:
    """The inverse of :func:`to_json`; unknown keys (from a newer version) are ignored."""
    known = {f.name for f in fields(Policies)}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            continue
        item_type = _LISTS.get(key)
        if item_type is not None:
            names = {f.name for f in fields(item_type)}
            value = [item_type(**{k: v for k, v in item.items() if k in names}) for item in value]
        values[key] = value
    return Policies(**values)
