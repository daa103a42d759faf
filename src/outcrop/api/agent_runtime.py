"""bedrock-agent-runtime on the wire: Retrieve, RetrieveAndGenerate(Stream).

Meaning lives in :mod:`outcrop.service.kb_runtime`; this module frames. Errors take their
HTTP status from bedrock-agent-runtime's model (:data:`RUNTIME_STATUS`); once a stream
has started they travel as exception frames named as its union's members.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.responses import Response, StreamingResponse

from outcrop.api.app import Call, until_disconnect
from outcrop.api.eventstream import CONTENT_TYPE, event_frame, exception_frame
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.errors import OutcropError, with_service_status
from outcrop.service.kb_runtime import KnowledgeRuntime, RagPlan

log = logging.getLogger("outcrop.api")

#: botocore bedrock-agent-runtime: Conflict 409, ServiceQuotaExceeded 400, ModelNotReady 424.
RUNTIME_STATUS = {
    "ConflictException": 409,
    "ServiceQuotaExceededException": 400,
    "ModelNotReadyException": 424,
}
#: RetrieveAndGenerateStreamResponseOutput's exception members.
_STREAM_SHAPES = {
    "accessDeniedException", "badGatewayException", "conflictException",
    "dependencyFailedException", "internalServerException", "resourceNotFoundException",
    "serviceQuotaExceededException", "throttlingException", "validationException",
}  # fmt: skip
SESSION_HEADER = "x-amzn-bedrock-knowledge-base-session-id"


def runtime_errors(
    handler: Callable[[Any, Call], Awaitable[Response]],
) -> Callable[[Any, Call], Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapped(self: Any, call: Call) -> Response:
        try:
            return await handler(self, call)
        except OutcropError as exc:
            raise with_service_status(exc, RUNTIME_STATUS) from None

    return wrapped


class AgentRuntimeApi:
    def __init__(self, service: KnowledgeRuntime) -> None:
        self.service = service

    def register(self, router: Router) -> None:
        router.add("POST", "/knowledgebases/{knowledgeBaseId}/retrieve", self.retrieve, "Retrieve")
        router.add(
            "POST", "/retrieveAndGenerate", self.retrieve_and_generate, "RetrieveAndGenerate"
        )
        router.add(
            "POST", "/retrieveAndGenerateStream", self.retrieve_and_generate_stream,
            "RetrieveAndGenerateStream",
        )  # fmt: skip

    @runtime_errors
    async def retrieve(self, call: Call) -> Response:
        out = await self.service.retrieve(call.labels["knowledgeBaseId"], call.json())
        return json_response(out, call.request_id)

    @runtime_errors
    async def retrieve_and_generate(self, call: Call) -> Response:
        out = await until_disconnect(call.request, self.service.retrieve_and_generate(call.json()))
        return json_response(out, call.request_id)

    @runtime_errors
    async def retrieve_and_generate_stream(self, call: Call) -> Response:
        plan = await self.service.plan(call.json())
        return StreamingResponse(
            self._frames(plan),
            media_type=CONTENT_TYPE,
            headers={"x-amzn-RequestId": call.request_id, SESSION_HEADER: plan.session_id},
        )

    async def _frames(self, plan: RagPlan) -> AsyncIterator[bytes]:
        try:
            async for event_type, payload in self.service.stream(plan):
                yield event_frame(event_type, payload)
        except Exception as exc:
            if isinstance(exc, OutcropError) and exc.stream_shape in _STREAM_SHAPES:
                yield exception_frame(exc.stream_shape, exc.message)
            else:
                log.exception("RetrieveAndGenerateStream failed", exc_info=exc)
                yield exception_frame(
                    "internalServerException", "The server encountered an internal error."
                )
