"""bedrock-runtime operations on the wire: Converse(Stream), InvokeModel(WithResponseStream),
CountTokens. Parsing and meaning live in ``outcrop.service``; this module only frames.
"""

from __future__ import annotations

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
from outcrop.service.invoke import InvokeService
from outcrop.service.runtime import Prepared, RuntimeService
from outcrop.service.types import ChatResult, TextDelta

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


def _invocation_metrics(result: ChatResult) -> dict[str, int]:
    return {
        "inputTokenCount": result.usage.input_tokens,
        "outputTokenCount": result.usage.output_tokens,
        "invocationLatency": result.latency_ms,
        "firstByteLatency": result.first_token_ms,
    }


class RuntimeApi:
    def __init__(
        self,
        service: RuntimeService,
        embeddings: EmbeddingService | None = None,
        invoker: InvokeService | None = None,
    ) -> None:
        self.service = service
        self.embeddings = embeddings
        self.invoker = invoker or InvokeService(service, embeddings)

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

    # -- Converse ---------------------------------------------------------------------
    async def converse(self, call: Call) -> Response:
        request = parse_converse(call.json())
        prepared = await self.service.prepare(call.labels["modelId"], request)
        result = await until_disconnect(call.request, self.service.complete(prepared))
        return json_response(converse_response(result), call.request_id)

    async def converse_stream(self, call: Call) -> Response:
        request = parse_converse(call.json())
        prepared = await self.service.prepare(call.labels["modelId"], request)
        return StreamingResponse(
            self._converse_frames(prepared),
            media_type=CONTENT_TYPE,
            headers={"x-amzn-RequestId": call.request_id},
        )

    async def _converse_frames(self, prepared: Prepared) -> AsyncIterator[bytes]:
        yield event_frame(*stream_message_start())
        text_started = False
        try:
            async for event in self.service.stream(prepared):
                if isinstance(event, TextDelta):
                    text_started = True
                    yield event_frame(*stream_text_delta(0, event.text))
                else:
                    for frame in stream_finish(event.result, text_started=text_started):
                        yield event_frame(*frame)
        except Exception as exc:
            yield _stream_error(exc, _CONVERSE_STREAM_SHAPES)

    # -- InvokeModel ------------------------------------------------------------------
    async def invoke(self, call: Call) -> Response:
        done = await until_disconnect(
            call.request, self.invoker.invoke(call.labels["modelId"], call.json(), call.request_id)
        )
        headers = {
            "X-Amzn-Bedrock-Input-Token-Count": str(done.input_tokens),
            "X-Amzn-Bedrock-Invocation-Latency": str(done.latency_ms),
        }
        if not self.invoker.is_embedding(call.labels["modelId"]):
            headers["X-Amzn-Bedrock-Output-Token-Count"] = str(done.output_tokens)
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
        request = dialect.parse(call.json())
        prepared = await self.service.prepare(resolved, request)
        ctx = InvokeContext(call.request_id, model_id, prepared.input_tokens)

        async def frames() -> AsyncIterator[bytes]:
            try:
                for chunk in dialect.stream_start(ctx):
                    yield chunk_frame(chunk)
                async for event in self.service.stream(prepared):
                    if isinstance(event, TextDelta):
                        for chunk in dialect.stream_delta(event.text, ctx):
                            yield chunk_frame(chunk)
                    else:
                        closing = dialect.stream_end(event.result, ctx)
                        if closing:
                            closing[-1] = {
                                **closing[-1],
                                "amazon-bedrock-invocationMetrics": _invocation_metrics(
                                    event.result
                                ),
                            }
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


def _invoke_body(invoke: Any) -> dict[str, Any]:
    if not isinstance(invoke, dict) or not isinstance(invoke.get("body"), str):
        raise ValidationError("input.invokeModel.body must be a base64-encoded JSON body.")
    try:
        value = json.loads(base64.b64decode(invoke["body"], validate=True))
    except (binascii.Error, ValueError) as exc:
        raise ValidationError(f"input.invokeModel.body is not base64-encoded JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValidationError("input.invokeModel.body must encode a JSON object.")
    return value
