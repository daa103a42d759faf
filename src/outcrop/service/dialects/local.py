"""Our own models (``huggingface.*``, ``google.*``, custom IDs): OpenAI-style bodies.

``messages`` → chat completions (shared with ``ai21``); otherwise ``prompt`` → a raw text
completion, continued without any chat template.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from outcrop.service.dialects.ai21 import ChatCompletionsDialect, chat_usage, finish_reason
from outcrop.service.dialects.base import InvokeContext
from outcrop.service.fields import Obj, read_sampling
from outcrop.service.types import ChatRequest, ChatResult


class LocalDialect(ChatCompletionsDialect):
    name = "local"
    temperature_max = 2.0

    def __init__(self) -> None:
        super().__init__()
        self.completion = False
        self.created = int(time.time())

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        if isinstance(body, dict) and "messages" not in body and "prompt" in body:
            self.completion = True
            self.id = f"cmpl-{uuid.uuid4().hex}"
            root = Obj.of(body)
            sampling = read_sampling(
                root, max_tokens="max_tokens", temperature_max=self.temperature_max,
                top_p="top_p", top_k="top_k", seed="seed", stop="stop", stop_single=True,
            )  # fmt: skip
            prompt = root.string("prompt", required=True, non_empty=True)
            return ChatRequest(prompt=prompt, sampling=sampling)
        return super().parse(body)

    def envelope(self, ctx: InvokeContext, obj: str) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": ctx.model_id}

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        if not self.completion:
            return super().response(result, ctx)
        choice = {
            "index": 0,
            "text": result.text,
            "finish_reason": finish_reason(result.stop_reason),
        }
        return {
            **self.envelope(ctx, "text_completion"),
            "choices": [choice],
            "usage": chat_usage(result.usage),
        }

    def _text_chunk(self, ctx: InvokeContext, text: str, finish: str | None) -> dict[str, Any]:
        choice = {"index": 0, "text": text, "finish_reason": finish}
        return {**self.envelope(ctx, "text_completion"), "choices": [choice]}

    def stream_start(self, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [] if self.completion else super().stream_start(ctx)

    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        if self.completion:
            return [self._text_chunk(ctx, text, None)]
        return super().stream_delta(text, ctx)

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        if not self.completion:
            return super().stream_end(result, ctx)
        last = self._text_chunk(ctx, "", finish_reason(result.stop_reason))
        last["usage"] = chat_usage(result.usage)
        return [last]
