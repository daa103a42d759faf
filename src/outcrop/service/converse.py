"""Converse / ConverseStream: wire JSON <-> neutral objects (no HTTP here).

The request side validates the way Bedrock does (role order, tool pairing, ranges) so a
client sees the same ``ValidationException`` locally that it would see from AWS. The
response side produces exactly the members botocore's ``bedrock-runtime`` model declares.
"""

from __future__ import annotations

import json
import re
from typing import Any

from outcrop.errors import ValidationError
from outcrop.service.cache_points import TTLS, CacheMarks
from outcrop.service.fields import Obj, Style, read_sampling
from outcrop.service.types import (
    ChatRequest,
    ChatResult,
    Message,
    SamplingParams,
    ToolCall,
    ToolChoice,
    ToolResult,
    ToolSpec,
    Usage,
)

StreamEvent = tuple[str, dict[str, Any]]
"""``(event_type, payload)``: ``event_type`` is the ``:event-type`` header (union member)."""

# Content the local text models cannot take: rejected instead of silently dropped, so the
# client learns the model lacks the modality rather than getting an answer that ignored it.
_MEDIA_BLOCKS = ("image", "document", "video", "audio")
# Blocks that carry no meaning for generation here; accepted and skipped like Bedrock
# does for models without reasoning support.
_IGNORED_BLOCKS = ("reasoningContent",)
CACHE_POINT_FIRST = (
    "The cachePoint block at {where} must come after the content it caches, not first."
)
_TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")

MUST_ALTERNATE = (
    "A conversation must alternate between user and assistant roles. Make sure the "
    "conversation alternates between user and assistant roles and try again."
)
MUST_START_WITH_USER = (
    "A conversation must start with a user message. Try again with a conversation that "
    "starts with a user message."
)
TOOL_CONFIG_REQUIRED = (
    "The toolConfig field must be defined when using toolUse and toolResult content blocks."
)


def unsupported_modality(kind: str) -> ValidationError:
    return ValidationError(
        f"This model doesn't support the {kind} content block that you provided. "
        "Try again with text-only content."
    )


# --------------------------------------------------------------------------- requests


def parse_converse(body: dict[str, Any]) -> ChatRequest:
    """A Converse / ConverseStream request body (path ``modelId`` already removed)."""
    return _parse(body, style="converse", nova=False)


def parse_converse_like(body: dict[str, Any]) -> ChatRequest:
    """A Converse-shaped *native* body (Amazon Nova's InvokeModel format).

    Differences from Converse: errors use the InvokeModel wording, ``inferenceConfig``
    accepts both Nova spellings (``max_new_tokens``/``top_p``/``top_k`` and
    ``maxTokens``/``topP``/``topK``), and ``schemaVersion`` may be present.
    """
    return _parse(body, style="native", nova=True)


def _parse(body: Any, *, style: Style, nova: bool) -> ChatRequest:
    root = Obj.of(body, (), style)
    request = ChatRequest()
    marks = request.cache
    request.system = _parse_system(root, marks)
    request.messages = _parse_messages(root, marks)
    request.sampling = _parse_inference(root, nova=nova)
    request.tools, request.tool_choice = _parse_tool_config(root, marks)
    request.output_schema = _parse_output_config(root)
    marks.check()
    if not root.has("toolConfig") and any(m.tool_calls or m.tool_results for m in request.messages):
        raise ValidationError(TOOL_CONFIG_REQUIRED)
    return request


def _parse_output_config(root: Obj) -> dict[str, Any] | None:
    """``outputConfig.textFormat``: a JSON schema (sent as a string) the answer must match."""
    config = root.obj("outputConfig")
    text_format = config.obj("textFormat") if config else None
    if text_format is None:
        return None
    kind = text_format.string("type", required=True)
    if kind != "json_schema":
        raise text_format.fail("type", "Member must satisfy enum value set: [json_schema]")
    structure = text_format.obj("structure", required=True)
    json_schema = structure.obj("jsonSchema", required=True)
    raw = json_schema.string("schema", required=True)
    try:
        schema = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise json_schema.fail("schema", f"is not valid JSON: {exc}") from exc
    if not isinstance(schema, dict):
        raise json_schema.fail("schema", "must be a JSON Schema object")
    return schema


