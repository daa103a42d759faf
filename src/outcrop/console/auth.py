"""Let a console session stand in for a key on the APIs the pages call.

A request with an ``Authorization`` header is checked as before; one with none but a live
session cookie is the console's, and must also carry the session's CSRF token unless it
only reads (GET/HEAD). The cookie is SameSite=Strict as well: two locks, not one.
"""

from __future__ import annotations

from outcrop.api.auth import Authenticator, Principal
from outcrop.console.sessions import CSRF_HEADER, ConsoleSessions, cookie_value
from outcrop.errors import AccessDeniedError

CONSOLE = Principal("bearer")  # a session is as good as the key that opened it
SAFE_METHODS = ("GET", "HEAD")
CSRF_MESSAGE = "The console's CSRF token is missing or wrong: reload the console and try again."


class SessionAuthenticator:
    def __init__(self, inner: Authenticator, sessions: ConsoleSessions) -> None:
        self.inner = inner
        self.sessions = sessions
        self.mode = inner.mode

    def authenticate(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Principal:
        has_authorization = any(n.lower() == "authorization" for n, _ in headers)
        if has_authorization or self.inner.mode == "none":
            return self.inner.authenticate(method, raw_path, raw_query, headers, body)
        session = self.sessions.get(cookie_value(headers))
        if session is None:
            return self.inner.authenticate(method, raw_path, raw_query, headers, body)
        check_csrf(self.sessions, session, method, headers)
        return CONSOLE


def check_csrf(sessions: ConsoleSessions, session, method: str, headers) -> None:  # noqa: ANN001
    if method in SAFE_METHODS:
        return
    presented = next((v for n, v in headers if n.lower() == CSRF_HEADER), None)
    if not sessions.csrf_ok(session, presented):
        raise AccessDeniedError(CSRF_MESSAGE)
