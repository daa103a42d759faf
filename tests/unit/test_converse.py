"""Converse translation, checked against botocore's own ``bedrock-runtime`` model.

Requests are built as boto3 would (validated and serialized by botocore), responses and
stream events are checked member by member against the output shapes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.model import Shape
from botocore.serialize import create_serializer
from botocore.session import get_session
from botocore.validate import validate_parameters

from outcrop.errors import ValidationError
from outcrop.service.converse import (
    converse_response,
    parse_converse,
    parse_converse_like,
    stream_block_start_tool,
    stream_block_stop,
    stream_finish,
    stream_message_start,
    stream_message_stop,
    stream_metadata,
    stream_text_delta,
    stream_tool_delta,
)
from outcrop.service.types import ChatResult, ToolCall, Usage

MODEL = get_session().get_service_model("bedrock-runtime")
CONVERSE = MODEL.operation_model("Converse")
STREAM_SHAPE = MODEL.operation_model("ConverseStream").output_shape.members["stream"]


def check_shape(value: Any, shape: Shape, path: str = "$") -> None:
    """Strictly check ``value`` against a botocore shape: types, required, no unknowns."""
    kind = shape.type_name
    if kind == "structure":
        assert isinstance(value, dict), f"{path}: expected object"
        for name in shape.required_members:
            assert name in value, f"{path}: missing required {name}"
        if shape.is_document_type:
            return
        for key, item in value.items():
            assert key in shape.members, f"{path}: unknown member {key}"
            check_shape(item, shape.members[key], f"{path}.{key}")
        if getattr(shape, "is_tagged_union", False) or shape.metadata.get("union"):
            assert len(value) == 1, f"{path}: union must set exactly one member"
    elif kind == "list":
        assert isinstance(value, list), f"{path}: expected list"
        for i, item in enumerate(value):
            check_shape(item, shape.member, f"{path}[{i}]")
    elif kind == "map":
        assert isinstance(value, dict), f"{path}: expected map"
    elif kind == "string":
        assert isinstance(value, str), f"{path}: expected string"
        if shape.enum:
            assert value in shape.enum, f"{path}: {value!r} not in enum"
    elif kind in ("integer", "long"):
        assert isinstance(value, int) and not isinstance(value, bool), f"{path}: expected int"
    elif kind in ("float", "double"):
        assert isinstance(value, int | float), f"{path}: expected number"
    elif kind == "boolean":
        assert isinstance(value, bool), f"{path}: expected bool"


def wire_body(**params: Any) -> dict[str, Any]:
    """The JSON body boto3 would send for ``client.converse(**params)``."""
    params = {"modelId": "us.meta.llama3-8b-instruct-v1:0", **params}
    validate_parameters(params, CONVERSE.input_shape)
    request = create_serializer("rest-json").serialize_to_request(params, CONVERSE)
    return json.loads(request["body"])


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"text": text}]}


TOOL_CALL = ToolCall(id="tooluse_1", name="get_weather", input={"city": "Paris"})
RESULT = ChatResult(text="Hi there", stop_reason="end_turn", usage=Usage(3, 2), latency_ms=20)
TOOL_RESULT = ChatResult(
    text="", stop_reason="tool_use", usage=Usage(5, 7), tool_calls=[TOOL_CALL], latency_ms=9
)
WEATHER_TOOL = {
    "toolSpec": {
        "name": "get_weather",
        "description": "Weather",
        "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}},
    }
}


# ---------------------------------------------------------------------------- request


def test_full_request_as_boto3_sends_it() -> None:
    body = wire_body(
        system=[{"text": "Be brief."}, {"text": "Be kind."}],
        messages=[
            user("Weather in Paris?"),
            {
                "role": "assistant",
                "content": [
                    {
                        "toolUse": {
                            "toolUseId": "t1",
                            "name": "get_weather",
                            "input": {"city": "Paris"},
                        }
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": "t1",
                            "content": [{"json": {"tempC": 21}}],
                            "status": "success",
                        }
                    }
                ],
            },
        ],
        inferenceConfig={
            "maxTokens": 256,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["END"],
        },
        toolConfig={"tools": [WEATHER_TOOL], "toolChoice": {"tool": {"name": "get_weather"}}},
        additionalModelRequestFields={"top_k": 40, "seed": 7, "unknown": True},
    )
    req = parse_converse(body)
    assert req.system == "Be brief.\nBe kind."
    assert [m.role for m in req.messages] == ["user", "assistant", "user"]
    assert req.messages[1].tool_calls == [ToolCall("t1", "get_weather", {"city": "Paris"})]
    result = req.messages[2].tool_results[0]
    assert (result.tool_use_id, json.loads(result.content), result.status) == (
        "t1",
        {"tempC": 21},
        "success",
    )
    s = req.sampling
    assert (s.max_tokens, s.temperature, s.top_p, s.stop, s.top_k, s.seed) == (
        256,
        0.2,
        0.9,
        ["END"],
        40,
        7,
    )
    assert req.tools[0].name == "get_weather" and req.tools[0].input_schema["type"] == "object"
    assert (req.tool_choice.mode, req.tool_choice.name) == ("tool", "get_weather")


@pytest.mark.parametrize("choice,mode", [({"auto": {}}, "auto"), ({"any": {}}, "any")])
def test_tool_choice_modes(choice: dict, mode: str) -> None:
    body = wire_body(
        messages=[user("x")], toolConfig={"tools": [WEATHER_TOOL], "toolChoice": choice}
    )
    assert parse_converse(body).tool_choice.mode == mode


def test_multiple_text_blocks_and_topk_camel() -> None:
    body = wire_body(
        messages=[{"role": "user", "content": [{"text": "a"}, {"text": "b"}]}],
        additionalModelRequestFields={"topK": 5},
    )
    req = parse_converse(body)
    assert req.messages[0].text == "a\nb" and req.sampling.top_k == 5 and req.system is None


@pytest.mark.parametrize("block", [
    {"image": {"format": "png", "source": {"bytes": b"\x89PNG"}}},
    {"document": {"format": "txt", "name": "doc", "source": {"bytes": b"hello"}}},
    {"video": {"format": "mp4", "source": {"bytes": b"\x00\x00"}}},
])  # fmt: skip
def test_media_blocks_rejected_as_unsupported_modality(block: dict) -> None:
    body = wire_body(messages=[{"role": "user", "content": [{"text": "what is this"}, block]}])
    kind = next(iter(block))
    with pytest.raises(ValidationError, match=f"doesn't support the {kind}"):
        parse_converse(body)


def _bad(body: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        parse_converse(body)


ASSISTANT_T1 = {
    "role": "assistant",
    "content": [{"toolUse": {"toolUseId": "t1", "name": "get_weather", "input": {}}}],
}


@pytest.mark.parametrize("body,match", [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "system", "content": [{"text": "x"}]}]}, "messages.0.role"),
    ({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}, "start with a user message"),
    ({"messages": [user("a"), user("b")]}, "must alternate between user and assistant"),
    ({"messages": [{"role": "user", "content": []}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "messages.0.content"),
    ({"messages": [{"role": "user", "content": [{"text": ""}]}]}, "messages.0.content.0 is blank"),
    ({"messages": [{"role": "user", "content": [{"text": 5}]}]}, "messages.0.content.0.text"),
    ({"messages": [{"role": "user", "content": [{"toolResult": {"toolUseId": "zz", "content": [{"text": "1"}]}}]}],
      "toolConfig": {"tools": [WEATHER_TOOL]}}, "toolUseId 'zz'"),
    ({"messages": [user("a"), ASSISTANT_T1,
                   {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "1"}]}}]}]},
     "toolConfig field must be defined"),
    ({"messages": [user("a")], "inferenceConfig": {"maxTokens": 0}}, "inferenceConfig.maxTokens"),
    ({"messages": [user("a")], "inferenceConfig": {"maxTokens": "5"}}, "inferenceConfig.maxTokens"),
    ({"messages": [user("a")], "inferenceConfig": {"temperature": 1.5}}, "inferenceConfig.temperature"),
    ({"messages": [user("a")], "inferenceConfig": {"temperature": -0.1}}, "inferenceConfig.temperature"),
    ({"messages": [user("a")], "inferenceConfig": {"topP": 2}}, "inferenceConfig.topP"),
    ({"messages": [user("a")], "inferenceConfig": {"stopSequences": "END"}}, "inferenceConfig.stopSequences"),
    ({"messages": [user("a")], "inferenceConfig": {"stopSequences": [""]}}, "inferenceConfig.stopSequences.0"),
    ({"messages": [user("a")], "additionalModelRequestFields": {"top_k": -1}}, "additionalModelRequestFields.top_k"),
    ({"messages": [user("a")], "additionalModelRequestFields": {"seed": "x"}}, "additionalModelRequestFields.seed"),
    ({"messages": [user("a")], "system": [{"text": 1}]}, "system.0.text"),
    ({"messages": [user("a")], "toolConfig": {"tools": [WEATHER_TOOL], "toolChoice": {"tool": {"name": "nope"}}}},
     "toolConfig.toolChoice.tool.name"),
    ({"messages": [user("a")], "toolConfig": {"tools": []}}, "toolConfig.tools"),
    ({"messages": [user("a")], "toolConfig": {"tools": [{"toolSpec": {"name": "x"}}]}}, "inputSchema"),
])  # fmt: skip
def test_validation_errors(body: dict, match: str) -> None:
    _bad(body, match)


def test_tool_result_after_matching_tool_use_is_accepted() -> None:
    body = {
        "messages": [user("a"), ASSISTANT_T1,
                     {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "21C"}], "status": "error"}}]}],
        "toolConfig": {"tools": [WEATHER_TOOL]},
    }  # fmt: skip
    assert parse_converse(body).messages[2].tool_results[0].status == "error"


def test_nova_like_accepts_both_spellings_and_native_errors() -> None:
    base = {"schemaVersion": "messages-v1", "messages": [user("hi")], "system": [{"text": "s"}]}
    snake = parse_converse_like(
        {**base, "inferenceConfig": {"max_new_tokens": 10, "top_p": 0.5, "top_k": 3}}
    )
    camel = parse_converse_like(
        {**base, "inferenceConfig": {"maxTokens": 10, "topP": 0.5, "topK": 3}}
    )
    for req in (snake, camel):
        assert (req.sampling.max_tokens, req.sampling.top_p, req.sampling.top_k) == (10, 0.5, 3)
        assert req.system == "s"
    with pytest.raises(ValidationError, match="#/inferenceConfig/max_new_tokens"):
        parse_converse_like({**base, "inferenceConfig": {"max_new_tokens": 0}})
    image = {"image": {"format": "png", "source": {"bytes": "iVBORw0K"}}}
    with pytest.raises(ValidationError, match="image"):
        parse_converse_like({"messages": [{"role": "user", "content": [image]}]})


# --------------------------------------------------------------------------- response


@pytest.mark.parametrize("result", [RESULT, TOOL_RESULT], ids=["text", "tool"])
def test_response_matches_botocore_output_shape(result: ChatResult) -> None:
    body = converse_response(result)
    check_shape(body, CONVERSE.output_shape)
    assert body["usage"]["totalTokens"] == result.usage.total_tokens
    assert body["stopReason"] == result.stop_reason


def test_response_omits_empty_text_beside_tool_calls() -> None:
    content = converse_response(TOOL_RESULT)["output"]["message"]["content"]
    assert content == [
        {"toolUse": {"toolUseId": "tooluse_1", "name": "get_weather", "input": {"city": "Paris"}}}
    ]
    assert converse_response(RESULT)["output"]["message"]["content"] == [{"text": "Hi there"}]


# ----------------------------------------------------------------------------- stream


@pytest.mark.parametrize("event", [
    stream_message_start(),
    stream_text_delta(0, "Hel"),
    stream_block_start_tool(1, TOOL_CALL),
    stream_tool_delta(1, '{"city": '),
    stream_block_stop(1),
    stream_message_stop("tool_use"),
    stream_metadata(Usage(3, 2), 20),
])  # fmt: skip
def test_stream_events_match_botocore_shapes(event: tuple[str, dict]) -> None:
    kind, payload = event
    assert kind in STREAM_SHAPE.members
    check_shape(payload, STREAM_SHAPE.members[kind])


def test_stream_finish_sequence() -> None:
    events = stream_finish(
        ChatResult(text="ok", stop_reason="tool_use", usage=Usage(1, 2), tool_calls=[TOOL_CALL])
    )
    assert [k for k, _ in events] == [
        "contentBlockStop", "contentBlockStart", "contentBlockDelta", "contentBlockStop", "messageStop", "metadata",
    ]  # fmt: skip
    assert events[0][1]["contentBlockIndex"] == 0 and events[1][1]["contentBlockIndex"] == 1
    assert json.loads(events[2][1]["delta"]["toolUse"]["input"]) == {"city": "Paris"}
    for kind, payload in events:
        check_shape(payload, STREAM_SHAPE.members[kind])
    no_text = stream_finish(TOOL_RESULT)
    assert no_text[0] == stream_block_start_tool(0, TOOL_CALL)
