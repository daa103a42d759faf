"""Console sign-in: keys, sessions, one-time links, CSRF, and the session standing in for a
key on the APIs (unit level; the browser tests drive the same through a real server)."""

from __future__ import annotations

import pytest

from outcrop.api.auth import Authenticator
from outcrop.console.auth import SessionAuthenticator
from outcrop.console.sessions import (
    COOKIE,
    CSRF_HEADER,
    MAX_WRONG_KEYS,
    WRONG_KEY_WINDOW_S,
    ConsoleSessions,
    cookie_value,
)
from outcrop.errors import AccessDeniedError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_only_a_configured_key_opens_a_session():
    sessions = ConsoleSessions(["api-key", "secret", ""])
    assert sessions.sign_in("wrong") is None
    assert sessions.sign_in("") is None  # the empty "key" of an unset setting opens nothing
    session = sessions.sign_in("secret")
    assert session is not None and sessions.get(session.token) == session


def test_a_session_expires_and_signing_out_ends_it():
    clock = Clock()
    sessions = ConsoleSessions(["k"], ttl_s=60, clock=clock)
    a, b = sessions.sign_in("k"), sessions.sign_in("k")
    clock.now += 61
    assert sessions.get(a.token) is None
    c = sessions.sign_in("k")
    sessions.sign_out(c.token)
    assert sessions.get(c.token) is None and sessions.get(b.token) is None


def test_a_one_time_link_works_once_and_not_after_fifteen_minutes():
    clock = Clock()
    sessions = ConsoleSessions(["k"], clock=clock)
    token = sessions.one_time_link()
    assert sessions.redeem(token) is not None
    assert sessions.redeem(token) is None
    late = sessions.one_time_link()
    clock.now += 15 * 60 + 1
    assert sessions.redeem(late) is None


def test_cookie_value_reads_one_cookie_among_many():
    headers = [("Cookie", f"a=1; {COOKIE}=tok; b=2")]
    assert cookie_value(headers) == "tok"
    assert cookie_value([("cookie", "a=1")]) is None


def _auth(mode="sigv4"):
    sessions = ConsoleSessions(["api-key"], required=mode != "none")
    inner = Authenticator({"AKID": "secret"}, {"api-key"}, mode=mode)
    return SessionAuthenticator(inner, sessions), sessions


def test_a_session_cookie_reads_without_csrf_but_changes_need_it():
    auth, sessions = _auth()
    s = sessions.sign_in("api-key")
    cookie = ("cookie", f"{COOKIE}={s.token}")
    assert auth.authenticate("GET", "/foundation-models", "", [cookie], b"").kind == "bearer"
    with pytest.raises(AccessDeniedError, match="CSRF"):
        auth.authenticate("POST", "/model/x/converse", "", [cookie], b"{}")
    with pytest.raises(AccessDeniedError, match="CSRF"):
        auth.authenticate("POST", "/model/x/converse", "", [cookie, (CSRF_HEADER, "nope")], b"{}")
    ok = auth.authenticate("POST", "/model/x/converse", "", [cookie, (CSRF_HEADER, s.csrf)], b"{}")
    assert ok.kind == "bearer"


def test_without_a_live_session_the_key_rules_apply_unchanged():
    auth, sessions = _auth()
    with pytest.raises(AccessDeniedError, match="Missing Authentication Token"):
        auth.authenticate("GET", "/foundation-models", "", [("cookie", f"{COOKIE}=stale")], b"")
    bearer = ("authorization", "Bearer api-key")
    assert auth.authenticate("POST", "/x", "", [bearer], b"").kind == "bearer"
    with pytest.raises(AccessDeniedError, match="Invalid API key"):
        auth.authenticate("POST", "/x", "", [("authorization", "Bearer bad")], b"")


def test_auth_none_needs_neither_cookie_nor_csrf():
    auth, _ = _auth("none")
    assert auth.authenticate("POST", "/model/x/converse", "", [], b"{}").kind == "anonymous"


def test_wrong_keys_are_throttled_per_client_for_a_minute():
    now = [1000.0]
    sessions = ConsoleSessions(["secret"], clock=lambda: now[0])
    for _ in range(MAX_WRONG_KEYS):
        assert sessions.retry_after("10.0.0.1") == 0
        sessions.wrong_key("10.0.0.1")
    assert sessions.retry_after("10.0.0.1") == pytest.approx(WRONG_KEY_WINDOW_S)
    assert sessions.retry_after("10.0.0.2") == 0  # another client is not affected
    now[0] += WRONG_KEY_WINDOW_S + 1
    assert sessions.retry_after("10.0.0.1") == 0  # the window has passed
