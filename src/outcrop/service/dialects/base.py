"""The contract every InvokeModel body dialect fulfils.

A dialect knows one model family's native JSON: how its request maps onto a neutral
``ChatRequest`` and how a ``ChatResult`` (or a stream of text) maps back onto that
family's response body and stream chunks. It knows nothing of HTTP or engines.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from outcrop.service.converse import unsupported_modality
from outcrop.service.fields import Obj
from outcrop.service.types import ChatRequest, ChatResult


@dataclass
class InvokeContext:
    """Facts about one invocation that response bodies echo back."""

    request_id: str
    model_id: str  # the ID exactly as the client sent it (after URL decoding)
    input_tokens: int = 0


class Dialect(ABC):
    """One model family's native InvokeModel body."""

    name: str = ""

    @abstractmethod
    def parse(self, body: dict[str, Any]) -> ChatRequest:
        """Translate a native request body. Raises ``outcrop.errors.ValidationError``."""

    @abstractmethod
    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        """The native InvokeModel response body."""

    def stream_start(self, ctx: InvokeContext) -> list[dict[str, Any]]:
        """Chunks sent before the first text delta (may be empty)."""
        return []

    @abstractmethod
    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        """Chunks carrying one piece of generated text."""

    @abstractmethod
    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        """Closing chunks. The caller adds ``amazon-bedrock-invocationMetrics`` to the last."""


def text_parts(o: Obj, key: str, media: dict[str, str], noun: str) -> str:
    """A string, or a list of ``{type: "text", text}`` parts joined by newlines.

    ``media`` maps the family's non-text part types to the modality named in the error
    (this server's models read text only); ``noun`` names a part in other errors.
    """
    value = o.value(key)
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    texts: list[str] = []
    for part in o.objs(key):
        kind = part.string("type", required=True)
        if kind == "text":
            texts.append(part.string("text", required=True) or "")
        elif kind in media:
            raise unsupported_modality(media[kind])
        else:
            raise part.fail("type", f"unsupported {noun} type {kind!r}")
    return "\n".join(texts)
