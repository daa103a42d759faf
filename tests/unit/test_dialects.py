"""Native InvokeModel dialects: parse realistic bodies, render the fields clients read.

The fields checked are the ones langchain-aws / LiteLLM read (✔ in the reference §4).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from outcrop.errors import ValidationError
from outcrop.models.resolve import base_model_id
from outcrop.service.dialects import (
    AnthropicDialect,
    CohereChatDialect,
    CohereCommandDialect,
    JambaDialect,
    JurassicDialect,
    LlamaDialect,
    LocalDialect,
    MistralDialect,
    NovaDialect,
    TitanDialect,
    dialect_for,
)
from outcrop.service.dialects.base import InvokeContext
from outcrop.service.types import ChatResult, ToolCall, Usage

Chunk = dict[str, Any]

RESULT = ChatResult(text="Hello world", stop_reason="end_turn", usage=Usage(10, 5), latency_ms=30)
CUT = ChatResult(text="Hello world", stop_reason="max_tokens", usage=Usage(10, 5))
TOOL = ToolCall(id="call_1", name="get_weather", input={"city": "Paris"})
TOOL_RESULT = ChatResult(text="", stop_reason="tool_use", usage=Usage(10, 8), tool_calls=[TOOL])


@dataclass
class Case:
    id: str
    model_id: str
    cls: type
    body: dict[str, Any]
    roles: list[str]
    last_text: str
    system: str | None
    sampling: dict[str, Any]
    text: Callable[[Chunk], str]  # response body -> generated text
    stop: Callable[[Chunk], Any]  # response body / final chunk -> stop reason
    stops: tuple[Any, Any]  # expected native names for (end_turn, max_tokens)
    chunk_text: Callable[[Chunk], str] = field(default=lambda c: "")


L3 = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nHello!<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)
L2 = (
    "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello! </s><s>[INST] What is 2+2? [/INST]"
)
OPENAI_MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]},
]
THREE_TURNS = ["user", "assistant", "user"]


def _choice_text(c: Chunk) -> str:
    return c["choices"][0]["message"]["content"]


def _delta_text(c: Chunk) -> str:
    return c["choices"][0]["delta"].get("content", "")


def _anthropic_chunk(c: Chunk) -> str:
    return c["delta"]["text"] if c["type"] == "content_block_delta" else ""


CASES = [
    Case(
        "anthropic-messages", "us.anthropic.claude-3-5-sonnet-20241022-v2:0", AnthropicDialect,
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 100, "system": "Be brief.",
         "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                      {"role": "user", "content": [{"type": "text", "text": "What is 2+2?"}]}],
         "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop_sequences": ["END"], "unknown_key": 1},
        THREE_TURNS, "What is 2+2?", "Be brief.",
        {"max_tokens": 100, "temperature": 0.5, "top_p": 0.9, "top_k": 40, "stop": ["END"]},
        lambda r: r["content"][0]["text"], lambda r: r["stop_reason"] if "stop_reason" in r else r["delta"]["stop_reason"],
        ("end_turn", "max_tokens"), _anthropic_chunk,
    ),
    Case(
        "anthropic-legacy", "anthropic.claude-v2:1", AnthropicDialect,
        {"prompt": "Be brief.\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2+2?\n\nAssistant:",
         "max_tokens_to_sample": 50, "temperature": 0.1, "stop_sequences": ["\n\nHuman:"]},
        THREE_TURNS, "What is 2+2?", "Be brief.",
        {"max_tokens": 50, "temperature": 0.1, "stop": ["\n\nHuman:"]},
        lambda r: r["completion"], lambda r: r["stop_reason"], ("stop_sequence", "max_tokens"),
        lambda c: c["completion"],
    ),
    Case(
        "titan", "amazon.titan-text-express-v1", TitanDialect,
        {"inputText": "Be brief.\nUser: Hi\nBot: Hello!\nUser: What is 2+2?\nBot:",
         "textGenerationConfig": {"temperature": 0.7, "topP": 0.9, "maxTokenCount": 200, "stopSequences": ["User:"]}},
        THREE_TURNS, "What is 2+2?", "Be brief.",
        {"max_tokens": 200, "temperature": 0.7, "top_p": 0.9, "stop": ["User:"]},
        lambda r: r["results"][0]["outputText"],
        lambda r: r["results"][0]["completionReason"] if "results" in r else r["completionReason"],
        ("FINISHED", "LENGTH"), lambda c: c["outputText"],
    ),
    Case(
        "llama3", "us.meta.llama3-1-8b-instruct-v1:0", LlamaDialect,
        {"prompt": L3, "temperature": 0.2, "top_p": 0.9, "max_gen_len": 64},
        THREE_TURNS, "What is 2+2?", "Be brief.",
        {"max_tokens": 64, "temperature": 0.2, "top_p": 0.9},
        lambda r: r["generation"], lambda r: r["stop_reason"], ("stop", "length"), lambda c: c["generation"],
    ),
    Case(
        "llama2", "meta.llama2-13b-chat-v1", LlamaDialect, {"prompt": L2},
        THREE_TURNS, "What is 2+2?", "Be brief.", {"max_tokens": 512},
        lambda r: r["generation"], lambda r: r["stop_reason"], ("stop", "length"), lambda c: c["generation"],
    ),
    Case(
        "mistral-text", "mistral.mistral-7b-instruct-v0:2", MistralDialect,
        {"prompt": "<s>[INST] Hi [/INST] Hello!</s>[INST] What is 2+2? [/INST]", "max_tokens": 80,
         "temperature": 0.3, "top_p": 0.8, "top_k": 50, "stop": ["</s>"]},
        THREE_TURNS, "What is 2+2?", None,
        {"max_tokens": 80, "temperature": 0.3, "top_p": 0.8, "top_k": 50, "stop": ["</s>"]},
        lambda r: r["outputs"][0]["text"], lambda r: r["outputs"][0]["stop_reason"], ("stop", "length"),
        lambda c: c["outputs"][0]["text"],
    ),
    Case(
        "mistral-chat", "mistral.mistral-large-2407-v1:0", MistralDialect,
        {"messages": OPENAI_MESSAGES, "max_tokens": 80, "temperature": 0.3, "top_p": 0.8},
        THREE_TURNS, "What is 2+2?", "Be brief.", {"max_tokens": 80, "temperature": 0.3, "top_p": 0.8},
        _choice_text,
        lambda r: r["choices"][0].get("finish_reason") or r["choices"][0].get("stop_reason"),
        ("stop", "length"), _choice_text,
    ),
    Case(
        "cohere-r", "cohere.command-r-plus-v1:0", CohereChatDialect,
        {"message": "What is 2+2?", "preamble": "Be brief.",
         "chat_history": [{"role": "USER", "message": "Hi"}, {"role": "CHATBOT", "message": "Hello!"}],
         "max_tokens": 90, "temperature": 0.3, "p": 0.75, "k": 10, "seed": 42, "stop_sequences": ["##"]},
        THREE_TURNS, "What is 2+2?", "Be brief.",
        {"max_tokens": 90, "temperature": 0.3, "top_p": 0.75, "top_k": 10, "seed": 42, "stop": ["##"]},
        lambda r: r["text"], lambda r: r["finish_reason"], ("COMPLETE", "MAX_TOKENS"),
        lambda c: c.get("text", "") if not c["is_finished"] else "",
    ),
    Case(
        "cohere-legacy", "cohere.command-text-v14", CohereCommandDialect,
        {"prompt": "What is 2+2?", "max_tokens": 20, "temperature": 4.0, "p": 0.5, "k": 5},
        ["user"], "What is 2+2?", None, {"max_tokens": 20, "temperature": 4.0, "top_p": 0.5, "top_k": 5},
        lambda r: r["generations"][0]["text"],
        lambda r: r["generations"][0]["finish_reason"] if "generations" in r else r["finish_reason"],
        ("COMPLETE", "MAX_TOKENS"), lambda c: c["text"],
    ),
    Case(
        "jamba", "ai21.jamba-1-5-mini-v1:0", JambaDialect,
        {"messages": OPENAI_MESSAGES, "temperature": 1.5, "top_p": 0.9, "stop": ["\n\n"]},
        THREE_TURNS, "What is 2+2?", "Be brief.",
        {"max_tokens": 4096, "temperature": 1.5, "top_p": 0.9, "stop": ["\n\n"]},
        _choice_text, lambda r: r["choices"][0]["finish_reason"], ("stop", "length"), _delta_text,
    ),
    Case(
        "jurassic", "ai21.j2-ultra-v1", JurassicDialect,
        {"prompt": "2+2=", "maxTokens": 5, "temperature": 0.0, "topP": 1, "stopSequences": ["\n"]},
        [], "", None, {"max_tokens": 5, "temperature": 0.0, "top_p": 1.0, "stop": ["\n"]},
        lambda r: r["completions"][0]["data"]["text"], lambda r: r["completions"][0]["finishReason"]["reason"],
        ("endoftext", "length"), lambda c: c["completions"][0]["data"]["text"],
    ),
    Case(
        "nova", "us.amazon.nova-lite-v1:0", NovaDialect,
        {"schemaVersion": "messages-v1", "system": [{"text": "Be brief."}],
         "messages": [{"role": "user", "content": [{"text": "Hi"}]}, {"role": "assistant", "content": [{"text": "Hello!"}]},
                      {"role": "user", "content": [{"text": "What is 2+2?"}]}],
         "inferenceConfig": {"max_new_tokens": 300, "temperature": 0.7, "top_p": 0.9, "top_k": 20}},
        THREE_TURNS, "What is 2+2?", "Be brief.", {"max_tokens": 300, "temperature": 0.7, "top_p": 0.9, "top_k": 20},
        lambda r: r["output"]["message"]["content"][0]["text"],
        lambda r: r["stopReason"] if "stopReason" in r else r["messageStop"]["stopReason"],
        ("end_turn", "max_tokens"),
        lambda c: c["contentBlockDelta"]["delta"]["text"] if "contentBlockDelta" in c else "",
    ),
    Case(
        "local-chat", "huggingface.qwen2-5-0-5b-instruct", LocalDialect,
        {"messages": OPENAI_MESSAGES, "max_tokens": 30, "temperature": 1.2, "top_k": 40, "seed": 1, "stop": "END"},
        THREE_TURNS, "What is 2+2?", "Be brief.",
        {"max_tokens": 30, "temperature": 1.2, "top_k": 40, "seed": 1, "stop": ["END"]},
        _choice_text, lambda r: r["choices"][0]["finish_reason"], ("stop", "length"), _delta_text,
    ),
    Case(
        "local-completion", "google.gemma-2-2b", LocalDialect,
        {"prompt": "Once upon a time", "max_tokens": 16, "top_p": 0.5, "stop": ["\n"]},
        [], "", None, {"max_tokens": 16, "top_p": 0.5, "stop": ["\n"]},
        lambda r: r["choices"][0]["text"], lambda r: r["choices"][0]["finish_reason"], ("stop", "length"),
        lambda c: c["choices"][0]["text"],
    ),
]  # fmt: skip


def ctx_for(case: Case) -> InvokeContext:
    return InvokeContext(request_id="req-1", model_id=case.model_id, input_tokens=10)


def parsed(case: Case):
    dialect = dialect_for(case.model_id)
    return dialect, dialect.parse(json.loads(json.dumps(case.body)))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_dispatch(case: Case) -> None:
    assert type(dialect_for(case.model_id)) is case.cls


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_parse(case: Case) -> None:
    _, req = parsed(case)
    assert [m.role for m in req.messages] == case.roles
    if case.roles:
        assert req.messages[-1].text == case.last_text
        assert req.prompt is None
        assert (
            "<|" not in "".join(m.text for m in req.messages)
            and "[INST]" not in req.messages[0].text
        )
    else:
        assert req.prompt
    assert req.system == case.system
    for key, value in case.sampling.items():
        assert getattr(req.sampling, key) == value, key


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_response(case: Case) -> None:
    dialect, _ = parsed(case)
    body = dialect.response(RESULT, ctx_for(case))
    json.dumps(body)
    assert case.text(body) == "Hello world"
    assert case.stop(body) == case.stops[0]
    assert case.stop(dialect.response(CUT, ctx_for(case))) == case.stops[1]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_stream(case: Case) -> None:
    dialect, _ = parsed(case)
    ctx = ctx_for(case)
    deltas = dialect.stream_delta("Hello", ctx) + dialect.stream_delta(" world", ctx)
    end = dialect.stream_end(RESULT, ctx)
    chunks = dialect.stream_start(ctx) + deltas + end
    assert end and all(isinstance(c, dict) for c in chunks)
    json.dumps(chunks)
    assert "".join(case.chunk_text(c) for c in chunks) == "Hello world"
    finals = [c for c in end if _has_stop(case, c)]
    assert finals and case.stop(finals[-1]) == case.stops[0]


def _has_stop(case: Case, chunk: Chunk) -> bool:
    try:
        return case.stop(chunk) is not None
    except (KeyError, IndexError, TypeError):
        return False


# ----------------------------------------------------------------- family specifics


def test_anthropic_response_and_stream_shape() -> None:
    d = dialect_for("anthropic.claude-3-haiku-20240307-v1:0")
    d.parse(
        {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "x"}],
        }
    )
    ctx = InvokeContext("r", "anthropic.claude-3-haiku-20240307-v1:0", input_tokens=10)
    body = d.response(RESULT, ctx)
    assert (
        body["id"].startswith("msg_bdrk_")
        and body["type"] == "message"
        and body["role"] == "assistant"
    )
    assert body["model"] == ctx.model_id and body["usage"] == {
        "input_tokens": 10,
        "output_tokens": 5,
    }
    assert body["stop_sequence"] is None
    chunks = d.stream_start(ctx) + d.stream_delta("x", ctx) + d.stream_end(RESULT, ctx)
    assert [c["type"] for c in chunks] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    assert chunks[0]["message"]["usage"]["input_tokens"] == 10
    assert chunks[-2]["usage"] == {"output_tokens": 5}


def test_anthropic_tools_round_trip() -> None:
    d = dialect_for("anthropic.claude-3-5-sonnet-20240620-v1:0")
    req = d.parse({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 100,
        "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "tu1", "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "tu1", "content": [{"type": "text", "text": "21C"}], "is_error": True}]},
        ],
    })  # fmt: skip
    assert req.tools[0].name == "get_weather" and req.tool_choice.name == "get_weather"
    assert req.messages[1].tool_calls[0].input == {"city": "Paris"}
    assert (
        req.messages[2].tool_results[0].content == "21C"
        and req.messages[2].tool_results[0].status == "error"
    )
    body = d.response(TOOL_RESULT, InvokeContext("r", "m"))
    assert body["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert body["stop_reason"] == "tool_use"
    stream = d.stream_end(TOOL_RESULT, InvokeContext("r", "m"))
    partial = [c for c in stream if c.get("delta", {}).get("type") == "input_json_delta"]
    assert json.loads(partial[0]["delta"]["partial_json"]) == {"city": "Paris"}


def test_llama_plain_prompt_is_one_user_turn() -> None:
    req = dialect_for("meta.llama3-8b-instruct-v1:0").parse({"prompt": "Tell me a joke"})
    assert [(m.role, m.text) for m in req.messages] == [("user", "Tell me a joke")]
    assert req.system is None and req.sampling.max_tokens == 512


def test_llama_response_counts_and_stream_nulls() -> None:
    d = dialect_for("meta.llama3-8b-instruct-v1:0")
    body = d.response(RESULT, InvokeContext("r", "m"))
    assert (body["prompt_token_count"], body["generation_token_count"]) == (10, 5)
    assert d.stream_delta("x", InvokeContext("r", "m"))[0]["stop_reason"] is None


def test_titan_defaults_and_plain_instruction() -> None:
    req = dialect_for("amazon.titan-text-lite-v1").parse({"inputText": "Summarize: cats"})
    assert [(m.role, m.text) for m in req.messages] == [("user", "Summarize: cats")]
    assert req.sampling.max_tokens == 512
    body = TitanDialect().response(RESULT, InvokeContext("r", "m"))
    assert body["inputTextTokenCount"] == 10 and body["results"][0]["tokenCount"] == 5
    stop = ChatResult(text="x", stop_reason="stop_sequence", usage=Usage())
    assert body["results"][0]["completionReason"] == "FINISHED"
    assert (
        TitanDialect().response(stop, InvokeContext("r", "m"))["results"][0]["completionReason"]
        == "STOP_CRITERIA_MET"
    )


def test_cohere_chat_history_and_stream_end() -> None:
    d = dialect_for("cohere.command-r-v1:0")
    d.parse({"message": "hi", "chat_history": [{"role": "SYSTEM", "message": "Sys"}]})
    body = d.response(RESULT, InvokeContext("r", "m"))
    assert body["chat_history"][-2:] == [
        {"role": "USER", "message": "hi"},
        {"role": "CHATBOT", "message": "Hello world"},
    ]
    assert {"response_id", "generation_id"} <= body.keys()
    end = d.stream_end(RESULT, InvokeContext("r", "m"))[-1]
    assert (
        end["event_type"] == "stream-end"
        and end["is_finished"]
        and end["response"]["text"] == "Hello world"
    )
    assert d.stream_delta("x", InvokeContext("r", "m")) == [
        {"event_type": "text-generation", "text": "x", "is_finished": False}
    ]


def test_openai_style_tool_calls() -> None:
    d = dialect_for("ai21.jamba-1-5-large-v1:0")
    req = d.parse({
        "messages": [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "21C"},
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
    })  # fmt: skip
    assert req.messages[1].tool_calls[0].input == {"city": "Paris"}
    assert req.messages[2].role == "user" and req.messages[2].tool_results[0].content == "21C"
    assert req.tool_choice.mode == "any"
    body = d.response(TOOL_RESULT, InvokeContext("r", "m"))
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert body["choices"][0]["finish_reason"] == "tool_calls"
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 8, "total_tokens": 18}


def test_local_chat_envelope() -> None:
    d = dialect_for("my-custom-model")
    assert isinstance(d, LocalDialect)
    d.parse({"messages": [{"role": "user", "content": "hi"}]})
    ctx = InvokeContext("r", "my-custom-model")
    body = d.response(RESULT, ctx)
    assert body["object"] == "chat.completion" and body["model"] == "my-custom-model"
    assert d.stream_delta("x", ctx)[0]["object"] == "chat.completion.chunk"
    assert d.stream_end(RESULT, ctx)[-1]["usage"]["total_tokens"] == 15


def test_local_completion_envelope() -> None:
    d = dialect_for("huggingface.tinyllama")
    req = d.parse({"prompt": "abc", "stop": "\n"})
    assert req.prompt == "abc" and req.messages == [] and req.sampling.stop == ["\n"]
    body = d.response(RESULT, InvokeContext("r", "m"))
    assert body["object"] == "text_completion" and body["choices"][0]["text"] == "Hello world"


def test_nova_stream_events() -> None:
    d = dialect_for("amazon.nova-micro-v1:0")
    d.parse({"messages": [{"role": "user", "content": [{"text": "x"}]}]})
    ctx = InvokeContext("r", "m")
    chunks = d.stream_start(ctx) + d.stream_delta("x", ctx) + d.stream_end(RESULT, ctx)
    assert [next(iter(c)) for c in chunks] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    assert chunks[-1]["metadata"]["usage"] == {
        "inputTokens": 10,
        "outputTokens": 5,
        "totalTokens": 15,
    }
    body = d.response(RESULT, ctx)
    assert body["usage"]["totalTokens"] == 15 and body["stopReason"] == "end_turn"


@pytest.mark.parametrize("model_id,base", [
    ("us.anthropic.claude-3-haiku-20240307-v1:0", "anthropic.claude-3-haiku-20240307-v1:0"),
    ("us-gov.meta.llama3-8b-instruct-v1:0", "meta.llama3-8b-instruct-v1:0"),
    ("apac.amazon.nova-pro-v1:0", "amazon.nova-pro-v1:0"),
    ("global.anthropic.claude-sonnet-4-6", "anthropic.claude-sonnet-4-6"),
    ("jp.cohere.command-r-v1:0", "cohere.command-r-v1:0"),
    ("arn:aws:bedrock:us-east-1::foundation-model/mistral.mistral-7b-instruct-v0:2", "mistral.mistral-7b-instruct-v0:2"),
    ("arn:aws:bedrock:us-east-1:123:inference-profile/eu.meta.llama3-8b-instruct-v1:0", "meta.llama3-8b-instruct-v1:0"),
    ("huggingface.qwen", "huggingface.qwen"),
])  # fmt: skip
def test_base_model_id(model_id: str, base: str) -> None:
    assert base_model_id(model_id) == base


def test_dispatch_specifics() -> None:
    assert isinstance(dialect_for("cohere.command-light-text-v14"), CohereCommandDialect)
    assert isinstance(dialect_for("au.amazon.titan-text-premier-v1:0"), TitanDialect)
    assert isinstance(dialect_for("google.gemma-3-4b-it"), LocalDialect)
    assert dialect_for("meta.llama3-8b-instruct-v1:0") is not dialect_for(
        "meta.llama3-8b-instruct-v1:0"
    )


# ----------------------------------------------------------------------- bad inputs

A = "anthropic.claude-3-haiku-20240307-v1:0"
MSG = [{"role": "user", "content": "hi"}]
AV = {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 10, "messages": MSG}

BAD = [
    (A, {"max_tokens": 10, "messages": MSG}, "anthropic_version"),
    (A, {**AV, "anthropic_version": "2023-06-01"}, "anthropic_version"),
    (A, {"anthropic_version": "bedrock-2023-05-31", "messages": MSG}, "max_tokens"),
    (A, {**AV, "max_tokens": 0}, "#/max_tokens"),
    (A, {**AV, "temperature": 1.5}, "#/temperature"),
    (A, {**AV, "top_p": -0.1}, "#/top_p"),
    (A, {**AV, "top_k": -1}, "#/top_k"),
    (A, {**AV, "temperature": "hot"}, "#/temperature: expected type: Number, found: String"),
    (A, {**AV, "messages": []}, "#/messages"),
    (A, {**AV, "messages": [{"role": "system", "content": "x"}]}, "#/messages/0/role"),
    (A, {**AV, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "image"),
    (A, {**AV, "messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "zz", "content": "x"}]}]}, "tool_use_id"),
    (A, {**AV, "tool_choice": {"type": "tool", "name": "nope"}}, "#/tool_choice/name"),
    (A, {"prompt": "Hello", "max_tokens_to_sample": 5}, "Human"),
    (A, {"prompt": "\n\nHuman: hi\n\nAssistant:"}, "max_tokens_to_sample"),
    ("amazon.titan-text-express-v1", {}, "inputText"),
    ("amazon.titan-text-express-v1", {"inputText": ""}, "#/inputText"),
    ("amazon.titan-text-express-v1", {"inputText": "x", "textGenerationConfig": {"temperature": 2}}, "#/textGenerationConfig/temperature"),
    ("amazon.titan-text-express-v1", {"inputText": "x", "textGenerationConfig": {"maxTokenCount": 0}}, "maxTokenCount"),
    ("amazon.titan-text-express-v1", {"inputText": "x", "textGenerationConfig": {"topP": 1.2}}, "topP"),
    ("amazon.titan-text-express-v1", {"inputText": "x", "textGenerationConfig": "hot"}, "textGenerationConfig"),
    ("meta.llama3-8b-instruct-v1:0", {"max_gen_len": 5}, "prompt"),
    ("meta.llama3-8b-instruct-v1:0", {"prompt": 5}, "#/prompt"),
    ("meta.llama3-8b-instruct-v1:0", {"prompt": "x", "max_gen_len": 0}, "max_gen_len"),
    ("meta.llama3-8b-instruct-v1:0", {"prompt": "x", "temperature": 1.01}, "temperature"),
    ("meta.llama3-8b-instruct-v1:0", {"prompt": "x", "max_gen_len": True}, "max_gen_len"),
    ("mistral.mistral-7b-instruct-v0:2", {"prompt": "x", "top_k": -2}, "#/top_k"),
    ("mistral.mistral-7b-instruct-v0:2", {"prompt": "x", "stop": "END"}, "#/stop"),
    ("mistral.mistral-large-2407-v1:0", {"messages": [{"role": "user", "content": 3}]}, "#/messages/0/content"),
    ("cohere.command-r-v1:0", {"chat_history": []}, "message"),
    ("cohere.command-r-v1:0", {"message": "x", "chat_history": [{"role": "BOT", "message": "y"}]}, "#/chat_history/0/role"),
    ("cohere.command-r-v1:0", {"message": "x", "p": 1.5}, "#/p"),
    ("cohere.command-r-v1:0", {"message": "x", "k": -1}, "#/k"),
    ("cohere.command-r-v1:0", {"message": "x", "seed": 1.5}, "#/seed"),
    ("cohere.command-text-v14", {"prompt": "x", "temperature": 5.5}, "#/temperature"),
    ("ai21.jamba-1-5-mini-v1:0", {"messages": MSG, "temperature": 2.5}, "#/temperature"),
    ("ai21.jamba-1-5-mini-v1:0", {"messages": MSG, "max_tokens": 0}, "#/max_tokens"),
    ("ai21.jamba-1-5-mini-v1:0", {"max_tokens": 5}, "messages"),
    ("ai21.jamba-1-5-mini-v1:0", {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "image"),
    ("ai21.j2-mid-v1", {"prompt": "x", "topP": 3}, "#/topP"),
    ("amazon.nova-lite-v1:0", {"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}, "user message"),
    ("amazon.nova-lite-v1:0", {"messages": [{"role": "user", "content": [{"text": "x"}]}], "inferenceConfig": {"temperature": 3}}, "#/inferenceConfig/temperature"),
    ("huggingface.qwen", {"messages": MSG, "top_p": 2}, "#/top_p"),
    ("huggingface.qwen", {"prompt": "x", "seed": "s"}, "#/seed"),
    ("huggingface.qwen", {}, "messages"),
    ("huggingface.qwen", {"prompt": ""}, "#/prompt"),
]  # fmt: skip


@pytest.mark.parametrize(
    "model_id,body,match", BAD, ids=[f"{b[0].split('.')[0]}-{i}" for i, b in enumerate(BAD)]
)
def test_bad_input_raises_validation_error(model_id: str, body: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match.replace("/", "/").replace("?", r"\?")):
        dialect_for(model_id).parse(body)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_non_object_body_rejected(case: Case) -> None:
    with pytest.raises(ValidationError, match="JSONObject"):
        dialect_for(case.model_id).parse(["not", "an", "object"])  # type: ignore[arg-type]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_unknown_keys_ignored(case: Case) -> None:
    dialect_for(case.model_id).parse({**case.body, "some_future_field": {"x": 1}})
