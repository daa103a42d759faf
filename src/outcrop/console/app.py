"""``/console``: the page, its assets, sign-in, and the console's own read-outs.

Mounted in front of the API app by path prefix. Pages do their work through the public
APIs (same port, same service layer); the few routes here exist because a browser needs a
cookie where a client has a key, and charts need history where Prometheus has totals.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import unquote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import Receive, Scope, Send

from outcrop.console.auth import CSRF_MESSAGE, SAFE_METHODS
from outcrop.console.models import ConsoleModels
from outcrop.console.sessions import COOKIE, CSRF_HEADER, ConsoleSessions, Session
from outcrop.console.usage import UsageHistory
from outcrop.errors import AccessDeniedError, OutcropError

log = logging.getLogger("outcrop.console")
PREFIX = "/console"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything the page loads comes from here; no inline script, so injected markup cannot run.
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class SignInRequired(Exception):
    pass


class ConsoleApp:
    def __init__(
        self,
        sessions: ConsoleSessions,
        models: ConsoleModels,
        usage: UsageHistory,
        customization: Any = None,  # CustomizationService: the job's step-wise losses
        *,
        secure_cookie: bool = False,
    ) -> None:
        self.sessions = sessions
        self.models = models
        self.usage = usage
        self.customization = customization
        self.secure_cookie = secure_cookie
        self._assets = resources.files("outcrop.console") / "static"
        self._routes: dict[tuple[str, str], Callable[..., Awaitable[Response]]] = {
            ("GET", "session"): self.get_session,
            ("POST", "session"): self.sign_in,
            ("DELETE", "session"): self.sign_out,
            ("GET", "login"): self.login_link,
            ("GET", "api/models"): self.list_models,
            ("POST", "api/models/pull"): self.pull_model,
            ("GET", "api/usage"): self.get_usage,
            ("GET", "api/customization-steps"): self.get_steps,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self._handle(Request(scope, receive))
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        await response(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        rest = request.url.path[len(PREFIX) :].strip("/")
        if request.method in SAFE_METHODS and (rest == "" or rest.startswith("static/")):
            return self._asset(rest.removeprefix("static/") if rest else "index.html")
        handler = self._routes.get((request.method, rest))
        if handler is None:
            return _error(404, "NotFound", f"No console route {request.method} /console/{rest}.")
        try:
            return await handler(request)
        except SignInRequired:
            return _error(401, "SignInRequired", "Your console session has ended: sign in again.")
        except OutcropError as exc:
            return _error(exc.status, exc.shape, exc.message)
        except Exception:
            log.exception("console error in %s %s", request.method, request.url.path)
            return _error(500, "InternalServerError", "The console hit an internal error.")

    # ---------------------------------------------------------------- assets

    def _asset(self, name: str) -> Response:
        name = unquote(name)
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts) or "\\" in name:
            return _error(404, "NotFound", "No such console file.")
        target = self._assets.joinpath(*parts)
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if suffix not in _TYPES or not target.is_file():
            return _error(404, "NotFound", f"No console file {name!r}.")
        # no-cache: revalidate, so an upgraded server never runs yesterday's script.
        return Response(
            target.read_bytes(), media_type=_TYPES[suffix], headers={"cache-control": "no-cache"}
        )

    # ---------------------------------------------------------------- sign-in

    def _session(self, request: Request) -> Session | None:
        return self.sessions.get(request.cookies.get(COOKIE))

    def _require(self, request: Request) -> None:
        """Pass a signed-in (or --auth none) caller; changes also need the CSRF token."""
        if not self.sessions.required:
            return
        session = self._session(request)
        if session is None:
            raise SignInRequired
        if request.method not in SAFE_METHODS and not self.sessions.csrf_ok(
            session, request.headers.get(CSRF_HEADER)
        ):
            raise AccessDeniedError(CSRF_MESSAGE)

    async def get_session(self, request: Request) -> Response:
        session = self._session(request)
        return _json(
            {
                "authRequired": self.sessions.required,
                "signedIn": session is not None or not self.sessions.required,
                "csrfToken": session.csrf if session else None,
            }
        )

    async def sign_in(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        key = body.get("apiKey") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key.strip():
            return _error(400, "ValidationException", "Enter the server's API key.")
        client = request.client.host if request.client else ""
        wait = self.sessions.retry_after(client)
        if wait > 0:
            return _error(
                429,
                "ThrottlingException",
                f"Too many wrong keys from this address: try again in {wait:.0f} seconds.",
            )
        session = self.sessions.sign_in(key.strip())
        if session is None:
            self.sessions.wrong_key(client)
            return _error(
                401,
                "WrongKey",
                "That key is not this server's API key (OUTCROP_API_KEY) or secret access key.",
            )
        return self._with_cookie(_json({"signedIn": True, "csrfToken": session.csrf}), session)

    async def sign_out(self, request: Request) -> Response:
        self._require(request)
        self.sessions.sign_out(request.cookies.get(COOKIE))
        response = _json({"signedIn": False})
        response.delete_cookie(COOKIE, path="/", samesite="strict", httponly=True)
        return response

    async def login_link(self, request: Request) -> Response:
        session = self.sessions.redeem(request.query_params.get("token", ""))
        if session is None:
            return RedirectResponse(PREFIX + "/#/signin?link=expired", status_code=303)
        return self._with_cookie(RedirectResponse(PREFIX + "/", status_code=303), session)

    def _with_cookie(self, response: Response, session: Session) -> Response:
        response.set_cookie(
            COOKIE, session.token, max_age=int(self.sessions.ttl_s), path="/",
            httponly=True, samesite="strict", secure=self.secure_cookie,
        )  # fmt: skip
        return response

    # ---------------------------------------------------------------- read-outs

    async def list_models(self, request: Request) -> Response:
        self._require(request)
        return _json({"models": await asyncio.to_thread(self.models.list)})

    async def pull_model(self, request: Request) -> Response:
        self._require(request)
        model_id = request.query_params.get("modelId", "")
        return _json(await asyncio.to_thread(self.models.pull, model_id))

    async def get_usage(self, request: Request) -> Response:
        self._require(request)
        return _json(self.usage.history())

    async def get_steps(self, request: Request) -> Response:
        self._require(request)
        job = request.query_params.get("jobIdentifier", "")
        if self.customization is None:
            return _json({"steps": []})
        steps = await asyncio.to_thread(self.customization.training_steps, job)
        return _json({"steps": steps})


def _json(body: dict[str, Any], status: int = 200) -> Response:
    return Response(
        json.dumps(body), status_code=status, media_type="application/json",
        headers={"cache-control": "no-store"},
    )  # fmt: skip


def _error(status: int, code: str, message: str) -> Response:
    return _json({"__type": code, "message": message}, status)
