"""Prompt caching's pure parts: the host LRU, cache-point parsing and usage arithmetic."""

from __future__ import annotations

import random
import time

import pytest

from outcrop.engines.base import CachePoint, GenerationRequest
from outcrop.engines.llamacpp.scheduler import Scheduler
from outcrop.engines.llamacpp.sequence import Sequence
from outcrop.engines.prompt_cache import PromptCache, common_prefix
from outcrop.errors import ValidationError
from outcrop.service.cache_points import (
    CacheMarks,
    cache_usage,
    engine_points,
    strip_markers,
    token_positions,
)
from outcrop.service.converse import parse_converse, stream_metadata, usage_body
from outcrop.service.dialects.anthropic import AnthropicDialect
from outcrop.service.dialects.base import InvokeContext
from outcrop.service.prompt import render_completion_transcript
from outcrop.service.tools import plan_tools
from outcrop.service.types import ChatResult, Usage
from tests.unit.test_converse import MODEL, check_shape, user, wire_body

WEATHER = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Weather",
        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
}
CACHE = {"cachePoint": {"type": "default"}}

# ----------------------------------------------------------------------- host cache


def _usable(entry, common):
    return common


def test_common_prefix_matches_a_naive_scan():
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.randrange(3) for _ in range(rng.randrange(0, 300))]
        b = a[: rng.randrange(0, len(a) + 1)] + [rng.randrange(3) for _ in range(rng.randrange(5))]
        naive = 0
        while naive < min(len(a), len(b)) and a[naive] == b[naive]:
            naive += 1
        assert common_prefix(a, b) == naive


def test_lookup_finds_longest_prefix_of_its_owner_only():
    cache = PromptCache(10_000)
    cache.put("model-a", [1, 2, 3, 4], b"a", 100)
    cache.put("model-b", [1, 2, 3, 4, 5, 6], b"b", 100)
    entry, n = cache.lookup("model-a", [1, 2, 3, 4, 5, 6, 7], _usable)
    assert entry is not None and entry.data == b"a" and n == 4
    entry, n = cache.lookup("model-c", [1, 2, 3], _usable)
    assert entry is None and n == 0


def test_full_cache_evicts_least_recently_used_and_counts_it():
    cache = PromptCache(300)
    cache.put("m", [1, 1], b"x", 100)
    cache.put("m", [2, 2], b"y", 100)
    cache.put("m", [3, 3], b"z", 100)
    hit, _ = cache.lookup("m", [1, 1, 9], _usable)
    cache.touch(hit)  # [1, 1] is now the most recently used
    assert cache.put("m", [4, 4], b"w", 100)
    assert cache.lookup("m", [2, 2, 9], _usable)[0] is None  # the LRU one went
    assert cache.lookup("m", [1, 1, 9], _usable)[0] is not None
    stats = cache.stats("m")
    assert stats.evictions == 1 and stats.entries == 3 and stats.bytes == 300 == cache.bytes


def test_entry_larger_than_the_budget_is_refused_without_evicting():
    cache = PromptCache(150)
    cache.put("m", [1], b"x", 100)
    assert not cache.put("m", [2], b"y", 200)
    assert cache.stats("m").entries == 1 and cache.stats("m").evictions == 0


def test_contained_prefix_is_not_stored_twice_and_longer_one_replaces_it():
    cache = PromptCache(10_000)
    assert cache.put("m", [1, 2, 3], b"short", 30)
    assert cache.put("m", [1, 2, 3, 4, 5], b"long", 50)  # replaces [1, 2, 3]
    assert cache.stats("m").entries == 1 and cache.bytes == 50
    assert not cache.put("m", [1, 2], b"shorter", 20)  # already held by the long one
    assert cache.stats("m").entries == 1
    # Sliding-window states cannot be cut shorter: both are kept.
    cache.put("m", [1, 2], b"swa", 20, truncatable=False)
    assert cache.stats("m").entries == 2


def test_drop_forgets_an_unloaded_models_entries():
    cache = PromptCache(10_000)
    cache.put("a", [1], b"x", 10)
    cache.put("b", [1], b"y", 10)
    assert cache.drop("a") == 1
    assert cache.lookup("a", [1, 2], _usable)[0] is None
    assert cache.lookup("b", [1, 2], _usable)[0] is not None and cache.bytes == 10