def cache_point(block: Obj, marks: CacheMarks, place: str, *, first: bool) -> str:
    """A ``cachePoint`` block, validated; returns the marker to leave where it falls."""
    if first:
        raise ValidationError(CACHE_POINT_FIRST.format(where=_dotted(block)))
    point = block.obj("cachePoint", required=True)
    assert point is not None
    point.string("type", required=True, choices=("default",))
    return marks.add(point.string("ttl", choices=TTLS), place)


def _parse_system(root: Obj, marks: CacheMarks) -> str | None:
    texts: list[str] = []
    for block in root.objs("system"):
        if block.has("text"):
            texts.append(block.string("text", non_empty=True) or "")
        elif block.has("guardContent"):
            texts.append(_guard_text(block.obj("guardContent", required=True)))
        elif block.has("cachePoint"):
            texts[-1:] = [
                (texts[-1] if texts else "") + cache_point(block, marks, "system", first=not texts)
            ]
        else:
            raise block.fail(
                None, "SystemContentBlock must set exactly one of text, guardContent, cachePoint"
            )
    return "\n".join(texts) if texts else None


def _guard_text(guard: Obj | None) -> str:
    assert guard is not None
    if guard.has("image"):
        raise unsupported_modality("image")
    text = guard.obj("text", required=True)
    assert text is not None
    return text.string("text", required=True) or ""


def _parse_messages(root: Obj, marks: CacheMarks) -> list[Message]:
    entries = root.objs("messages", required=True, non_empty=True)
    messages: list[Message] = []
    seen_tool_ids: set[str] = set()
    for i, entry in enumerate(entries):
        role = entry.string("role", required=True, choices=("user", "assistant"))
        if i == 0 and role != "user":
            raise ValidationError(MUST_START_WITH_USER)
        if messages and messages[-1].role == role:
            raise ValidationError(MUST_ALTERNATE)
        message = Message(role=role)  # type: ignore[arg-type]
        texts: list[str] = []
        for block in entry.objs("content", required=True, non_empty=True):
            if [k for k, v in block.data.items() if v is not None] == ["cachePoint"]:
                _message_cache_point(block, message, texts, marks)
                continue
            _parse_block(block, message, texts, seen_tool_ids)
        message.text = "\n".join(texts)
        seen_tool_ids.update(call.id for call in message.tool_calls)
        messages.append(message)
    return messages


def _message_cache_point(block: Obj, message: Message, texts: list[str], marks: CacheMarks) -> None:
    has_tools = bool(message.tool_calls or message.tool_results)
    marker = cache_point(block, marks, "messages", first=not (texts or has_tools))
    if has_tools:
        # Tool blocks render after the message's text: the point closes the message.
        message.cache_marker += marker
    else:
        texts[-1] += marker


def _parse_block(block: Obj, message: Message, texts: list[str], seen: set[str]) -> None:
    keys = [k for k, v in block.data.items() if v is not None]
    if len(keys) != 1:
        raise block.fail(None, "ContentBlock must set exactly one member")
    kind = keys[0]
    if kind == "text":
        text = block.string("text")
        if not text or not text.strip():
            raise ValidationError(
                f"The text field in the ContentBlock object at {_dotted(block)} is blank. "
                "Add text to the text field, and try again."
            )
        texts.append(text)
    elif kind == "toolUse":
        if message.role != "assistant":
            raise block.fail(kind, "toolUse blocks are only allowed in assistant messages")
        message.tool_calls.append(_parse_tool_use(block.obj(kind, required=True)))
    elif kind == "toolResult":
        if message.role != "user":
            raise block.fail(kind, "toolResult blocks are only allowed in user messages")
        result = _parse_tool_result(block.obj(kind, required=True))
        if result.tool_use_id not in seen:
            raise ValidationError(
                f"The toolResult at {_dotted(block)} references toolUseId "
                f"{result.tool_use_id!r}, which no earlier assistant toolUse block has."
            )
        message.tool_results.append(result)
    elif kind == "guardContent":
        texts.append(_guard_text(block.obj(kind, required=True)))
    elif kind in _MEDIA_BLOCKS:
        raise unsupported_modality(kind)
    elif kind in _IGNORED_BLOCKS:
        return
    else:
        raise block.fail(kind, f"ContentBlock member {kind!r} is not supported")


