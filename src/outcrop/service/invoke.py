"""InvokeModel from a parsed JSON body to Bedrock's response body: one path for the HTTP
handler, batch inference records and async invokes.

The body follows the model ID as sent (each family's native body; Titan v2 or Cohere
for embedding IDs). ``background`` puts generation in the engine's background class.
A Converse body (batch jobs with ``modelInvocationType: Converse``) takes the same path.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from outcrop.service.converse import converse_response, parse_converse
from outcrop.service.dialects import dialect_for
from outcrop.service.dialects.base import InvokeContext
from outcrop.service.embed_dialects import embed_dialect_for
from outcrop.service.embeddings import EmbeddingService
from outcrop.service.guarded import GuardSession, invoke_input_blocks
from outcrop.service.runtime import RuntimeService
from outcrop.service.types import Usage


@dataclass
class Invocation:
    body: dict[str, Any]
    input_tokens: int
    output_tokens: int
    latency_ms: int
    first_token_ms: int | None = None
    usage: Usage | None = None
    """A text model's usage (cache reads and writes included); None for embeddings."""


class InvokeService:
    def __init__(self, runtime: RuntimeService, embeddings: EmbeddingService | None) -> None:
        self.runtime = runtime
        self.embeddings = embeddings

    def is_embedding(self, model_id: str) -> bool:
        return self.embeddings is not None and self.embeddings.is_embedding_model(model_id)

    async def invoke(
        self,
        model_id: str,
        body: dict[str, Any],
        request_id: str,
        *,
        background: bool = False,
        guard: GuardSession | None = None,
        tag_suffix: str | None = None,
    ) -> Invocation:
        """``guard``: a guardrail around the call (InvokeModel's guardrail headers); a blocked
        input is answered with its message in the family's native body, no model call."""
        if self.is_embedding(model_id):
            return await self._embed(model_id, body, request_id)
        resolved = self.runtime.resolve(model_id)
        dialect = dialect_for(resolved.dialect_id)
        request = dialect.parse(body)
        if guard is not None:
            if await guard.screen(request, invoke_input_blocks(request, tag_suffix)):
                result = guard.blocked_input_result()
                result.stop_reason = "end_turn"  # native bodies have no guardrail reason
                out = dialect.response(result, InvokeContext(request_id, model_id, 0))
                return Invocation({**out, **guard.invoke_keys()}, 0, 0, 0)
        prepared = await self.runtime.prepare(resolved, request, background=background)
        result = await self.runtime.complete(prepared)
        if guard is not None:
            result = await guard.guard_result(result)
            if result.stop_reason == "guardrail_intervened":
                result.stop_reason = "end_turn"
        ctx = InvokeContext(request_id, model_id, prepared.input_tokens)
        out = dialect.response(result, ctx)
        if guard is not None:
            out.update(guard.invoke_keys())
        return Invocation(
            out,
            result.usage.input_tokens,
            result.usage.output_tokens,
            result.latency_ms,
            result.first_token_ms,
            result.usage,
        )

    async def converse(
        self, model_id: str, body: dict[str, Any], *, background: bool = False
    ) -> Invocation:
        prepared = await self.runtime.prepare(model_id, parse_converse(body), background=background)
        result = await self.runtime.complete(prepared)
        return Invocation(
            converse_response(result),
            result.usage.input_tokens,
            result.usage.output_tokens,
            result.latency_ms,
            result.first_token_ms,
        )

    async def _embed(self, model_id: str, body: dict[str, Any], request_id: str) -> Invocation:
        assert self.embeddings is not None
        started = time.perf_counter()
        dialect = embed_dialect_for(model_id)
        card = self.embeddings.card(model_id)
        request = dialect.parse(body, model_dimensions=card.embedding_dimensions or 0)
        result = await self.embeddings.embed(
            model_id,
            request.texts,
            normalize=request.normalize,
            dimensions=request.dimensions,
            truncate=request.truncate,
        )
        ctx = InvokeContext(request_id, model_id, result.input_tokens)
        return Invocation(
            dialect.response(request, result, ctx),
            result.input_tokens,
            0,
            int((time.perf_counter() - started) * 1000),
        )
