"""OpenAI's API under ``/v1``: chat completions, completions, models, embeddings.

Same port, same keys (``Authorization: Bearer <OUTCROP_API_KEY>``; SigV4 works too), same
models and aliases as the Bedrock side. Bodies are translated by
``outcrop.service.openai_compat``; this module frames them (JSON, server-sent events)
and renders errors in OpenAI's shape, which the router declares for everything under
``/v1``::

    from openai import OpenAI

    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="...")
    client.chat.completions.create(model="huggingface.smollm2-135m-instruct-v1:0", ...)
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from starlette.responses import Response, StreamingResponse

from outcrop.api.app import Call, until_disconnect
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.errors import (
    AccessDeniedError,
    InternalServerError,
    ModelError,
    ModelNotReadyError,
    OutcropError,
    ResourceNotFoundError,
    SignatureMismatchError,
    ThrottlingError,
    UnknownOperationError,
    UnrecognizedClientError,
    ValidationError,
)
from outcrop.models.catalog import Catalog, ModelCard
from outcrop.models.resolve import ModelResolver
from outcrop.service.embeddings import EmbeddingService
from outcrop.service.openai_compat import (
    ChatCall,
    Envelope,
    chat_completion,
    chat_stream_end,
    chat_stream_start,
    chat_stream_text,
    completion,
    completion_chunk,
    completion_stream_end,
    embeddings_body,
    model_object,
    parse_chat_completion,
    parse_completion,
    parse_embeddings,
)
from outcrop.service.runtime import Prepared, RuntimeService
from outcrop.service.types import TextDelta

log = logging.getLogger("outcrop.api")

PREFIX = "/v1"
DONE = b"data: [DONE]\n\n"


# ----------------------------------------------------------------------------- errors

_AUTH_ERRORS = (AccessDeniedError, UnrecognizedClientError, SignatureMismatchError)
# The messages of ``outcrop.service.fields`` name the field as a JSON pointer.
_NATIVE = re.compile(
    r"^Malformed input request: #(?P<path>/[^:]*)?: (?P<problem>.*?)"
    r"(?:, please reformat your input and try again\.)?$",
    re.DOTALL,
)
_REQUIRED = re.compile(r"^required key \[(?P<key>[^\]]+)\] not found$")


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """``(status, {"error": {message, type, param, code}})`` for any exception."""
    if not isinstance(exc, OutcropError):
        log.error("unhandled error on %s", PREFIX, exc_info=exc)
        exc = InternalServerError("The server encountered an internal error.")
    status, message = exc.status, exc.message
    kind, code, param = "invalid_request_error", None, None
    if isinstance(exc, _AUTH_ERRORS):
        status, code = 401, "invalid_api_key"
    elif isinstance(exc, ResourceNotFoundError):
        code = "model_not_found"
    elif isinstance(exc, UnknownOperationError):
        code = "unknown_url"
    elif isinstance(exc, ThrottlingError | ModelNotReadyError):
        kind, code = "requests", "rate_limit_exceeded"
    elif isinstance(exc, ModelError):
        status, kind = 500, "server_error"
    elif isinstance(exc, ValidationError):
        param, message = _param(message)
    elif status >= 500:
        kind = "server_error"
    body = {"message": message, "type": kind, "param": param, "code": code}
    return status, {"error": body}


def _param(message: str) -> tuple[str | None, str]:
    """``#/messages/0/content: problem`` → ``("messages[0].content", "Invalid value ...")``."""
    found = _NATIVE.match(message)
    if not found:
        return None, message
    parts = [p for p in (found["path"] or "").split("/") if p]
    problem = found["problem"]
    required = _REQUIRED.match(problem)
    if required:
        parts.append(required["key"])
    param = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts).lstrip(".") or None
    if required:
        return param, f"Missing required parameter: '{param}'."
    if param is None:
        return None, f"Invalid request: {problem}."
    return param, f"Invalid value for '{param}': {problem}."


def error_response(exc: OutcropError, request_id: str) -> Response:
    status, body = error_body(exc)
    return json_response(body, request_id, status, headers={"x-request-id": request_id})


# -------------------------------------------------------------------------------- API


