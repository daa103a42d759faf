"""bedrock-runtime operations on the wire: Converse(Stream), InvokeModel(WithResponseStream),
CountTokens. Parsing and meaning live in ``outcrop.service``; this module only frames.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import Response, StreamingResponse

from outcrop.api.app import Call, until_disconnect
from outcrop.api.eventstream import CONTENT_TYPE, chunk_frame, event_frame, exception_frame
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.errors import OutcropError, ValidationError
from outcrop.service.converse import (
    converse_response,
    parse_converse,
    stream_finish,
    stream_message_start,
    stream_text_delta,
)
from outcrop.service.dialects import dialect_for
from outcrop.service.dialects.base import InvokeContext
from outcrop.service.embeddings import EmbeddingService
from outcrop.service.guarded import (
    GuardSession,
    converse_guard_config,
    converse_input_blocks,
    invoke_guard_headers,
    invoke_input_blocks,
)
from outcrop.service.guardrails import GuardrailService
from outcrop.service.invoke import InvokeService
from outcrop.service.runtime import RuntimeService
from outcrop.service.types import (
    ChatRequest,
    ChatResult,
    StreamEnd,
    StreamEvent,
    TextDelta,
    Usage,
)

log = logging.getLogger("outcrop.api")

# ConverseStream's union has no modelTimeoutException member; botocore would show an
# empty error for it, so such errors travel as modelStreamErrorException there.
_CONVERSE_STREAM_SHAPES = {
    "internalServerException",
    "modelStreamErrorException",
    "validationException",
    "throttlingException",
    "serviceUnavailableException",
}


def _stream_error(exc: BaseException, allowed: set[str] | None = None) -> bytes:
    if isinstance(exc, OutcropError):
        shape, message = exc.stream_shape, exc.message
    else:
        log.exception("stream failed", exc_info=exc)
        shape, message = "internalServerException", "The server encountered an internal error."
    if allowed is not None and shape not in allowed:
        shape = "modelStreamErrorException"
    return exception_frame(shape, message)


def _invocation_headers(usage: Usage, latency_ms: int) -> dict[str, str]:
    headers = {
        "X-Amzn-Bedrock-Input-Token-Count": str(usage.uncached_input_tokens),
        "X-Amzn-Bedrock-Output-Token-Count": str(usage.output_tokens),
        "X-Amzn-Bedrock-Invocation-Latency": str(latency_ms),
    }
    if usage.cache_points:
        headers["X-Amzn-Bedrock-Cache-Read-Input-Token-Count"] = str(usage.cache_read_tokens)
        headers["X-Amzn-Bedrock-Cache-Write-Input-Token-Count"] = str(usage.cache_write_tokens)
    return headers


def _invocation_metrics(result: ChatResult) -> dict[str, int]:
    usage = result.usage
    metrics = {
        "inputTokenCount": usage.uncached_input_tokens,
        "outputTokenCount": usage.output_tokens,
        "invocationLatency": result.latency_ms,
        "firstByteLatency": result.first_token_ms,
    }
    if usage.cache_points:
        metrics["cacheReadInputTokenCount"] = usage.cache_read_tokens
        metrics["cacheWriteInputTokenCount"] = usage.cache_write_tokens
    return metrics


class RuntimeApi:
    def __init__(
        self,
        service: RuntimeService,
        embeddings: EmbeddingService | None = None,
        invoker: InvokeService | None = None,
        guardrails: GuardrailService | None = None,
    ) -> None:
        self.service = service
        self.embeddings = embeddings
        self.invoker = invoker or InvokeService(service, embeddings)
        self.guardrails = guardrails

    def register(self, router: Router) -> None:
        router.add("POST", "/model/{modelId}/converse", self.converse, "Converse")
        router.add(
            "POST", "/model/{modelId}/converse-stream", self.converse_stream, "ConverseStream"
        )
        router.add("POST", "/model/{modelId}/invoke", self.invoke, "InvokeModel")
        router.add(
            "POST",
            "/model/{modelId}/invoke-with-response-stream",
            self.invoke_stream,
            "InvokeModelWithResponseStream",
        )
        router.add("POST", "/model/{modelId}/count-tokens", self.count_tokens, "CountTokens")

    # -- guardrails -------------------------------------------------------------------
    async def _guard(self, found: tuple[str, ...] | None) -> GuardSession | None:
        if found is None:
            return None
        if self.guardrails is None:
            raise ValidationError("Guardrails are not available on this server.")
        identifier, version, trace, mode = found[:4]
        guardrail = await asyncio.to_thread(self.guardrails.resolve, identifier, version)
        return GuardSession(self.guardrails, guardrail, trace, mode)

    async def _guard_input(
        self, guard: GuardSession | None, model_id: str, request: ChatRequest, blocks
    ) -> bool:
        """Check the input; True when it is blocked (the model is then never called)."""
        if guard is None:
            return False
        self.service.resolver.resolve(model_id)  # an unknown model is still an error
        return await guard.screen(request, blocks)

    # -- Converse ---------------------------------------------------------------------
    async def converse(self, call: Call) -> Response:
        body = call.json()
        request = parse_converse(body)
        guard = await self._guard(converse_guard_config(body, stream=False))
        model_id = call.labels["modelId"]
        if await self._guard_input(guard, model_id, request, converse_input_blocks(body)):
            assert guard is not None
            result = guard.blocked_input_result()
        else:
            prepared = await self.service.prepare(model_id, request)
            result = await until_disconnect(call.request, self.service.complete(prepared))
            if guard is not None:
                result = await guard.guard_result(result)
        out = converse_response(result)
        if guard is not None and (trace := guard.converse_trace()) is not None:
            out["trace"] = trace
        return json_response(out, call.request_id)

    async def converse_stream(self, call: Call) -> Response:
        body = call.json()
        request = parse_converse(body)
        guard = await self._guard(converse_guard_config(body, stream=True))
        model_id = call.labels["modelId"]
        if await self._guard_input(guard, model_id, request, converse_input_blocks(body)):
            assert guard is not None
            events = _blocked_events(guard.blocked_input_result())
        else:
            prepared = await self.service.prepare(model_id, request)
            events = self.service.stream(prepared)
            if guard is not None:
                events = guard.guard_stream(events, prepared.events.aclose, prepared.input_tokens)
        return StreamingResponse(
            self._converse_frames(events, guard),
            media_type=CONTENT_TYPE,
            headers={"x-amzn-RequestId": call.request_id},
        )

    async def _converse_frames(
        self, events: AsyncIterator[StreamEvent], guard: GuardSession | None = None
    ) -> AsyncIterator[bytes]:
        yield event_frame(*stream_message_start())
        text_started = False
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    text_started = True
                    yield event_frame(*stream_text_delta(0, event.text))
                else:
                    frames = stream_finish(event.result, text_started=text_started)
                    trace = guard.converse_trace() if guard is not None else None
                    if trace is not None:
                        frames[-1][1]["trace"] = trace  # the metadata event carries it
                    for frame in frames:
                        yield event_frame(*frame)
        except Exception as exc:
            yield _stream_error(exc, _CONVERSE_STREAM_SHAPES)

    # -- InvokeModel ------------------------------------------------------------------
    async def invoke(self, call: Call) -> Response:
        model_id = call.labels["modelId"]
        body = call.json()
        found = invoke_guard_headers(call.request.headers, body)
        guard = await self._guard(found)
        done = await until_disconnect(
            call.request,
            self.invoker.invoke(
                model_id, body, call.request_id, guard=guard, tag_suffix=found[4] if found else None
            ),
        )
        if done.usage is not None:
            headers = _invocation_headers(done.usage, done.latency_ms)
        else:  # an embedding model: no output tokens
            headers = {
                "X-Amzn-Bedrock-Input-Token-Count": str(done.input_tokens),
                "X-Amzn-Bedrock-Invocation-Latency": str(done.latency_ms),
            }
        return json_response(done.body, call.request_id, headers=headers)

    async def invoke_stream(self, call: Call) -> Response:
        model_id = call.labels["modelId"]
        if self._is_embedding(model_id):
            raise ValidationError(
                f"Model {model_id} does not support streaming: it is an embedding model; "
                "use InvokeModel."
            )
        resolved = self.service.resolve(model_id)
        dialect = dialect_for(resolved.dialect_id)
        body = call.json()
        found = invoke_guard_headers(call.request.headers, body)
        guard = await self._guard(found)
        request = dialect.parse(body)
        blocks = invoke_input_blocks(request, found[4]) if found else []
        events: AsyncIterator[StreamEvent]
        if await self._guard_input(guard, model_id, request, blocks):
            assert guard is not None
            blocked = guard.blocked_input_result()
            blocked.stop_reason = "end_turn"
            events = _blocked_events(blocked)
            ctx = InvokeContext(call.request_id, model_id, 0)
        else:
            prepared = await self.service.prepare(resolved, request)
            ctx = InvokeContext(call.request_id, model_id, prepared.input_tokens)
            events = self.service.stream(prepared)
            if guard is not None:
                events = guard.guard_stream(events, prepared.events.aclose, prepared.input_tokens)

        async def frames() -> AsyncIterator[bytes]:
            try:
                for chunk in dialect.stream_start(ctx):
                    yield chunk_frame(chunk)
                async for event in events:
                    if isinstance(event, TextDelta):
                        for chunk in dialect.stream_delta(event.text, ctx):
                            yield chunk_frame(chunk)
                    else:
                        if event.result.stop_reason == "guardrail_intervened":
                            event.result.stop_reason = "end_turn"
                        closing = dialect.stream_end(event.result, ctx)
                        if closing:
                            closing[-1] = {
                                **closing[-1],
                                "amazon-bedrock-invocationMetrics": _invocation_metrics(
                                    event.result
                                ),
                            }
                            if guard is not None:
                                closing[-1].update(guard.invoke_keys())
                        for chunk in closing:
                            yield chunk_frame(chunk)
            except Exception as exc:
                yield _stream_error(exc)

        return StreamingResponse(
            frames(),
            media_type=CONTENT_TYPE,
            headers={
                "x-amzn-RequestId": call.request_id,
                "X-Amzn-Bedrock-Content-Type": "application/json",
            },
        )

    def _is_embedding(self, model_id: str) -> bool:
        return self.invoker.is_embedding(model_id)

    # -- CountTokens ------------------------------------------------------------------
    async def count_tokens(self, call: Call) -> Response:
        model_id = call.labels["modelId"]
        body = call.json()
        source = body.get("input")
        if not isinstance(source, dict) or len(source) != 1:
            raise ValidationError("input must hold exactly one of invokeModel or converse.")
        if "converse" in source:
            converse = source["converse"]
            if not isinstance(converse, dict):
                raise ValidationError("input.converse must be an object.")
            request = parse_converse(converse)
            resolved = self.service.resolve(model_id)
        elif "invokeModel" in source:
            body = _invoke_body(source["invokeModel"])
            resolved = self.service.resolve(model_id)
            request = dialect_for(resolved.dialect_id).parse(body)
        else:
            raise ValidationError("input must hold exactly one of invokeModel or converse.")
        n = await self.service.count_tokens(resolved, request)
        return json_response({"inputTokens": n}, call.request_id)


async def _blocked_events(result: ChatResult) -> AsyncIterator[StreamEvent]:
    """The stream of a blocked input: the blocked message, then the end (no generation)."""
    yield TextDelta(result.text)
    yield StreamEnd(result)


def _invoke_body(invoke: Any) -> dict[str, Any]:
    if not isinstance(invoke, dict) or not isinstance(invoke.get("body"), str):
        raise ValidationError("input.invokeModel.body must be a base64-encoded JSON body.")
    try:
        value = json.loads(base64.b64decode(invoke["body"], validate=True))
    except (binascii.Error, ValueError, RecursionError) as exc:
        raise ValidationError(f"input.invokeModel.body is not base64-encoded JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValidationError("input.invokeModel.body must encode a JSON object.")
    return value
