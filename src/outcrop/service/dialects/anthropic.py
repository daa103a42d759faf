"""Anthropic Claude: the Messages API body, and legacy Text Completions (``prompt``).

One instance serves one invocation: ``parse`` remembers which of the two formats arrived
so ``response`` and the stream answer in the same one.
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any

from outcrop.service.cache_points import TTLS, CacheMarks
from outcrop.service.converse import unsupported_modality
from outcrop.service.dialects.base import Dialect, InvokeContext, text_parts
from outcrop.service.fields import Obj, read_sampling
from outcrop.service.types import (
    ChatRequest,
    ChatResult,
    Message,
    ToolCall,
    ToolChoice,
    ToolResult,
    ToolSpec,
)

ANTHROPIC_VERSION = "bedrock-2023-05-31"
_MEDIA = ("image", "document", "search_result")
_SKIPPED = ("thinking", "redacted_thinking")  # earlier reasoning: not re-fed to the model
_TURN = re.compile(r"\n\n(Human|Assistant):")
HUMAN_STOP = "\n\nHuman:"


class AnthropicDialect(Dialect):
    name = "anthropic"

    def __init__(self) -> None:
        self.legacy = False
        self.id = "msg_bdrk_" + secrets.token_hex(12)

    # ------------------------------------------------------------------ request

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        root = Obj.of(body)
        if "messages" not in body and "prompt" in body:
            self.legacy = True
            return self._parse_legacy(root)
        version = root.string("anthropic_version", required=True)
        if version != ANTHROPIC_VERSION:
            raise root.fail(
                "anthropic_version", f"expected {ANTHROPIC_VERSION!r}, found {version!r}"
            )
        sampling = read_sampling(
            root, max_tokens="max_tokens", max_tokens_required=True,
            top_p="top_p", top_k="top_k", stop="stop_sequences",
        )  # fmt: skip
        marks = CacheMarks()
        tools, choice = _parse_tools(root, marks)
        request = ChatRequest(
            system=_parse_system(root, marks),
            messages=_parse_messages(root, marks),
            sampling=sampling,
            tools=tools,
            tool_choice=choice,
            cache=marks,
        )
        marks.check("blocks with cache_control")
        return request

    def _parse_legacy(self, root: Obj) -> ChatRequest:
        version = root.string("anthropic_version")
        if version is not None and version != ANTHROPIC_VERSION:
            raise root.fail(
                "anthropic_version", f"expected {ANTHROPIC_VERSION!r}, found {version!r}"
            )
        prompt = root.string("prompt", required=True, non_empty=True) or ""
        sampling = read_sampling(
            root, max_tokens="max_tokens_to_sample", max_tokens_required=True,
            top_p="top_p", top_k="top_k", stop="stop_sequences",
        )  # fmt: skip
        system, messages = parse_human_assistant(prompt)
        if not messages or messages[0].role != "user":
            raise root.fail("prompt", 'prompt must start with "\\n\\nHuman:" turn')
        return ChatRequest(messages=messages, system=system, sampling=sampling)

    # ----------------------------------------------------------------- response

    def _content(self, result: ChatResult) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if result.text or not result.tool_calls:
            blocks.append({"type": "text", "text": result.text})
        for call in result.tool_calls:
            blocks.append(
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.input}
            )
        return blocks

    def _legacy_stop(self, result: ChatResult) -> tuple[str, str | None]:
        if result.stop_reason == "max_tokens":
            return "max_tokens", None
        # A natural end of turn is reported as hitting the implicit "\n\nHuman:" stop.
        return "stop_sequence", result.stop_sequence or HUMAN_STOP

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        if self.legacy:
            reason, stop = self._legacy_stop(result)
            return {"completion": result.text, "stop_reason": reason, "stop": stop}
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": ctx.model_id,
            "content": self._content(result),
            "stop_reason": result.stop_reason,
            "stop_sequence": result.stop_sequence,
            "usage": _usage(result),
        }

    # ------------------------------------------------------------------- stream

    def stream_start(self, ctx: InvokeContext) -> list[dict[str, Any]]:
        if self.legacy:
            return []
        message = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": ctx.model_id,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": ctx.input_tokens, "output_tokens": 0},
        }
        return [
            {"type": "message_start", "message": message},
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ]

    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        if self.legacy:
            return [{"completion": text, "stop_reason": None, "stop": None}]
        return [
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": text},
            }
        ]

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        if self.legacy:
            reason, stop = self._legacy_stop(result)
            return [{"completion": "", "stop_reason": reason, "stop": stop}]
        chunks: list[dict[str, Any]] = [{"type": "content_block_stop", "index": 0}]
        for index, call in enumerate(result.tool_calls, start=1):
            block = {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(call.input)}
            chunks += [
                {"type": "content_block_start", "index": index, "content_block": block},
                {"type": "content_block_delta", "index": index, "delta": delta},
                {"type": "content_block_stop", "index": index},
            ]
        chunks.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": result.stop_reason, "stop_sequence": result.stop_sequence},
                "usage": _usage(result, final_delta=True),
            }
        )
        chunks.append({"type": "message_stop"})
        return chunks


# ------------------------------------------------------------------------- helpers


def _usage(result: ChatResult, *, final_delta: bool = False) -> dict[str, int]:
    """With cache_control, ``input_tokens`` counts only what was neither read from nor
    written to the cache, and the two cache counts follow (Anthropic's usage shape)."""
    u = result.usage
    if not u.cache_points:
        if final_delta:
            return {"output_tokens": u.output_tokens}
        return {"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}
    return {
        "input_tokens": u.uncached_input_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "output_tokens": u.output_tokens,
    }


def _cache_control(o: Obj, marks: CacheMarks, place: str) -> str:
    """A block's ``cache_control``, validated; the marker to leave after the block."""
    control = o.obj("cache_control")
    if control is None:
        return ""
    control.string("type", required=True, choices=("ephemeral",))
    return marks.add(control.string("ttl", choices=TTLS), place)


def parse_human_assistant(prompt: str) -> tuple[str | None, list[Message]]:
    """``"sys\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:"`` → turns.

    Text before the first turn is the system prompt; a trailing empty Assistant turn is
    the generation cue and is dropped (a non-empty one is kept as a prefill).
    """
    parts = _TURN.split(prompt)
    system = parts[0].strip() or None
    messages: list[Message] = []
    for speaker, text in zip(parts[1::2], parts[2::2], strict=True):
        role = "user" if speaker == "Human" else "assistant"
        messages.append(Message(role=role, text=text.strip()))  # type: ignore[arg-type]
    if messages and messages[-1].role == "assistant" and not messages[-1].text:
        messages.pop()
    return system, messages


def _text_blocks(o: Obj, key: str) -> str:
    """``system`` / ``tool_result.content``: a string or a list of text blocks."""
    return text_parts(o, key, {kind: kind for kind in _MEDIA}, "block")


def _parse_system(root: Obj, marks: CacheMarks) -> str | None:
    if not isinstance(root.value("system"), list):
        return _text_blocks(root, "system") or None
    texts: list[str] = []
    for part in root.objs("system"):
        kind = part.string("type", required=True)
        if kind in _MEDIA:
            raise unsupported_modality(kind or "")
        if kind != "text":
            raise part.fail("type", f"unsupported block type {kind!r}")
        texts.append(
            (part.string("text", required=True) or "") + _cache_control(part, marks, "system")
        )
    return "\n".join(texts) or None


def _parse_messages(root: Obj, marks: CacheMarks) -> list[Message]:
    messages: list[Message] = []
    tool_ids: set[str] = set()
    for entry in root.objs("messages", required=True, non_empty=True):
        role = entry.string("role", required=True, choices=("user", "assistant"))
        message = Message(role=role)  # type: ignore[arg-type]
        content = entry.value("content", required=True)
        if isinstance(content, str):
            if not content:
                raise entry.fail("content", "text content must be non-empty")
            message.text = content
        else:
            texts: list[str] = []
            for block in entry.objs("content", required=True, non_empty=True):
                n_texts = len(texts)
                _parse_block(block, message, texts, tool_ids)
                marker = _cache_control(block, marks, "messages")
                if not marker:
                    continue
                if block.data.get("type") in _SKIPPED:
                    raise block.fail(
                        "cache_control", "cache_control cannot be set on thinking blocks"
                    )
                if len(texts) > n_texts and not (message.tool_calls or message.tool_results):
                    texts[-1] += marker
                else:  # tool blocks render after the text: the point closes the message
                    message.cache_marker += marker
            message.text = "\n".join(texts)
        tool_ids.update(call.id for call in message.tool_calls)
        messages.append(message)
    return messages


def _parse_block(block: Obj, message: Message, texts: list[str], tool_ids: set[str]) -> None:
    kind = block.string("type", required=True)
    if kind == "text":
        texts.append(block.string("text", required=True, non_empty=True) or "")
    elif kind == "tool_use":
        if message.role != "assistant":
            raise block.fail("type", "tool_use blocks are only allowed in assistant messages")
        tool_input = block.value("input", required=True)
        if not isinstance(tool_input, dict):
            raise block.fail("input", "expected type: JSONObject")
        message.tool_calls.append(
            ToolCall(
                id=block.string("id", required=True, non_empty=True) or "",
                name=block.string("name", required=True, non_empty=True) or "",
                input=tool_input,
            )
        )
    elif kind == "tool_result":
        if message.role != "user":
            raise block.fail("type", "tool_result blocks are only allowed in user messages")
        tool_use_id = block.string("tool_use_id", required=True) or ""
        if tool_use_id not in tool_ids:
            raise block.fail(
                "tool_use_id",
                f"unexpected tool_use_id {tool_use_id!r}: no earlier tool_use block has it",
            )
        message.tool_results.append(
            ToolResult(
                tool_use_id=tool_use_id,
                content=_text_blocks(block, "content"),
                status="error" if block.boolean("is_error") else None,
            )
        )
    elif kind in _MEDIA:
        raise unsupported_modality(kind or "")
    elif kind in _SKIPPED:
        return
    else:
        raise block.fail("type", f"unsupported content block type {kind!r}")


def _parse_tools(root: Obj, marks: CacheMarks) -> tuple[list[ToolSpec], ToolChoice | None]:
    tools: list[ToolSpec] = []
    for entry in root.objs("tools"):
        schema = entry.obj("input_schema", required=True)
        assert schema is not None
        tools.append(
            ToolSpec(
                name=entry.string("name", required=True, non_empty=True) or "",
                description=entry.string("description") or "",
                input_schema=schema.data,
                cache_marker=_cache_control(entry, marks, "tools"),
            )
        )
    choice = root.obj("tool_choice")
    if choice is None:
        return tools, None
    mode = choice.string("type", required=True, choices=("auto", "any", "tool", "none"))
    if mode != "tool":
        return tools, ToolChoice(mode)  # type: ignore[arg-type]
    name = choice.string("name", required=True) or ""
    if name not in {t.name for t in tools}:
        raise choice.fail("name", f"tool {name!r} is not defined in tools")
    return tools, ToolChoice("tool", name)
