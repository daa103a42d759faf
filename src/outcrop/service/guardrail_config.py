"""Guardrail policy configs on the wire <-> :class:`~outcrop.guardrails.policies.Policies`.

CreateGuardrail / UpdateGuardrail bodies are validated the way botocore's ``bedrock``
model declares (lengths, patterns, enums, list sizes: botocore itself checks only
required members and minimums, the rest is the server's job) and the way Bedrock adds
on top (a regex must compile, PROMPT_ATTACK has no output strength, no duplicate filter
types). Every problem is a ``ValidationException`` naming the member.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

from outcrop.errors import ValidationError
from outcrop.guardrails.patterns import compile_user_pattern
from outcrop.guardrails.policies import (
    CONTENT_TYPES,
    GROUNDING_TYPES,
    PII_TYPES,
    STRENGTHS,
    ContentFilter,
    GroundingFilter,
    ManagedWords,
    PiiEntity,
    Policies,
    Regex,
    Topic,
    Word,
)
from outcrop.service.control_fields import missing

T = TypeVar("T")
_TOPIC_NAME = re.compile(r"[0-9a-zA-Z-_ !?.]+")
_BLOCK_NONE = ("BLOCK", "NONE")
_SENSITIVE_ACTIONS = ("BLOCK", "ANONYMIZE", "NONE")
_TIERS = ("CLASSIC", "STANDARD")


def invalid(member: str, value: Any, constraint: str) -> ValidationError:
    shown = value if isinstance(value, str | int | float) else type(value).__name__
    return ValidationError(
        f"1 validation error detected: Value '{shown}' at '{member}' failed to satisfy "
        f"constraint: {constraint}"
    )


def text(
    body: dict[str, Any],
    key: str,
    member: str,
    *,
    required: bool = False,
    lo: int = 1,
    hi: int | None = None,
    pattern: re.Pattern[str] | None = None,
) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise missing(member)
        return None
    if not isinstance(value, str):
        raise invalid(member, value, "Member must be a string")
    if len(value) < lo or (hi is not None and len(value) > hi):
        raise invalid(
            member, value, f"Member must have length between {lo} and {hi or 'unbounded'}"
        )
    if pattern is not None and not pattern.fullmatch(value):
        raise invalid(
            member, value, f"Member must satisfy regular expression pattern: {pattern.pattern}"
        )
    return value


def enum(
    body: dict[str, Any], key: str, member: str, allowed: tuple[str, ...], default: str | None
) -> str | None:
    value = body.get(key)
    if value is None:
        if default is None:
            raise missing(member)
        return default
    if value not in allowed:
        raise invalid(member, value, f"Member must satisfy enum value set: [{', '.join(allowed)}]")
    return value


def flag(body: dict[str, Any], key: str, member: str, default: bool = True) -> bool:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(member, value, "Member must be a boolean")
    return value


def items(
    body: dict[str, Any], key: str, member: str, lo: int, hi: int | None, required: bool = False
) -> list[dict[str, Any]]:
    value = body.get(key)
    if value is None:
        if required:
            raise missing(member)
        return []
    if not isinstance(value, list):
        raise invalid(member, value, "Member must be a list")
    if hi is not None and len(value) > hi:
        raise _count(member, f"less than or equal to {hi}")
    if len(value) < lo:
        raise _count(member, f"greater than or equal to {lo}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise invalid(f"{member}.{i + 1}", item, "Member must be a structure")
    return value


def _count(member: str, bound: str) -> ValidationError:
    return ValidationError(
        f"1 validation error detected: Value at '{member}' failed to satisfy constraint: "
        f"Member must have length {bound}"
    )


def _section(body: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(key, value, "Member must be a structure")
    return value


def _directions(item: dict[str, Any], member: str, actions: tuple[str, ...], default: str):
    return {
        "input_action": enum(item, "inputAction", f"{member}.inputAction", actions, default),
        "output_action": enum(item, "outputAction", f"{member}.outputAction", actions, default),
        "input_enabled": flag(item, "inputEnabled", f"{member}.inputEnabled"),
        "output_enabled": flag(item, "outputEnabled", f"{member}.outputEnabled"),
    }


def _tier(section: dict[str, Any], member: str) -> str | None:
    tier = _section(section, "tierConfig")
    if tier is None:
        return None
    return enum(tier, "tierName", f"{member}.tierConfig.tierName", _TIERS, None)


def _unique(values: list[str], member: str, what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValidationError(f"The {what} {value!r} appears more than once in {member}.")
        seen.add(value)


def _each(entries: list[dict[str, Any]], member: str, parse: Callable[[dict, str], T]) -> list[T]:
    return [parse(entry, f"{member}.{i + 1}") for i, entry in enumerate(entries)]


# ------------------------------------------------------------------------- policies


def _topic(item: dict[str, Any], m: str) -> Topic:
    examples = item.get("examples") or []
    if not isinstance(examples, list) or len(examples) > 5:
        raise invalid(f"{m}.examples", examples, "Member must have length less than or equal to 5")
    for j, example in enumerate(examples):
        text({"e": example}, "e", f"{m}.examples.{j + 1}", required=True, hi=100)
    enum(item, "type", f"{m}.type", ("DENY",), None)
    return Topic(
        name=text(item, "name", f"{m}.name", required=True, hi=100, pattern=_TOPIC_NAME) or "",
        definition=text(item, "definition", f"{m}.definition", required=True, hi=200) or "",
        examples=list(examples),
        **_directions(item, m, _BLOCK_NONE, "BLOCK"),
    )


def _content_filter(item: dict[str, Any], m: str) -> ContentFilter:
    kind = enum(item, "type", f"{m}.type", CONTENT_TYPES, None) or ""
    inp = enum(item, "inputStrength", f"{m}.inputStrength", STRENGTHS, None) or "NONE"
    out = enum(item, "outputStrength", f"{m}.outputStrength", STRENGTHS, None) or "NONE"
    if kind == "PROMPT_ATTACK" and out != "NONE":
        raise ValidationError(
            "PROMPT_ATTACK filter outputStrength must be NONE: prompt attacks are "
            "evaluated on input only."
        )
    modalities = {}
    for key in ("inputModalities", "outputModalities"):
        values = item.get(key) or ["TEXT"]
        if not isinstance(values, list) or not 1 <= len(values) <= 2:
            raise invalid(f"{m}.{key}", values, "Member must have length between 1 and 2")
        for value in values:
            enum({"v": value}, "v", f"{m}.{key}", ("TEXT", "IMAGE"), None)
        modalities[key] = list(values)
    return ContentFilter(
        type=kind,
        input_strength=inp,
        output_strength=out,
        input_modalities=modalities["inputModalities"],
        output_modalities=modalities["outputModalities"],
        **_directions(item, m, _BLOCK_NONE, "BLOCK"),
    )


def _word(item: dict[str, Any], m: str) -> Word:
    return Word(
        text=text(item, "text", f"{m}.text", required=True, hi=100) or "",
        **_directions(item, m, _BLOCK_NONE, "BLOCK"),
    )


def _managed(item: dict[str, Any], m: str) -> ManagedWords:
    return ManagedWords(
        type=enum(item, "type", f"{m}.type", ("PROFANITY",), None) or "PROFANITY",
        **_directions(item, m, _BLOCK_NONE, "BLOCK"),
    )


def _pii(item: dict[str, Any], m: str) -> PiiEntity:
    kind = enum(item, "type", f"{m}.type", PII_TYPES, None) or ""
    action = enum(item, "action", f"{m}.action", _SENSITIVE_ACTIONS, None) or "BLOCK"
    return PiiEntity(type=kind, action=action, **_directions(item, m, _SENSITIVE_ACTIONS, action))


def _regex(item: dict[str, Any], m: str) -> Regex:
    pattern = text(item, "pattern", f"{m}.pattern", required=True, hi=500) or ""
    try:
        compile_user_pattern(pattern)
    except ValueError as exc:
        raise ValidationError(
            f"The regex pattern at '{m}.pattern' is not a valid regular expression: {exc}"
        ) from None
    action = enum(item, "action", f"{m}.action", _SENSITIVE_ACTIONS, None) or "BLOCK"
    return Regex(
        name=text(item, "name", f"{m}.name", required=True, hi=100) or "",
        description=text(item, "description", f"{m}.description", hi=1000),
        pattern=pattern,
        action=action,
        **_directions(item, m, _SENSITIVE_ACTIONS, action),
    )


def _grounding(item: dict[str, Any], m: str) -> GroundingFilter:
    threshold = item.get("threshold")
    if threshold is None:
        raise missing(f"{m}.threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise invalid(f"{m}.threshold", threshold, "Member must be a number")
    if not 0 <= threshold <= 0.99:
        raise invalid(f"{m}.threshold", threshold, "Member must have value between 0 and 0.99")
    return GroundingFilter(
        type=enum(item, "type", f"{m}.type", GROUNDING_TYPES, None) or "GROUNDING",
        threshold=float(threshold),
        action=enum(item, "action", f"{m}.action", _BLOCK_NONE, "BLOCK") or "BLOCK",
        enabled=flag(item, "enabled", f"{m}.enabled"),
    )


def parse_policies(body: dict[str, Any]) -> Policies:
    """The policy members of a CreateGuardrail / UpdateGuardrail body."""
    p = Policies()
    if (topic := _section(body, "topicPolicyConfig")) is not None:
        m = "topicPolicyConfig.topicsConfig"
        p.topics = _each(items(topic, "topicsConfig", m, 1, 30, required=True), m, _topic)
        _unique([t.name for t in p.topics], m, "topic name")
        p.topics_tier = _tier(topic, "topicPolicyConfig")
    if (content := _section(body, "contentPolicyConfig")) is not None:
        m = "contentPolicyConfig.filtersConfig"
        entries = items(content, "filtersConfig", m, 1, 6, required=True)
        p.content_filters = _each(entries, m, _content_filter)
        _unique([f.type for f in p.content_filters], m, "filter type")
        p.content_tier = _tier(content, "contentPolicyConfig")
    if (words := _section(body, "wordPolicyConfig")) is not None:
        m = "wordPolicyConfig"
        p.words = _each(items(words, "wordsConfig", m + ".wordsConfig", 1, 10000), m, _word)
        managed = items(words, "managedWordListsConfig", m + ".managedWordListsConfig", 0, None)
        p.managed_word_lists = _each(managed, m + ".managedWordListsConfig", _managed)
        if not p.words and not p.managed_word_lists:
            raise ValidationError(
                "wordPolicyConfig must set wordsConfig or managedWordListsConfig."
            )
        p.has_word_policy = True
    if (sensitive := _section(body, "sensitiveInformationPolicyConfig")) is not None:
        m = "sensitiveInformationPolicyConfig"
        pii = items(sensitive, "piiEntitiesConfig", m + ".piiEntitiesConfig", 1, None)
        p.pii_entities = _each(pii, m + ".piiEntitiesConfig", _pii)
        _unique([e.type for e in p.pii_entities], m + ".piiEntitiesConfig", "PII entity type")
        regexes = items(sensitive, "regexesConfig", m + ".regexesConfig", 1, 30)
        p.regexes = _each(regexes, m + ".regexesConfig", _regex)
        if not p.pii_entities and not p.regexes:
            raise ValidationError(
                "sensitiveInformationPolicyConfig must set piiEntitiesConfig or regexesConfig."
            )
        p.has_sensitive_policy = True
    if (grounding := _section(body, "contextualGroundingPolicyConfig")) is not None:
        m = "contextualGroundingPolicyConfig.filtersConfig"
        entries = items(grounding, "filtersConfig", m, 1, None, required=True)
        p.grounding_filters = _each(entries, m, _grounding)
        _unique([f.type for f in p.grounding_filters], m, "filter type")
        p.grounding_tier = _tier(grounding, "contextualGroundingPolicyConfig")
    return p


# ------------------------------------------------------------------------- rendering


def _dirs(item: Any) -> dict[str, Any]:
    return {
        "inputAction": item.input_action,
        "outputAction": item.output_action,
        "inputEnabled": item.input_enabled,
        "outputEnabled": item.output_enabled,
    }


def render_policies(p: Policies) -> dict[str, Any]:
    """GetGuardrail's policy members (``topicPolicy``, ``contentPolicy``, ...)."""
    out: dict[str, Any] = {}
    if p.topics:
        topics = [
            {"name": t.name, "definition": t.definition, "examples": t.examples, "type": "DENY"}
            | _dirs(t)
            for t in p.topics
        ]
        out["topicPolicy"] = {"topics": topics}
        if p.topics_tier:
            out["topicPolicy"]["tier"] = {"tierName": p.topics_tier}
    if p.content_filters:
        filters = [
            {
                "type": f.type,
                "inputStrength": f.input_strength,
                "outputStrength": f.output_strength,
                "inputModalities": f.input_modalities,
                "outputModalities": f.output_modalities,
            }
            | _dirs(f)
            for f in p.content_filters
        ]
        out["contentPolicy"] = {"filters": filters}
        if p.content_tier:
            out["contentPolicy"]["tier"] = {"tierName": p.content_tier}
    if p.has_word_policy:
        word: dict[str, Any] = {}
        if p.words:
            word["words"] = [{"text": w.text} | _dirs(w) for w in p.words]
        word["managedWordLists"] = [{"type": m.type} | _dirs(m) for m in p.managed_word_lists]
        out["wordPolicy"] = word
    if p.has_sensitive_policy:
        sensitive: dict[str, Any] = {}
        if p.pii_entities:
            sensitive["piiEntities"] = [
                {"type": e.type, "action": e.action} | _dirs(e) for e in p.pii_entities
            ]
        regexes = []
        for r in p.regexes:
            entry = {"name": r.name, "pattern": r.pattern, "action": r.action} | _dirs(r)
            if r.description:
                entry["description"] = r.description
            regexes.append(entry)
        sensitive["regexes"] = regexes
        out["sensitiveInformationPolicy"] = sensitive
    if p.grounding_filters:
        filters = [
            {"type": f.type, "threshold": f.threshold, "action": f.action, "enabled": f.enabled}
            for f in p.grounding_filters
        ]
        out["contextualGroundingPolicy"] = {"filters": filters}
        if p.grounding_tier:
            out["contextualGroundingPolicy"]["tier"] = {"tierName": p.grounding_tier}
    return out
