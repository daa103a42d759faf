"""AI21 Labs: Jamba (OpenAI chat-completions shaped) and Jurassic-2 (``ai21.j2-*``).

Jamba's body *is* the OpenAI chat-completions format, so the OpenAI-style helpers live
here and are reused by ``mistral`` (chat format) and ``local`` rather than copied.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from outcrop.service.dialects.base import Dialect, InvokeContext, text_parts
from outcrop.service.fields import Obj, read_sampling
from outcrop.service.types import (
    ChatRequest,
    ChatResult,
    Message,
    StopReason,
    ToolCall,
    ToolChoice,
    ToolResult,
    ToolSpec,
    Usage,
)

# ------------------------------------------------------------- OpenAI-style helpers

FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def finish_reason(stop: StopReason) -> str:
    return FINISH_REASONS.get(stop, "stop")


def chat_usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


_CHAT_MEDIA = {"image_url": "image", "image": "image", "input_audio": "input_audio", "file": "file"}


def _content_text(o: Obj, key: str) -> str:
    """``content`` as a string or a list of ``{type:"text", text}`` parts."""
    return text_parts(o, key, _CHAT_MEDIA, "content part")


def _tool_call(o: Obj) -> ToolCall:
    function = o.obj("function", required=True)
    assert function is not None
    arguments = function.value("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise function.fail("arguments", "expected a JSON object encoded as a string") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise function.fail("arguments", "expected a JSON object")
    return ToolCall(
        id=o.string("id") or f"call_{uuid.uuid4().hex[:24]}",
        name=function.string("name", required=True, non_empty=True) or "",
        input=arguments,
    )


def parse_chat_messages(root: Obj, *, roles: tuple[str, ...]) -> tuple[str | None, list[Message]]:
    """OpenAI ``messages`` → (system, neutral messages).

    ``system`` entries are joined into the system prompt; consecutive ``tool`` entries
    become one user message carrying tool results, the way chat templates expect them.
    """
    system: list[str] = []
    messages: list[Message] = []
    for entry in root.objs("messages", required=True, non_empty=True):
        role = entry.string("role", required=True, choices=roles)
        if role == "system":
            system.append(_content_text(entry, "content"))
        elif role == "tool":
            result = ToolResult(
                tool_use_id=entry.string("tool_call_id", required=True) or "",
                content=_content_text(entry, "content"),
            )
            if messages and messages[-1].role == "user" and messages[-1].tool_results:
                messages[-1].tool_results.append(result)
            else:
                messages.append(Message(role="user", tool_results=[result]))
        elif role == "assistant":
            calls = [_tool_call(c) for c in entry.objs("tool_calls")]
            text = _content_text(entry, "content")
            if not text and not calls:
                raise entry.fail("content", "expected non-empty content or tool_calls")
            messages.append(Message(role="assistant", text=text, tool_calls=calls))
        else:
            text = _content_text(entry, "content")
            if not text:
                raise entry.fail("content", "expected a non-empty string")
            messages.append(Message(role="user", text=text))
    if not messages:
        raise root.fail("messages", "expected at least one user message")
    return ("\n".join(system) if system else None), messages


def parse_chat_tools(root: Obj) -> tuple[list[ToolSpec], ToolChoice | None]:
    """OpenAI ``tools`` (``{type:"function", function:{name, description, parameters}}``)."""
    tools: list[ToolSpec] = []
    for entry in root.objs("tools"):
        entry.string("type", choices=("function",))
        function = entry.obj("function", required=True)
        assert function is not None
        parameters = function.obj("parameters")
        tools.append(
            ToolSpec(
                name=function.string("name", required=True, non_empty=True) or "",
                description=function.string("description") or "",
                input_schema=parameters.data
                if parameters
                else {"type": "object", "properties": {}},
            )
        )
    choice = root.value("tool_choice")
    if choice is None:
        return tools, None
    if isinstance(choice, str):
        mode = root.string("tool_choice", choices=("auto", "none", "any", "required"))
        return tools, ToolChoice("any" if mode == "required" else mode)  # type: ignore[arg-type]
    picked = root.obj("tool_choice")
    assert picked is not None
    function = picked.obj("function", required=True)
    assert function is not None
    name = function.string("name", required=True) or ""
    if name not in {t.name for t in tools}:
        raise function.fail("name", f"tool {name!r} is not defined in tools")
    return tools, ToolChoice("tool", name)


def chat_message(result: ChatResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.input)},
            }
            for call in result.tool_calls
        ]
    return message


def chat_delta_tool_calls(result: ChatResult) -> list[dict[str, Any]]:
    return [
        {"index": i, **call} for i, call in enumerate(chat_message(result).get("tool_calls", []))
    ]


class ChatCompletionsDialect(Dialect):
    """An OpenAI chat-completions body; subclasses set limits and the extra echo fields."""

    temperature_max = 2.0
    max_tokens_default: int | None = None
    roles: tuple[str, ...] = ("system", "user", "assistant", "tool")

    def __init__(self) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        root = Obj.of(body)
        system, messages = parse_chat_messages(root, roles=self.roles)
        tools, choice = parse_chat_tools(root)
        sampling = read_sampling(
            root,
            max_tokens="max_tokens",
            max_tokens_default=self.max_tokens_default,
            temperature_max=self.temperature_max,
            top_p="top_p",
            top_k="top_k",
            seed="seed",
            stop="stop",
            stop_single=True,
        )
        return ChatRequest(
            messages=messages, system=system, sampling=sampling, tools=tools, tool_choice=choice
        )

    def envelope(self, ctx: InvokeContext, obj: str) -> dict[str, Any]:
        """Fields every body and chunk starts with (``id`` and friends)."""
        return {"id": self.id}

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        choice = {
            "index": 0,
            "message": chat_message(result),
            "finish_reason": finish_reason(result.stop_reason),
        }
        return {
            **self.envelope(ctx, "chat.completion"),
            "choices": [choice],
            "usage": chat_usage(result.usage),
        }

    def _chunk(
        self, ctx: InvokeContext, delta: dict[str, Any], finish: str | None
    ) -> dict[str, Any]:
        return {
            **self.envelope(ctx, "chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    def stream_start(self, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [self._chunk(ctx, {"role": "assistant", "content": ""}, None)]

    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [self._chunk(ctx, {"content": text}, None)]

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        chunks = []
        if result.tool_calls:
            chunks.append(self._chunk(ctx, {"tool_calls": chat_delta_tool_calls(result)}, None))
        last = self._chunk(ctx, {}, finish_reason(result.stop_reason))
        last["usage"] = chat_usage(result.usage)
        return [*chunks, last]


# -------------------------------------------------------------------------- families


class JambaDialect(ChatCompletionsDialect):
    """``ai21.jamba*``: OpenAI-style chat; AI21 documents temperature 0–2, max 4096."""

    name = "ai21-jamba"
    temperature_max = 2.0
    max_tokens_default = 4096
    roles = ("system", "user", "assistant", "tool")


JURASSIC_REASONS = {
    "end_turn": "endoftext",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "endoftext",
}


class JurassicDialect(Dialect):
    """``ai21.j2-*`` (legacy): ``{prompt, maxTokens, ...}`` → ``completions[].data.text``."""

    name = "ai21-j2"

    def __init__(self) -> None:
        self.prompt = ""

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        root = Obj.of(body)
        self.prompt = root.string("prompt", required=True, non_empty=True) or ""
        sampling = read_sampling(root, max_tokens="maxTokens", top_p="topP", stop="stopSequences")
        # Jurassic is a plain completion model: the prompt is continued as is.
        return ChatRequest(prompt=self.prompt, sampling=sampling)

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        return {
            "id": ctx.request_id,
            "prompt": {"text": self.prompt, "tokens": []},
            "completions": [
                {
                    "data": {"text": result.text, "tokens": []},
                    "finishReason": {
                        "reason": JURASSIC_REASONS.get(result.stop_reason, "endoftext")
                    },
                }
            ],
        }

    # Jurassic-2 has no native streaming: the whole body goes out as one final chunk.
    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        return []

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [self.response(result, ctx)]