def _dotted(o: Obj) -> str:
    return ".".join(str(p) for p in o.path)


def _parse_tool_use(o: Obj | None) -> ToolCall:
    assert o is not None
    tool_input = o.value("input", required=True)
    if not isinstance(tool_input, dict):
        raise o.fail("input", "expected a JSON object")
    return ToolCall(
        id=o.string("toolUseId", required=True, non_empty=True) or "",
        name=o.string("name", required=True, non_empty=True) or "",
        input=tool_input,
    )


def _parse_tool_result(o: Obj | None) -> ToolResult:
    assert o is not None
    parts: list[str] = []
    for item in o.objs("content", required=True):
        if item.has("text"):
            parts.append(item.string("text") or "")
        elif "json" in item.data:
            # JSON results travel to the model serialized; templates only take text.
            parts.append(json.dumps(item.data["json"], ensure_ascii=False))
        elif any(item.has(k) for k in _MEDIA_BLOCKS):
            raise unsupported_modality(next(k for k in _MEDIA_BLOCKS if item.has(k)))
        else:
            raise item.fail(None, "ToolResultContentBlock must set exactly one of text, json")
    status = o.string("status", choices=("success", "error"))
    return ToolResult(
        tool_use_id=o.string("toolUseId", required=True, non_empty=True) or "",
        content="\n".join(parts),
        status=status,  # type: ignore[arg-type]
    )


def _parse_inference(root: Obj, *, nova: bool) -> SamplingParams:
    config = root.obj("inferenceConfig")
    if config is None:
        params = SamplingParams()
    elif nova:
        # Nova v1 docs spell these snake_case, Nova 2 docs camelCase; apps use both.
        params = read_sampling(
            config,
            max_tokens="maxTokens" if config.has("maxTokens") else "max_new_tokens",
            top_p="topP" if config.has("topP") else "top_p",
            top_k="topK" if config.has("topK") else "top_k",
            stop="stopSequences",
        )
    else:
        params = read_sampling(config, max_tokens="maxTokens", top_p="topP", stop="stopSequences")
    extra = root.obj("additionalModelRequestFields")
    if extra is not None:
        # Model-native knobs; Bedrock forwards unknown ones to the model, which ignores them.
        for key in ("top_k", "topK"):
            if extra.has(key):
                params.top_k = extra.integer(key, minimum=0)
        if extra.has("seed"):
            params.seed = extra.integer("seed")
    return params


def _parse_tool_config(root: Obj, marks: CacheMarks) -> tuple[list[ToolSpec], ToolChoice | None]:
    config = root.obj("toolConfig")
    if config is None:
        return [], None
    tools: list[ToolSpec] = []
    for entry in config.objs("tools", required=True, non_empty=True):
        spec = entry.obj("toolSpec")
        if spec is None:
            if entry.has("cachePoint"):
                marker = cache_point(entry, marks, "tools", first=not tools)
                tools[-1].cache_marker += marker
                continue
            raise entry.fail(None, "only toolSpec tools are supported by this model")
        name = spec.string("name", required=True) or ""
        if not _TOOL_NAME.match(name):
            raise spec.fail(
                "name", "Member must satisfy regular expression pattern: [a-zA-Z0-9_-]+"
            )
        schema = spec.obj("inputSchema", required=True)
        assert schema is not None
        tools.append(
            ToolSpec(
                name=name,
                description=spec.string("description") or "",
                input_schema=(schema.obj("json", required=True) or schema).data,
            )
        )
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise config.fail("tools", "tool names must be unique")
    return tools, _parse_tool_choice(config, names)


def _parse_tool_choice(config: Obj, names: list[str]) -> ToolChoice | None:
    choice = config.obj("toolChoice")
    if choice is None:
        return None
    if choice.has("auto"):
        return ToolChoice("auto")
    if choice.has("any"):
        return ToolChoice("any")
    tool = choice.obj("tool")
    if tool is None:
        raise choice.fail(None, "ToolChoice must set exactly one of auto, any, tool")
    name = tool.string("name", required=True) or ""
    if name not in names:
        raise tool.fail("name", f"tool {name!r} is not defined in toolConfig.tools")
    return ToolChoice("tool", name)


