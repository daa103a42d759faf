"""OpenAI /v1 bodies <-> neutral objects, and OpenAI's error shape (no server, no model)."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from outcrop.api.openai import error_body
from outcrop.api.routing import Router
from outcrop.errors import (
    AccessDeniedError,
    InternalServerError,
    ResourceNotFoundError,
    ThrottlingError,
    UnknownOperationError,
    ValidationError,
)
from outcrop.service.openai_compat import (
    Envelope,
    chat_completion,
    chat_stream_end,
    completion_stream_end,
    embeddings_body,
    parse_chat_completion,
    parse_completion,
    parse_embeddings,
)
from outcrop.service.types import ChatResult, ToolCall, ToolChoice, Usage

USER = {"role": "user", "content": "What is the capital of France?"}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def chat(**body):
    return parse_chat_completion({"model": "m", "messages": [USER], **body})


def result(text="Paris", stop="end_turn", calls=()) -> ChatResult:
    return ChatResult(text, stop, Usage(10, 3), tool_calls=list(calls))  # type: ignore[arg-type]


# ------------------------------------------------------------------------- requests


def test_chat_messages_roles_and_content_parts():
    call = parse_chat_completion(
        {
            "model": "us.some-model",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "developer", "content": [{"type": "text", "text": "No lists."}]},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                {"role": "assistant", "content": "Hello."},
                USER,
            ],
        }
    )
    assert call.model == "us.some-model"
    assert call.request.system == "Be terse.\nNo lists."
    assert [(m.role, m.text) for m in call.request.messages] == [
        ("user", "Hi"),
        ("assistant", "Hello."),
        ("user", USER["content"]),
    ]
    assert call.stream is False and call.include_usage is False


def test_sampling_fields_and_max_completion_tokens_wins():
    s = chat(
        temperature=1.5, top_p=0.5, seed=7, stop="END", max_tokens=9, max_completion_tokens=20
    ).request.sampling
    assert (s.temperature, s.top_p, s.seed, s.stop, s.max_tokens) == (1.5, 0.5, 7, ["END"], 20)
    assert chat(stop=["a", "b"], max_tokens=9).request.sampling.stop == ["a", "b"]
    assert chat(max_tokens=9).request.sampling.max_tokens == 9


@pytest.mark.parametrize(
    "body, param",
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": [1]}, "stop[0]"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"logprobs": True}, "logprobs"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
    ],
)
def test_invalid_params_are_400_naming_the_param(body, param):
    with pytest.raises(ValidationError) as err:
        chat(**body)
    status, out = error_body(err.value)
    assert status == 400
    assert out["error"]["type"] == "invalid_request_error"
    assert out["error"]["param"] == param


def test_missing_model_and_messages_name_the_parameter():
    with pytest.raises(ValidationError) as err:
        parse_chat_completion({"messages": [USER]})
    assert error_body(err.value)[1]["error"]["message"] == "Missing required parameter: 'model'."
    with pytest.raises(ValidationError) as err:
        parse_chat_completion({"model": "m"})
    assert error_body(err.value)[1]["error"]["param"] == "messages"


def test_stream_options_include_usage():
    call = chat(stream=True, stream_options={"include_usage": True})
    assert call.stream and call.include_usage


def test_tools_and_tool_choice():
    request = chat(tools=[WEATHER], tool_choice="required").request
    assert request.tools[0].name == "get_weather"
    assert request.tools[0].input_schema["required"] == ["city"]
    assert request.tool_choice == ToolChoice("any")
    assert chat(tools=[WEATHER], tool_choice="auto").request.tool_choice == ToolChoice("auto")
    assert chat(tools=[WEATHER], tool_choice="none").request.tool_choice == ToolChoice("none")
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert chat(tools=[WEATHER], tool_choice=named).request.tool_choice == ToolChoice(
        "tool", "get_weather"
    )
    with pytest.raises(ValidationError):
        chat(tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "nope"}})


def test_tool_round_trip_messages():
    call = parse_chat_completion(
        {
            "model": "m",
            "tools": [WEATHER],
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "call_2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call_2",
                    "content": [{"type": "text", "text": "Rain"}],
                },
            ],
        }
    )
    user, assistant, results = call.request.messages
    assert assistant.tool_calls == [
        ToolCall("call_1", "get_weather", {"city": "Paris"}),
        ToolCall("call_2", "get_weather", {"city": "Rome"}),
    ]
    assert results.role == "user"
    assert [(r.tool_use_id, r.content) for r in results.tool_results] == [
        ("call_1", "Sunny"),
        ("call_2", "Rain"),
    ]


def test_response_format_becomes_output_schema():
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}
    assert chat(response_format=fmt).request.output_schema == schema
    assert chat(response_format={"type": "json_object"}).request.output_schema == {"type": "object"}
    assert chat(response_format={"type": "text"}).request.output_schema is None


def test_completion_prompt_and_default_max_tokens():
    call = parse_completion({"model": "m", "prompt": ["The capital of France is"], "stream": True})
    assert call.request.prompt == "The capital of France is"
    assert call.request.messages == []
    assert call.request.sampling.max_tokens == 16
    assert call.stream
    with pytest.raises(ValidationError):
        parse_completion({"model": "m", "prompt": ["a", "b"]})
    with pytest.raises(ValidationError):
        parse_completion({"model": "m", "prompt": "a", "echo": True})


def test_embeddings_input_forms():
    one = parse_embeddings({"model": "e", "input": "hello"})
    assert one.texts == ["hello"] and one.encoding_format == "float" and one.dimensions is None
    many = parse_embeddings(
        {"model": "e", "input": ["a", "b"], "dimensions": 8, "encoding_format": "base64"}
    )
    assert (many.texts, many.dimensions, many.encoding_format) == (["a", "b"], 8, "base64")
    for bad in ([], [[1, 2, 3]], [""], 5):
        with pytest.raises(ValidationError):
            parse_embeddings({"model": "e", "input": bad})


# ------------------------------------------------------------------------ responses


def test_chat_completion_body():
    body = chat_completion(result(), Envelope("m", "chatcmpl-1", 123))
    assert body == {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 123,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Paris", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 3,
            "total_tokens": 13,
            "prompt_tokens_details": {"cached_tokens": 0},
        },
    }
    assert (
        chat_completion(result(stop="max_tokens"), Envelope("m"))["choices"][0]["finish_reason"]
        == "length"
    )


def test_tool_calls_in_body_and_stream():
    calls = [ToolCall("call_1", "get_weather", {"city": "Paris"})]
    done = result("", "tool_use", calls)
    choice = chat_completion(done, Envelope("m"))["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (tool_call,) = choice["message"]["tool_calls"]
    assert tool_call["id"] == "call_1" and tool_call["type"] == "function"
    assert json.loads(tool_call["function"]["arguments"]) == {"city": "Paris"}

    chunks = chat_stream_end(done, Envelope("m"), usage=True)
    head, args, finish, usage = chunks
    assert head["choices"][0]["delta"]["tool_calls"] == [
        {
            "index": 0,
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ""},
        }
    ]
    assert args["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "function": {"arguments": '{"city": "Paris"}'}}
    ]
    assert finish["choices"][0]["finish_reason"] == "tool_calls" and finish["usage"] is None
    assert usage["choices"] == [] and usage["usage"]["total_tokens"] == 13


def test_stream_end_without_usage_has_no_usage_chunk():
    chunks = chat_stream_end(result(), Envelope("m"))
    assert len(chunks) == 1 and "usage" not in chunks[0]
    assert chunks[0]["object"] == "chat.completion.chunk"
    text_chunks = completion_stream_end(result(), Envelope("m"), usage=True)
    assert text_chunks[0]["choices"][0]["finish_reason"] == "stop"
    assert text_chunks[1]["object"] == "text_completion" and text_chunks[1]["usage"]


def test_embeddings_float_and_base64():
    vectors = [[0.5, -0.25, 1.0]]
    floats = embeddings_body(vectors, "e", 4, "float")
    assert floats["data"][0]["embedding"] == [0.5, -0.25, 1.0]
    assert floats["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    b64 = embeddings_body(np.array(vectors), "e", 4, "base64")["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(b64), dtype="<f4")
    assert decoded.tolist() == [0.5, -0.25, 1.0]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "exc, status, code",
    [
        (AccessDeniedError("Missing Authentication Token"), 401, "invalid_api_key"),
        (ResourceNotFoundError("The model `x` does not exist"), 404, "model_not_found"),
        (UnknownOperationError("No operation matches GET /v1/nope."), 404, "unknown_url"),
        (ThrottlingError("busy"), 429, "rate_limit_exceeded"),
        (InternalServerError("boom"), 500, None),
        (RuntimeError("secret detail"), 500, None),
    ],
)
def test_error_shape(exc, status, code):
    got_status, body = error_body(exc)
    assert got_status == status
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert "secret detail" not in body["error"]["message"]


def test_router_error_style_is_per_prefix():
    router = Router()
    marker = object()
    router.errors_under("/v1", marker)  # type: ignore[arg-type]
    assert router.error_renderer("/v1/chat/completions") is marker
    assert router.error_renderer("/v1") is marker
    assert router.error_renderer("/v1x/models") is None
    assert router.error_renderer("/model/m/converse") is None


def test_mid_stream_error_is_one_error_event_then_the_stream_ends():
    import asyncio
    from types import SimpleNamespace

    from outcrop.api.openai import sse_response

    closed: list[bool] = []

    async def engine_events():
        try:
            yield "token"
            yield "never"
        finally:
            closed.append(True)

    events = engine_events()

    async def chunks():
        await events.__anext__()
        yield {"n": 1}
        raise ThrottlingError("Too many requests")

    async def collect() -> list[bytes]:
        response = sse_response(
            chunks(), SimpleNamespace(events=events), SimpleNamespace(request_id="r")
        )
        assert response.media_type == "text/event-stream"
        return [frame async for frame in response.body_iterator]

    frames = asyncio.run(collect())
    assert frames[0] == b'data: {"n":1}\n\n'
    assert len(frames) == 2 and b"[DONE]" not in frames[-1]
    error = json.loads(frames[1].removeprefix(b"data: "))["error"]
    assert error["code"] == "rate_limit_exceeded" and error["message"] == "Too many requests"
    assert closed == [True]  # the engine iterator was closed: its sequence is freed
