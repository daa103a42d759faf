"""OpenAI's ``/v1`` bodies <-> neutral objects: chat completions, completions, embeddings.

Pure translation, no HTTP: ``outcrop.api.openai`` frames what this module builds. The
chat ``messages`` / ``tools`` parsing is the one the AI21 Jamba dialect already uses
(Jamba's native body *is* OpenAI's), so both stay in step.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from outcrop.service.dialects.ai21 import (
    chat_usage,
    finish_reason,
    parse_chat_messages,
    parse_chat_tools,
)
from outcrop.service.fields import Obj, read_sampling
from outcrop.service.types import ChatRequest, ChatResult, SamplingParams, ToolCall, Usage

ROLES = ("system", "user", "assistant", "tool")
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's documented default for /v1/completions
MAX_EMBEDDING_INPUTS = 2048

EncodingFormat = Literal["float", "base64"]


# --------------------------------------------------------------------------- requests


@dataclass
class ChatCall:
    """A parsed ``/v1/chat/completions`` or ``/v1/completions`` body."""

    model: str
    request: ChatRequest
    stream: bool = False
    include_usage: bool = False


@dataclass
class EmbeddingsCall:
    model: str
    texts: list[str]
    dimensions: int | None = None
    encoding_format: EncodingFormat = "float"


def parse_chat_completion(body: dict[str, Any]) -> ChatCall:
    """A chat completions body → the model as sent and a neutral ``ChatRequest``.

    >>> call = parse_chat_completion({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    >>> call.request.messages[0].text
    'hi'
    """
    root = Obj.of(body)
    model = _model(root)
    system, messages = parse_chat_messages(_developer_as_system(root), roles=ROLES)
    tools, choice = parse_chat_tools(root)
    if choice is not None and not tools:
        if choice.mode in ("any", "tool"):
            raise root.fail("tool_choice", "tool_choice is only allowed when tools are specified")
        choice = None
    request = ChatRequest(
        messages=messages,
        system=system,
        sampling=_sampling(root, "max_completion_tokens", "max_tokens"),
        tools=tools,
        tool_choice=choice,
        output_schema=_output_schema(root),
    )
    _reject_unsupported(root, logprobs=True)
    stream, include_usage = _stream(root)
    return ChatCall(model, request, stream, include_usage)


def parse_completion(body: dict[str, Any]) -> ChatCall:
    """A legacy completions body: the prompt is continued as is, without a chat template."""
    root = Obj.of(body)
    model = _model(root)
    prompt = root.value("prompt", required=True)
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise root.fail("prompt", "expected a string (or a list holding exactly one string)")
    if not prompt:
        raise root.fail("prompt", "expected a non-empty string")
    sampling = _sampling(root, "max_tokens")
    if sampling.max_tokens is None:
        sampling.max_tokens = COMPLETIONS_DEFAULT_MAX_TOKENS
    _reject_unsupported(root, logprobs=False)
    for key in ("echo",):
        if root.boolean(key):
            raise root.fail(key, f"{key} is not supported by this server")
    if root.integer("best_of") not in (None, 1):
        raise root.fail("best_of", "only best_of=1 is supported")
    if root.string("suffix"):
        raise root.fail("suffix", "suffix is not supported by this server")
    stream, include_usage = _stream(root)
    return ChatCall(model, ChatRequest(prompt=prompt, sampling=sampling), stream, include_usage)


def parse_embeddings(body: dict[str, Any]) -> EmbeddingsCall:
    root = Obj.of(body)
    model = _model(root)
    value = root.value("input", required=True)
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not texts:
        raise root.fail("input", "expected a string or a non-empty array of strings")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise root.fail("input", f"item {i}: token arrays are not supported; send strings")
        if not text:
            raise root.fail("input", f"item {i}: expected a non-empty string")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise root.fail("input", f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
    encoding = root.string("encoding_format", choices=("float", "base64")) or "float"
    return EmbeddingsCall(
        model=model,
        texts=texts,
        dimensions=root.integer("dimensions", minimum=1),
        encoding_format=encoding,  # type: ignore[arg-type]
    )


def _model(root: Obj) -> str:
    return root.string("model", required=True, non_empty=True) or ""


def _developer_as_system(root: Obj) -> Obj:
    """OpenAI's ``developer`` role is the newer name of ``system``."""
    messages = root.value("messages")
    if not isinstance(messages, list):
        return root
    renamed = [
        {**m, "role": "system"} if isinstance(m, dict) and m.get("role") == "developer" else m
        for m in messages
    ]
    return Obj({**root.data, "messages": renamed}, root.path, root.style)


def _sampling(root: Obj, *max_token_keys: str) -> SamplingParams:
    max_key = next((k for k in max_token_keys if root.has(k)), max_token_keys[0])
    sampling = read_sampling(
        root,
        max_tokens=max_key,
        temperature_max=2.0,
        top_p="top_p",
        top_k="top_k",  # not OpenAI's, but vLLM and llama.cpp servers take it
        seed="seed",
        stop="stop",
        stop_single=True,
    )
    n = root.integer("n", minimum=1)
    if n not in (None, 1):
        raise root.fail("n", "only n=1 is supported: this server returns one choice per request")
    return sampling


def _output_schema(root: Obj) -> dict[str, Any] | None:
    fmt = root.obj("response_format")
    if fmt is None:
        return None
    kind = fmt.string("type", required=True, choices=("text", "json_object", "json_schema"))
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    spec = fmt.obj("json_schema", required=True)
    assert spec is not None
    schema = spec.obj("schema")
    return schema.data if schema is not None else {"type": "object"}


def _reject_unsupported(root: Obj, *, logprobs: bool) -> None:
    """Refuse what would silently change the answer's meaning; ignore the harmless rest."""
    if logprobs and root.boolean("logprobs"):
        raise root.fail("logprobs", "logprobs are not supported by this server")
    if not logprobs and root.integer("logprobs"):
        raise root.fail("logprobs", "logprobs are not supported by this server")


def _stream(root: Obj) -> tuple[bool, bool]:
    stream = bool(root.boolean("stream"))
    options = root.obj("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise root.fail("stream_options", "stream_options is only allowed when stream is true")
    return stream, bool(options.boolean("include_usage"))


# -------------------------------------------------------------------------- responses


@dataclass
class Envelope:
    """``id``, ``created`` and ``model``: the fields every body and chunk of one call repeats."""

    model: str
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def chat(cls, model: str) -> Envelope:
        return cls(model, f"chatcmpl-{uuid.uuid4().hex}")

    @classmethod
    def completion(cls, model: str) -> Envelope:
        return cls(model, f"cmpl-{uuid.uuid4().hex}")

    def body(self, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model}


def usage_object(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage: ``cached_tokens`` counts every prompt token the prefix cache
    served, automatic reuse included."""
    return {
        **chat_usage(usage),
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def tool_call_objects(calls: Sequence[ToolCall]) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": json.dumps(call.input)},
        }
        for call in calls
    ]


def chat_completion(result: ChatResult, env: Envelope) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
    if result.tool_calls:
        message["content"] = result.text or None
        message["tool_calls"] = tool_call_objects(result.tool_calls)
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": finish_reason(result.stop_reason),
    }
    return {**env.body("chat.completion"), "choices": [choice], "usage": usage_object(result.usage)}


def chat_chunk(
    env: Envelope, delta: dict[str, Any], finish: str | None = None, *, usage: bool = False
) -> dict[str, Any]:
    """One ``chat.completion.chunk``. ``usage``: the stream was asked to report usage, so
    every chunk carries ``"usage": null`` until the last."""
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    chunk = {**env.body("chat.completion.chunk"), "choices": [choice]}
    if usage:
        chunk["usage"] = None
    return chunk


def chat_stream_start(env: Envelope, *, usage: bool = False) -> dict[str, Any]:
    return chat_chunk(env, {"role": "assistant", "content": ""}, usage=usage)


def chat_stream_text(env: Envelope, text: str, *, usage: bool = False) -> dict[str, Any]:
    return chat_chunk(env, {"content": text}, usage=usage)


def chat_stream_end(
    result: ChatResult, env: Envelope, *, usage: bool = False
) -> list[dict[str, Any]]:
    """Tool calls (name first, then the arguments), the finish chunk, the usage chunk."""
    chunks = []
    for index, call in enumerate(tool_call_objects(result.tool_calls)):
        head = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
        arguments = {"arguments": call["function"]["arguments"]}
        chunks.append(chat_chunk(env, {"tool_calls": [{"index": index, **head}]}, usage=usage))
        chunks.append(
            chat_chunk(env, {"tool_calls": [{"index": index, "function": arguments}]}, usage=usage)
        )
    chunks.append(chat_chunk(env, {}, finish_reason(result.stop_reason), usage=usage))
    if usage:
        chunks.append(usage_chunk(env, "chat.completion.chunk", result))
    return chunks


def usage_chunk(env: Envelope, obj: str, result: ChatResult) -> dict[str, Any]:
    return {**env.body(obj), "choices": [], "usage": usage_object(result.usage)}


def completion(result: ChatResult, env: Envelope) -> dict[str, Any]:
    choice = {
        "index": 0,
        "text": result.text,
        "logprobs": None,
        "finish_reason": finish_reason(result.stop_reason),
    }
    return {**env.body("text_completion"), "choices": [choice], "usage": usage_object(result.usage)}


def completion_chunk(
    env: Envelope, text: str, finish: str | None = None, *, usage: bool = False
) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    chunk = {**env.body("text_completion"), "choices": [choice]}
    if usage:
        chunk["usage"] = None
    return chunk


def completion_stream_end(
    result: ChatResult, env: Envelope, *, usage: bool = False
) -> list[dict[str, Any]]:
    chunks = [completion_chunk(env, "", finish_reason(result.stop_reason), usage=usage)]
    if usage:
        chunks.append(usage_chunk(env, "text_completion", result))
    return chunks


def model_object(model_id: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def embeddings_body(
    vectors: Sequence[Sequence[float]] | np.ndarray,
    model: str,
    input_tokens: int,
    encoding_format: EncodingFormat,
) -> dict[str, Any]:
    """``base64`` is little-endian float32 bytes, as the OpenAI SDK decodes them."""
    data = []
    for index, vector in enumerate(vectors):
        array = np.asarray(vector, dtype="<f4")
        embedding: Any
        if encoding_format == "base64":
            embedding = base64.b64encode(array.tobytes()).decode("ascii")
        else:
            embedding = array.astype(float).tolist()
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": input_tokens, "total_tokens": input_tokens},
    }


__all__ = [
    "ChatCall",
    "EmbeddingsCall",
    "Envelope",
    "chat_chunk",
    "chat_completion",
    "chat_stream_end",
    "chat_stream_start",
    "chat_stream_text",
    "completion",
    "completion_chunk",
    "completion_stream_end",
    "embeddings_body",
    "model_object",
    "parse_chat_completion",
    "parse_completion",
    "parse_embeddings",
    "tool_call_objects",
    "usage_chunk",
]