class OpenAiApi:
    def __init__(
        self,
        service: RuntimeService,
        resolver: ModelResolver,
        catalog: Catalog,
        embeddings: EmbeddingService | None = None,
    ) -> None:
        self.service = service
        self.resolver = resolver
        self.catalog = catalog
        self.embeddings = embeddings
        self.created = int(time.time())

    def register(self, router: Router) -> None:
        router.errors_under(PREFIX, error_response)
        router.add("POST", "/v1/chat/completions", self.chat_completions, "OpenAIChatCompletions")
        router.add("POST", "/v1/completions", self.completions, "OpenAICompletions")
        router.add("GET", "/v1/models", self.list_models, "OpenAIListModels")
        router.add("GET", "/v1/models/{model}", self.get_model, "OpenAIRetrieveModel")
        router.add("POST", "/v1/embeddings", self.create_embeddings, "OpenAIEmbeddings")

    # -- chat and completions -----------------------------------------------------------
    async def chat_completions(self, call: Call) -> Response:
        parsed = parse_chat_completion(call.json())
        prepared = await self._prepare(parsed)
        env = Envelope.chat(parsed.model)
        if parsed.stream:
            first = chat_stream_start(env, usage=parsed.include_usage)
            chunks = self._chunks(
                prepared, env, parsed.include_usage, chat_stream_text, chat_stream_end, first
            )
            return sse_response(chunks, prepared, call)
        result = await until_disconnect(call.request, self.service.complete(prepared))
        return _json(chat_completion(result, env), call)

    async def completions(self, call: Call) -> Response:
        parsed = parse_completion(call.json())
        prepared = await self._prepare(parsed)
        env = Envelope.completion(parsed.model)
        if parsed.stream:
            chunks = self._chunks(
                prepared, env, parsed.include_usage, completion_chunk, completion_stream_end
            )
            return sse_response(chunks, prepared, call)
        result = await until_disconnect(call.request, self.service.complete(prepared))
        return _json(completion(result, env), call)

    async def _chunks(
        self,
        prepared: Prepared,
        env: Envelope,
        usage: bool,
        text_chunk: Callable[..., dict[str, Any]],
        end_chunks: Callable[..., list[dict[str, Any]]],
        first: dict[str, Any] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """A stream's SSE payloads: an optional opening chunk, one per text delta, the end."""
        if first is not None:
            yield first
        async for event in self.service.stream(prepared):
            if isinstance(event, TextDelta):
                yield text_chunk(env, event.text, usage=usage)
            else:
                for chunk in end_chunks(event.result, env, usage=usage):
                    yield chunk

    async def _prepare(self, parsed: ChatCall) -> Prepared:
        self._card(parsed.model)  # an unknown model is OpenAI's 404, not a 400
        return await self.service.prepare(parsed.model, parsed.request)

    # -- models -------------------------------------------------------------------------
    async def list_models(self, call: Call) -> Response:
        data = [model_object(c.model_id, self.created, c.provider) for c in self.catalog.all()]
        for pattern, target in self.resolver.aliases:
            card = self.catalog.get(target)
            if card is not None and not any(ch in pattern for ch in "*?["):
                data.append(model_object(pattern, self.created, card.provider))
        return _json({"object": "list", "data": data}, call)

    async def get_model(self, call: Call) -> Response:
        model = call.labels["model"]
        card = self._card(model)
        return _json(model_object(model, self.created, card.provider), call)

    def _card(self, model: str) -> ModelCard:
        try:
            return self.resolver.resolve(model).card
        except (ValidationError, ResourceNotFoundError):
            raise ResourceNotFoundError(
                f"The model `{model}` does not exist or you do not have access to it."
            ) from None

    # -- embeddings ---------------------------------------------------------------------
    async def create_embeddings(self, call: Call) -> Response:
        parsed = parse_embeddings(call.json())
        self._card(parsed.model)  # an unknown model is OpenAI's 404, not a 400
        if self.embeddings is None:
            raise UnknownOperationError("Embeddings are not available on this server.")
        result = await until_disconnect(
            call.request,
            self.embeddings.embed(
                parsed.model, parsed.texts, normalize=True, dimensions=parsed.dimensions
            ),
        )
        body = embeddings_body(
            result.vectors, parsed.model, result.input_tokens, parsed.encoding_format
        )
        return _json(body, call)


# ----------------------------------------------------------------------------- framing


def _json(body: dict[str, Any], call: Call) -> Response:
    return json_response(body, call.request_id, headers={"x-request-id": call.request_id})


def _data(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n\n"


def sse_response(
    chunks: AsyncGenerator[dict[str, Any], None], prepared: Prepared, call: Call
) -> StreamingResponse:
    """Server-sent events: one ``data:`` line per chunk, then ``data: [DONE]``.

    An error after the stream has started is one ``data: {"error": ...}`` event, and the
    stream ends there. When the client goes away the generator is cancelled or closed;
    either way the engine iterator is closed too, which frees the sequence at once.
    """

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for chunk in chunks:
                yield _data(chunk)
            yield DONE
        except Exception as exc:
            yield _data(error_body(exc)[1])
        finally:
            await chunks.aclose()
            with contextlib.suppress(RuntimeError):  # already running: cancellation ends it
                await prepared.events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={
            "x-amzn-RequestId": call.request_id,
            "x-request-id": call.request_id,
            "cache-control": "no-cache",
        },
    )


__all__ = ["OpenAiApi", "error_body", "error_response", "sse_response"]