def test_explicit_ttl_expires_an_unused_entry():
    cache = PromptCache(10_000)
    cache.put("m", [1, 2], b"x", 10, ttl=0.05)
    time.sleep(0.1)
    assert cache.lookup("m", [1, 2, 3], _usable)[0] is None
    assert cache.stats("m").evictions == 1 and cache.bytes == 0


# ---------------------------------------------------------------- scheduler cut points


def test_prefill_chunk_ends_at_each_cache_point():
    sched = Scheduler(n_slots=2, max_step_tokens=512, prefill_chunk=64)
    s = Sequence(GenerationRequest(list(range(1, 201)), 4), emit=lambda e: None)
    s.store_points = [150]
    sched.add(s)
    (entry,) = sched.schedule()
    assert len(entry.tokens) == 150 and not entry.wants_logits
    s.n_prefilled = 150
    s.store_points = []
    (entry,) = sched.schedule()
    assert entry.start_pos == 150 and len(entry.tokens) == 50 and entry.wants_logits


def test_placer_chooses_the_slot_and_the_reused_prefix():
    def place(seq, free):
        free.remove(1)
        seq.n_prefilled = 7
        return 1

    sched = Scheduler(n_slots=2, max_step_tokens=512, prefill_chunk=64, place=place)
    s = Sequence(GenerationRequest(list(range(1, 11)), 4), emit=lambda e: None)
    sched.add(s)
    (entry,) = sched.schedule()
    assert s.slot == 1 and entry.start_pos == 7 and entry.tokens == [8, 9, 10]


# ------------------------------------------------------------------- cache points


def test_markers_are_stripped_and_mapped_to_token_counts():
    marks = CacheMarks()
    text = "abc" + marks.add(None, "system") + "def" + marks.add("1h", "messages") + "g"
    clean, offsets = strip_markers(text)
    assert clean == "abcdefg" and offsets == [(0, 3), (1, 6)]
    tokens = [ord(c) for c in clean]
    positions = token_positions(clean, offsets, tokens, lambda t: [ord(c) for c in t])
    assert positions == [(0, 3), (1, 6)]
    points = engine_points(positions, marks.ttls, len(tokens))
    assert [(p.position, p.ttl) for p in points] == [(3, 300.0), (6, 3600.0)]


def test_a_token_merging_across_the_point_is_left_out_of_the_prefix():
    # "ab" tokenizes as one token in the whole prompt but "a" alone differs.
    def tokenize(t):
        return [99] if t == "ab" else [ord(c) for c in t]

    assert token_positions("ab", [(0, 1)], [99], tokenize) == [(0, 0)]


def test_cache_usage_counts_whole_prefixes():
    points = [CachePoint(100), CachePoint(300)]
    cold = cache_usage(points, cached=0, stored=300)
    assert (cold.read, cold.write) == (0, 300)
    warm = cache_usage(points, cached=320, stored=0)
    assert (warm.read, warm.write, warm.cached) == (300, 0, 320)
    half = cache_usage(points, cached=150, stored=300)
    assert (half.read, half.write) == (100, 200)
    mixed = cache_usage([CachePoint(100, 3600.0), CachePoint(300, 300.0)], cached=0, stored=300)
    assert mixed.details == [("1h", 100), ("5m", 200)]
    auto = cache_usage([], cached=250, stored=0)
    assert (auto.read, auto.write, auto.cached) == (0, 0, 250)


def test_usage_adds_up_and_matches_botocore_token_usage():
    usage = Usage(
        1000, 20, cache_read_tokens=600, cache_write_tokens=300, cache_points=True,
        cache_details=[("5m", 300)],
    )  # fmt: skip
    body = usage_body(usage)
    assert body["cacheDetails"] == [{"ttl": "5m", "inputTokens": 300}]
    assert (
        body["inputTokens"] + body["cacheReadInputTokens"] + body["cacheWriteInputTokens"] == 1000
    )
    assert body["totalTokens"] == 1020
    check_shape(body, MODEL.shape_for("TokenUsage"))
    event, payload = stream_metadata(usage, 5)
    check_shape(payload, MODEL.shape_for("ConverseStreamMetadataEvent"))
    assert "cacheReadInputTokens" not in usage_body(Usage(10, 2))


# ------------------------------------------------------------------ Converse parsing