# -------------------------------------------------------------------------- responses


def content_blocks(result: ChatResult) -> list[dict[str, Any]]:
    """``ContentBlock`` list: text first, then tool calls; no empty text beside tools."""
    blocks: list[dict[str, Any]] = []
    if result.text or not result.tool_calls:
        blocks.append({"text": result.text})
    for call in result.tool_calls:
        blocks.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": call.input}})
    return blocks


def usage_body(usage: Usage) -> dict[str, Any]:
    """``TokenUsage``. With cache points, ``inputTokens`` excludes cache reads and writes
    (and ``totalTokens`` includes them), as Bedrock reports prompt caching."""
    body: dict[str, Any] = {
        "inputTokens": usage.uncached_input_tokens,
        "outputTokens": usage.output_tokens,
        "totalTokens": usage.total_tokens,
    }
    if usage.cache_points:
        body["cacheReadInputTokens"] = usage.cache_read_tokens
        body["cacheWriteInputTokens"] = usage.cache_write_tokens
        body["cacheDetails"] = [{"ttl": t, "inputTokens": n} for t, n in usage.cache_details]
    return body


def converse_response(result: ChatResult) -> dict[str, Any]:
    return {
        "output": {"message": {"role": "assistant", "content": content_blocks(result)}},
        "stopReason": result.stop_reason,
        "usage": usage_body(result.usage),
        "metrics": {"latencyMs": result.latency_ms},
    }


# ----------------------------------------------------------------------------- stream


TOOL_FRAGMENT_CHARS = 32


def stream_message_start() -> StreamEvent:
    return "messageStart", {"role": "assistant"}


def stream_text_delta(index: int, text: str) -> StreamEvent:
    return "contentBlockDelta", {"contentBlockIndex": index, "delta": {"text": text}}


def stream_block_start_tool(index: int, call: ToolCall) -> StreamEvent:
    start = {"toolUse": {"toolUseId": call.id, "name": call.name}}
    return "contentBlockStart", {"contentBlockIndex": index, "start": start}


def stream_tool_delta(index: int, json_fragment: str) -> StreamEvent:
    # Tool input streams as JSON *text* fragments that clients concatenate, then parse.
    return "contentBlockDelta", {
        "contentBlockIndex": index,
        "delta": {"toolUse": {"input": json_fragment}},
    }


def stream_block_stop(index: int) -> StreamEvent:
    return "contentBlockStop", {"contentBlockIndex": index}


def stream_message_stop(stop_reason: str) -> StreamEvent:
    return "messageStop", {"stopReason": stop_reason}


def stream_metadata(usage: Usage, latency_ms: int) -> StreamEvent:
    return "metadata", {"usage": usage_body(usage), "metrics": {"latencyMs": latency_ms}}


def stream_finish(result: ChatResult, *, text_started: bool | None = None) -> list[StreamEvent]:
    """Everything after the last text delta: close the text block, tool blocks, stop, totals.

    ``text_started`` says whether block 0 (text) was opened by deltas; by default it is
    inferred from ``result.text``. Tool blocks follow at the next indices.
    """
    started = bool(result.text) if text_started is None else text_started
    events: list[StreamEvent] = []
    index = 0
    if started:
        events.append(stream_block_stop(0))
        index = 1
    for call in result.tool_calls:
        events.append(stream_block_start_tool(index, call))
        # Clients concatenate toolUse input fragments and parse at contentBlockStop.
        raw = json.dumps(call.input, ensure_ascii=False)
        for start in range(0, len(raw), TOOL_FRAGMENT_CHARS):
            events.append(stream_tool_delta(index, raw[start : start + TOOL_FRAGMENT_CHARS]))
        events.append(stream_block_stop(index))
        index += 1
    events.append(stream_message_stop(result.stop_reason))
    events.append(stream_metadata(result.usage, result.latency_ms))
    return events


__all__ = [
    "StreamEvent",
    "content_blocks",
    "converse_response",
    "parse_converse",
    "parse_converse_like",
    "stream_block_start_tool",
    "stream_block_stop",
    "stream_finish",
    "stream_message_start",
    "stream_message_stop",
    "stream_metadata",
    "stream_text_delta",
    "stream_tool_delta",
    "unsupported_modality",
    "usage_body",
]
