"""The ASGI application: one port for bedrock-runtime and the bedrock control plane.

Per request: read the body, authenticate (SigV4 or bearer), route on the raw path,
run the handler. Every OutcropError becomes its wire error here and nowhere else: Bedrock's
shape, or the shape the router declares for the path's prefix (OpenAI's under ``/v1``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from outcrop.api.auth import Authenticator, Principal
from outcrop.api.limits import check_head, read_limited
from outcrop.api.responses import error_response, json_response, new_request_id
from outcrop.api.routing import Router
from outcrop.errors import (
    InternalServerError,
    OutcropError,
    UnknownOperationError,
    ValidationError,
)
from outcrop.metering import Metrics

log = logging.getLogger("outcrop.api")
T = TypeVar("T")
# JSON can spell half a UTF-16 pair ("\ud800") that no UTF-8 text can hold; only bodies
# that contain such an escape pay for the full check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
CLIENT_CLOSED = 499  # nginx's code for "client closed the request", for metrics only


@dataclass
class Call:
    """One authenticated request, as handlers see it."""

    request: Request
    labels: dict[str, str]
    body: bytes
    request_id: str
    principal: Principal

    def json(self) -> dict[str, Any]:
        if not self.body:
            return {}
        try:
            value = json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValidationError(
                f"Malformed input request: the body is not valid JSON ({exc})."
            ) from exc
        except RecursionError:  # found by the contract fuzzer: [[[[... 200,000 deep
            raise ValidationError(
                "Malformed input request: the body is nested too deeply."
            ) from None
        if _SURROGATE_ESCAPE.search(self.body) and _has_lone_surrogate(value):
            raise ValidationError(
                "Malformed input request: the body holds a lone UTF-16 surrogate (\\ud800-"
                "\\udfff), which is not a Unicode character."
            )
        if not isinstance(value, dict):
            raise ValidationError("Malformed input request: the body must be a JSON object.")
        return value

    def query(self, name: str) -> str | None:
        return self.request.query_params.get(name)


class OutcropApp:
    def __init__(
        self, router: Router, authenticator: Authenticator, metrics: Metrics | None = None
    ) -> None:
        self.router = router
        self.authenticator = authenticator
        self.metrics = metrics
        self.on_startup: list[Callable[[], Awaitable[None] | None]] = []
        self.on_shutdown: list[Callable[[], Awaitable[None] | None]] = []
        # (path prefix, ASGI app) served before authentication: the web console.
        self.mounts: list[tuple[str, Callable[[Scope, Receive, Send], Awaitable[None]]]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        for prefix, mounted in self.mounts:
            if scope["path"] == prefix or scope["path"].startswith(prefix + "/"):
                await mounted(scope, receive, send)
                return
        response = await self._handle(Request(scope, receive))
        await response(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        request_id = new_request_id()
        raw_path = request.scope.get("raw_path", b"").decode("latin-1") or request.scope["path"]
        method = request.method
        try:
            check_head(request.scope["headers"])
        except OutcropError as exc:
            render = self.router.error_renderer(raw_path) or error_response
            return render(exc, request_id)
        if raw_path in ("/health", "/ping") and method in ("GET", "HEAD"):
            return json_response({"status": "ok"}, request_id)
        if raw_path == "/metrics" and method == "GET" and self.metrics is not None:
            # Unauthenticated, like /health: Prometheus scrapers carry no AWS keys.
            return Response(self.metrics.render(), media_type=CONTENT_TYPE_LATEST)
        started = time.perf_counter()
        operation = "Unknown"
        response = await self._dispatch(request, request_id, raw_path, method)
        if self.metrics is not None:
            operation = request.scope.get("outcrop.operation", operation)
            self.metrics.request(operation, response.status_code, time.perf_counter() - started)
        return response

    async def _dispatch(
        self, request: Request, request_id: str, raw_path: str, method: str
    ) -> Response:
        render = self.router.error_renderer(raw_path) or error_response
        try:
            body = await read_limited(request.stream())
            headers = [
                (k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]
            ]
            query = request.scope.get("query_string", b"").decode("latin-1")
            principal = self.authenticator.authenticate(method, raw_path, query, headers, body)
            found = self.router.match(method, raw_path)
            if not found:
                raise UnknownOperationError(f"No operation matches {method} {raw_path}.")
            route, labels = found
            request.scope["outcrop.operation"] = route.operation
            call = Call(request, labels, body, request_id, principal)
            return await route.handler(call)
        except OutcropError as exc:
            return render(exc, request_id)
        except ClientDisconnect:
            # The client left before its request was in: nobody to answer, nothing to log.
            return Response(status_code=CLIENT_CLOSED)
        except Exception:
            log.exception("unhandled error in %s %s", method, raw_path)
            return render(
                InternalServerError("The server encountered an internal error."), request_id
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for hook in self.on_startup:
                    result = hook()
                    if result is not None:
                        await result
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for hook in self.on_shutdown:
                    result = hook()
                    if result is not None:
                        await result
                await send({"type": "lifespan.shutdown.complete"})
                return


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Run ``work``, cancelling it if the client goes away (its slot is freed at once)."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        task.cancel()
        raise InternalServerError("The client disconnected.")
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