def test_cache_points_in_system_messages_and_tools_leave_markers():
    body = wire_body(
        system=[{"text": "Be brief."}, {"cachePoint": {"type": "default", "ttl": "1h"}}],
        messages=[{"role": "user", "content": [{"text": "Long document"}, CACHE]}],
        toolConfig={"tools": [WEATHER, {"cachePoint": {"type": "default", "ttl": "1h"}}]},
    )
    request = parse_converse(body)
    assert request.cache.ttls == ["1h", "5m", "1h"]
    assert strip_markers(request.system) == ("Be brief.", [(0, 9)])
    assert strip_markers(request.messages[0].text)[0] == "Long document"
    plan = plan_tools(request)
    assert plan is not None and strip_markers(plan.system_addition)[1]
    rendered = render_completion_transcript(request).text
    assert [i for i, _ in strip_markers(rendered)[1]] == [0, 1]


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"messages": [user("hi")], "system": [CACHE, {"text": "x"}]}, "must come after"),
        ({"messages": [{"role": "user", "content": [CACHE]}]}, "must come after"),
        ({"messages": [user("hi")], "toolConfig": {"tools": [CACHE, WEATHER]}}, "must come after"),
        (
            {"messages": [{"role": "user", "content": [{"text": "x"}] + [CACHE] * 5}]},
            "A maximum of 4",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"text": "x"},
                            {"cachePoint": {"type": "default", "ttl": "1h"}},
                        ],
                    }
                ],
                "system": [{"text": "s"}, {"cachePoint": {"type": "default", "ttl": "5m"}}],
            },
            "ttl '1h' must not come after",
        ),
    ],
)
def test_misplaced_or_too_many_cache_points_are_validation_errors(kwargs, needle):
    with pytest.raises(ValidationError, match=needle):
        parse_converse(wire_body(**kwargs))


@pytest.mark.parametrize(
    "point", [{"type": "ephemeral"}, {"type": "default", "ttl": "10m"}, {"ttl": "5m"}]
)
def test_unknown_cache_point_type_or_ttl_is_a_validation_error(point):
    body = {"messages": [{"role": "user", "content": [{"text": "x"}, {"cachePoint": point}]}]}
    with pytest.raises(ValidationError):
        parse_converse(body)


def test_cache_point_inside_a_tool_result_is_refused():
    body = {
        "messages": [
            user("weather?"),
            {
                "role": "assistant",
                "content": [{"toolUse": {"toolUseId": "t", "name": "get_weather", "input": {}}}],
            },
            {"role": "user", "content": [{"toolResult": {"toolUseId": "t", "content": [CACHE]}}]},
        ],
        "toolConfig": {"tools": [WEATHER]},
    }
    with pytest.raises(ValidationError):
        parse_converse(body)


# ------------------------------------------------------------------ Anthropic bodies


def anthropic(**body):
    return {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, **body}


EPHEMERAL = {"type": "ephemeral"}


def test_anthropic_cache_control_on_system_messages_and_tools():
    d = AnthropicDialect()
    request = d.parse(
        anthropic(
            system=[{"type": "text", "text": "Rules.", "cache_control": EPHEMERAL}],
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": "Doc",
                            "cache_control": {"type": "ephemeral", "ttl": "5m"},
                        }
                    ],
                }
            ],
            tools=[{"name": "t", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}],
        )
    )
    assert len(request.cache.ttls) == 3
    assert strip_markers(request.system)[0] == "Rules."
    assert strip_markers(request.messages[0].text)[0] == "Doc"
    assert request.tools[0].cache_marker


def test_anthropic_more_than_four_cache_controls_is_refused():
    block = {"type": "text", "text": "x", "cache_control": EPHEMERAL}
    with pytest.raises(ValidationError, match="A maximum of 4 blocks with cache_control"):
        AnthropicDialect().parse(anthropic(messages=[{"role": "user", "content": [block] * 5}]))


@pytest.mark.parametrize("control", [{"type": "persistent"}, {"type": "ephemeral", "ttl": "2h"}])
def test_anthropic_bad_cache_control_is_refused(control):
    block = {"type": "text", "text": "x", "cache_control": control}
    with pytest.raises(ValidationError):
        AnthropicDialect().parse(anthropic(messages=[{"role": "user", "content": [block]}]))


def test_anthropic_usage_reports_cache_creation_and_read():
    d = AnthropicDialect()
    d.parse(anthropic(messages=[{"role": "user", "content": "hi"}]))
    usage = Usage(100, 5, cache_read_tokens=60, cache_write_tokens=30, cache_points=True)
    body = d.response(ChatResult("ok", "end_turn", usage), InvokeContext("r", "m", 100))
    assert body["usage"] == {
        "input_tokens": 10,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 60,
        "output_tokens": 5,
    }
