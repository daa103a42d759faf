"""Console sessions: sign in with a server key (or a one-time link), get a cookie.

Sessions live in memory: a restarted server signs everyone out, which is the safe default
for a local tool. Each session carries its own CSRF token, which the page sends back in a
header on every state-changing call (the cookie alone never authorises a change).
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

COOKIE = "outcrop_console"
CSRF_HEADER = "x-outcrop-csrf"
SESSION_TTL_S = 12 * 3600
LINK_TTL_S = 15 * 60
MAX_WRONG_KEYS = 5
"""Wrong keys one client may try per ``WRONG_KEY_WINDOW_S`` before sign-in refuses it."""
WRONG_KEY_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    csrf: str
    expires: float


class ConsoleSessions:
    def __init__(
        self,
        keys: Iterable[str],
        *,
        required: bool = True,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Stored as bytes: every comparison goes through compare_digest on equal types.
        self._keys = tuple(k.encode() for k in keys if k)
        self.required = required
        self.ttl_s = ttl_s
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._links: dict[str, float] = {}
        self._wrong: dict[str, list[float]] = {}  # client -> times of its recent wrong keys
        self._lock = threading.Lock()

    def key_matches(self, presented: str) -> bool:
        candidate = presented.encode("utf-8", "surrogateescape")
        ok = False
        for key in self._keys:  # no early exit: timing says nothing about which key
            ok |= hmac.compare_digest(candidate, key)
        return ok and bool(presented)

    def sign_in(self, presented: str) -> Session | None:
        return self._open() if self.key_matches(presented) else None

    def retry_after(self, client: str) -> float:
        """Seconds before ``client`` may try a key again (0: now). Guessing a key costs
        a minute per five tries, whatever the guesser does."""
        now = self.clock()
        with self._lock:
            recent = [t for t in self._wrong.get(client, ()) if t > now - WRONG_KEY_WINDOW_S]
            self._wrong[client] = recent
            if len(recent) < MAX_WRONG_KEYS:
                return 0.0
            return recent[0] + WRONG_KEY_WINDOW_S - now

    def wrong_key(self, client: str) -> None:
        with self._lock:
            if len(self._wrong) > 10_000:  # bounded: forget the oldest clients
                for old in list(self._wrong)[:5_000]:
                    del self._wrong[old]
            self._wrong.setdefault(client, []).append(self.clock())

    def one_time_link(self) -> str:
        """A token for ``/console/login?token=...``: good once, for fifteen minutes."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._links[token] = self.clock() + LINK_TTL_S
        return token

    def redeem(self, token: str) -> Session | None:
        with self._lock:
            expires = self._links.pop(token, None)
        if expires is None or expires < self.clock():
            return None
        return self._open()

    def get(self, token: str | None) -> Session | None:
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires < self.clock():
                del self._sessions[token]
                return None
        return session

    def sign_out(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)

    def csrf_ok(self, session: Session, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(session.csrf.encode(), presented.encode())

    def _open(self) -> Session:
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(24), self.clock() + self.ttl_s
        )
        with self._lock:
            now = self.clock()
            for token in [t for t, s in self._sessions.items() if s.expires < now]:
                del self._sessions[token]
            self._sessions[session.token] = session
        return session


def cookie_value(headers: Iterable[tuple[str, str]], name: str = COOKIE) -> str | None:
    for header, value in headers:
        if header.lower() != "cookie":
            continue
        for part in value.split(";"):
            key, _, val = part.strip().partition("=")
            if key == name:
                return val
    return None
