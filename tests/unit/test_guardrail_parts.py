"""Fast tests of the guardrail parts that need no server and no model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from botocore.session import get_session

from outcrop.api.guardrails import GuardrailsApi
from outcrop.api.routing import Router
from outcrop.db import Database
from outcrop.errors import ValidationError
from outcrop.guardrails import content, pii, segments
from outcrop.guardrails.evaluate import Block, Guardrail, evaluate
from outcrop.guardrails.patterns import compile_user_pattern, find_all
from outcrop.guardrails.policies import Policies, Word, from_json, to_json
from outcrop.guardrails.records import GuardrailStore
from outcrop.guardrails.vectors import PolicyVectors
from outcrop.guardrails.words import WordMatcher, profanity_words
from outcrop.service.guarded import (
    GuardSession,
    _chunk_end,
    converse_input_blocks,
    invoke_guard_headers,
    invoke_input_blocks,
)
from outcrop.service.guardrail_config import parse_policies, render_policies
from outcrop.service.guardrails import GuardrailService
from outcrop.service.types import ChatRequest, ChatResult, Message, StreamEnd, TextDelta, Usage


async def _no_embed(texts: list[str]) -> np.ndarray:
    raise AssertionError("this guardrail must not need embeddings")


# ------------------------------------------------------------------------------ words


def test_words_match_whole_words_and_phrases_case_insensitively():
    m = WordMatcher(["ass", "hot dog", "Project-X"])
    assert [h.key for h in m.find("Hot  DOG and an ass!")] == [1, 0]
    assert m.find("a classic assessment of hotdogs") == []
    assert [h.key for h in m.find("project x launches")] == [2]


def test_profanity_list_comes_from_better_profanity_minus_non_profanity():
    words = profanity_words()
    assert len(words) > 800 and "shit" in words
    assert not {"aryan", "hell", "god"} & {w.casefold() for w in words}


# ------------------------------------------------------------------------------ regex


def test_catastrophic_pattern_is_cut_off_and_counts_as_no_match():
    started = time.perf_counter()
    assert find_all("(a+)+$", "a" * 3000 + "!") == []
    assert time.perf_counter() - started < 1.0
    assert [s.text for s in find_all(r"ORD-\d+", "x ORD-12 y ORD-345")] == ["ORD-12", "ORD-345"]


def test_invalid_pattern_is_a_value_error():
    with pytest.raises(ValueError):
        compile_user_pattern("(abc")


# ------------------------------------------------------------------------------ PII


@pytest.mark.parametrize(
    "text, kind, match",
    [
        ("pay 4111-1111-1111-1111 now", "CREDIT_DEBIT_CARD_NUMBER", "4111-1111-1111-1111"),
        ("pay 4111-1111-1111-1112 now", "CREDIT_DEBIT_CARD_NUMBER", None),
        ("ssn 123-45-6789", "US_SOCIAL_SECURITY_NUMBER", "123-45-6789"),
        ("ssn 666-45-6789", "US_SOCIAL_SECURITY_NUMBER", None),  # area 666 is never issued
        ("itin 912-70-1234", "US_INDIVIDUAL_TAX_IDENTIFICATION_NUMBER", "912-70-1234"),
        ("key AKIAIOSFODNN7EXAMPLE", "AWS_ACCESS_KEY", "AKIAIOSFODNN7EXAMPLE"),
        ("host 256.1.1.1", "IP_ADDRESS", None),
        ("host fe80::1", "IP_ADDRESS", "fe80::1"),
        ("nic 00-1A-2B-3C-4D-5E", "MAC_ADDRESS", "00-1A-2B-3C-4D-5E"),
        ("mail a.b@c.co.uk", "EMAIL", "a.b@c.co.uk"),
        ("see https://x.io/a.", "URL", "https://x.io/a"),
        ("IBAN FR14 2004 1010 0505 0001 3M02 606", "INTERNATIONAL_BANK_ACCOUNT_NUMBER", "FR14 2004 1010 0505 0001 3M02 606"),
    ],
)  # fmt: skip
def test_pattern_types_with_their_checks(text, kind, match):
    found = [e.text for e in pii.find_entities(text, [kind])]
    assert found == ([match] if match else [])


def test_overlapping_candidates_resolve_to_the_most_specific_type():
    found = pii.find_entities("card 4111 1111 1111 1111", ["CREDIT_DEBIT_CARD_NUMBER", "PHONE"])
    assert [(e.type, e.text) for e in found] == [
        ("CREDIT_DEBIT_CARD_NUMBER", "4111 1111 1111 1111")
    ]


# ----------------------------------------------------------------------- config parsing


def test_policies_round_trip_through_records_and_get_shape():
    body = {
        "wordPolicyConfig": {"wordsConfig": [{"text": "x", "outputEnabled": False}]},
        "sensitiveInformationPolicyConfig": {
            "piiEntitiesConfig": [{"type": "EMAIL", "action": "ANONYMIZE", "outputAction": "BLOCK"}]
        },
        "contextualGroundingPolicyConfig": {
            "filtersConfig": [{"type": "GROUNDING", "threshold": 0.7}]
        },
    }
    rendered = render_policies(from_json(to_json(parse_policies(body))))
    assert rendered["wordPolicy"]["words"] == [
        {
            "text": "x",
            "inputAction": "BLOCK",
            "outputAction": "BLOCK",
            "inputEnabled": True,
            "outputEnabled": False,
        }
    ]
    assert rendered["sensitiveInformationPolicy"]["piiEntities"][0] == {
        "type": "EMAIL", "action": "ANONYMIZE", "inputAction": "ANONYMIZE", "outputAction": "BLOCK",
        "inputEnabled": True, "outputEnabled": True,
    }  # fmt: skip
    assert rendered["sensitiveInformationPolicy"]["regexes"] == []
    assert rendered["contextualGroundingPolicy"]["filters"] == [
        {"type": "GROUNDING", "threshold": 0.7, "action": "BLOCK", "enabled": True}
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"topicPolicyConfig": {"topicsConfig": []}},
        {"topicPolicyConfig": {"topicsConfig": [{"name": "bad/name", "definition": "d", "type": "DENY"}]}},
        {"contentPolicyConfig": {"filtersConfig": [{"type": "HATE", "inputStrength": "HUGE", "outputStrength": "LOW"}]}},
        {"contentPolicyConfig": {"filtersConfig": [{"type": "HATE", "inputStrength": "LOW", "outputStrength": "LOW"}] * 2}},
        {"wordPolicyConfig": {}},
        {"wordPolicyConfig": {"wordsConfig": [{"text": "x" * 101}]}},
        {"sensitiveInformationPolicyConfig": {"regexesConfig": [{"name": "r", "pattern": "[", "action": "BLOCK"}]}},
    ],
    ids=["no-topics", "topic-name", "strength", "dup-filter", "empty-words", "long-word", "bad-regex"],
)  # fmt: skip
def test_bad_policy_configs_raise_validation_errors(body):
    with pytest.raises(ValidationError):
        parse_policies(body)


# ------------------------------------------------------------------------ evaluation


def test_strength_blocks_confidence_levels_like_bedrock():
    assert content.blocks("HIGH", "LOW") and content.blocks("MEDIUM", "MEDIUM")
    assert not content.blocks("MEDIUM", "LOW") and not content.blocks("LOW", "MEDIUM")
    assert content.blocks("LOW", "HIGH") and not content.blocks("NONE", "HIGH")
    assert content.confidence(0.9) == "HIGH" and content.confidence(0.1) == "NONE"


def test_segments_split_sentences_and_add_the_whole_text():
    assert segments.pieces("One. Two!  Three?") == ["One.", "Two!", "Three?", "One. Two! Three?"]
    assert all(len(p) <= segments.MAX_CHARS for p in segments.sentences("word " * 400))


def test_context_blocks_are_not_guarded_and_masking_is_exact():
    g = Guardrail("g", "DRAFT", "arn", "in", "out", parse_policies({
        "sensitiveInformationPolicyConfig": {
            "piiEntitiesConfig": [{"type": "EMAIL", "action": "ANONYMIZE"}],
            "regexesConfig": [{"name": "ID", "pattern": r"ID\d+", "action": "ANONYMIZE"}],
        }
    }))  # fmt: skip
    blocks = [Block("x@y.io", frozenset({"grounding_source"})), Block("Mail x@y.io re ID42.")]
    a = asyncio.run(evaluate(g, blocks, "INPUT", PolicyVectors(_no_embed)))
    assert a.outputs == ["Mail {EMAIL} re {ID}."]
    assert (a.guarded_chars, a.total_chars) == (20, 26)
    assert a.anonymized and not a.blocked


# -------------------------------------------------------------------- runtime pieces


def test_converse_guard_content_blocks_replace_the_messages():
    body = {
        "messages": [
            {"role": "user", "content": [{"text": "plain"}, {"guardContent": {"text": {"text": "g", "qualifiers": ["query"]}}}]}
        ]
    }  # fmt: skip
    assert converse_input_blocks(body) == [Block("g", frozenset({"query", "guard_content"}))]
    assert converse_input_blocks({"messages": [{"role": "user", "content": [{"text": "p"}]}]}) == [
        Block("p")
    ]


def test_invoke_tags_select_the_guarded_text_and_are_stripped():
    tag = "amazon-bedrock-guardrails-guardContent_xyz"
    request = ChatRequest(messages=[Message("user", f"keep <{tag}>check me</{tag}> keep")])
    assert invoke_input_blocks(request, "xyz") == [Block("check me", frozenset({"guard_content"}))]
    assert request.messages[0].text == "keep check me keep"


def test_invoke_headers_need_an_identifier_for_a_body_config():
    with pytest.raises(ValidationError):
        invoke_guard_headers({}, {"amazon-bedrock-guardrailConfig": {}})
    body = {"amazon-bedrock-guardrailConfig": {"streamProcessingMode": "ASYNCHRONOUS"}, "x": 1}
    headers = {"x-amzn-bedrock-guardrailidentifier": "abc", "x-amzn-bedrock-guardrailversion": "1"}
    assert invoke_guard_headers(headers, body) == ("abc", "1", "disabled", "async", None)
    assert body == {"x": 1}


def test_chunks_end_at_sentence_ends_past_the_minimum():
    assert _chunk_end("Short. ") is None
    text = "A" * 130 + ". Next part"
    assert _chunk_end(text) == 132  # after ". "


def test_sync_stream_never_releases_a_blocked_chunk(tmp_path):
    service = GuardrailService(GuardrailStore(Database(tmp_path)), "us-east-1", "0" * 12, _no_embed)
    g = Guardrail("g", "DRAFT", "arn", "in", "BLOCKED OUT", Policies(words=[Word(text="secret")]))
    session = GuardSession(service, g, mode="sync")
    first = "This is an ordinary opening sentence that is long enough to pass the check alone. "
    second = "Then the secret code is revealed to everyone who asked for it in the chat. "

    async def model():
        for piece in (first + second + "More.").split(" "):
            yield TextDelta(piece + " ")
        yield StreamEnd(ChatResult("", "end_turn", Usage(5, 30)))

    async def collect():
        return [e async for e in session.guard_stream(model(), input_tokens=5)]

    events = asyncio.run(collect())
    released = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert "secret" not in released and released.startswith("This is an ordinary")
    assert released.endswith("BLOCKED OUT")
    assert events[-1].result.stop_reason == "guardrail_intervened"


# -------------------------------------------------------------------- wire contract


def test_routes_match_botocore_models():
    router = Router()
    GuardrailsApi(None).register(router)  # type: ignore[arg-type]
    session = get_session()
    models = {name: session.get_service_model(name) for name in ("bedrock", "bedrock-runtime")}
    ops = {
        "CreateGuardrail": "bedrock", "GetGuardrail": "bedrock", "ListGuardrails": "bedrock",
        "UpdateGuardrail": "bedrock", "DeleteGuardrail": "bedrock",
        "CreateGuardrailVersion": "bedrock", "ApplyGuardrail": "bedrock-runtime",
    }  # fmt: skip
    ours = {r.operation: (r.method, "/" + "/".join(r.parts)) for r in router._routes}
    for op, service in ops.items():
        http = models[service].operation_model(op).http
        assert ours[op] == (http["method"], http["requestUri"].split("?")[0]), op
