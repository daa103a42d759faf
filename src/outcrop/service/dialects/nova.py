"""Amazon Nova: a Converse-shaped native body; stream chunks are Converse event objects."""

from __future__ import annotations

from typing import Any

from outcrop.service.converse import (
    content_blocks,
    parse_converse_like,
    stream_finish,
    stream_message_start,
    stream_text_delta,
    usage_body,
)
from outcrop.service.dialects.base import Dialect, InvokeContext
from outcrop.service.types import ChatRequest, ChatResult


class NovaDialect(Dialect):
    name = "amazon-nova"

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        return parse_converse_like(body)

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        return {
            "output": {"message": {"role": "assistant", "content": content_blocks(result)}},
            "stopReason": result.stop_reason,
            "usage": usage_body(result.usage),
        }

    # Same events as ConverseStream, each wrapped as {event_type: payload} in one chunk.
    def stream_start(self, ctx: InvokeContext) -> list[dict[str, Any]]:
        kind, payload = stream_message_start()
        return [{kind: payload}]

    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        kind, payload = stream_text_delta(0, text)
        return [{kind: payload}]

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [{kind: payload} for kind, payload in stream_finish(result)]
