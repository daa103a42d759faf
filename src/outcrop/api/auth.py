"""Per-request authentication: SigV4, Bedrock API keys (bearer), or none.

The ASGI app calls :meth:`Authenticator.authenticate` once per request with the raw request
parts; everything protocol-specific lives in :mod:`outcrop.api.sigv4`.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from outcrop.api.sigv4 import ALGORITHM, verify_sigv4
from outcrop.errors import AccessDeniedError

__all__ = ["AuthMode", "Authenticator", "Principal"]

AuthMode = Literal["sigv4", "none"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who made the request. ``access_key_id`` is ``None`` for bearer and anonymous callers."""

    kind: Literal["sigv4", "bearer", "anonymous"]
    access_key_id: str | None = None


ANONYMOUS = Principal("anonymous")
_BEARER = Principal("bearer")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Authenticator:
    def __init__(
        self,
        keys: Mapping[str, str],
        api_keys: set[str] | frozenset[str] = frozenset(),
        mode: AuthMode = "sigv4",
        *,
        max_skew: timedelta = timedelta(minutes=15),
        clock: Callable[[], datetime] = _utcnow,
        region: str | None = None,
    ) -> None:
        if mode not in ("sigv4", "none"):
            raise ValueError(f"unknown auth mode: {mode!r}")
        self.keys = dict(keys)
        # Stored as bytes so every comparison goes through compare_digest on equal types.
        self._api_keys = tuple(k.encode("utf-8") for k in api_keys)
        self.mode = mode
        self.max_skew = max_skew
        self.clock = clock
        self.region = region

    def authenticate(
        self,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> Principal:
        """Return the caller's :class:`Principal` or raise a 403 ``OutcropError``."""
        if self.mode == "none":
            return ANONYMOUS
        authorization = next((v for n, v in headers if n.lower() == "authorization"), "")
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return self._bearer(credential.strip())
        if scheme == ALGORITHM:
            access_key = verify_sigv4(
                method,
                raw_path,
                raw_query,
                headers,
                body,
                self.keys.get,
                self.clock(),
                self.max_skew,
                self.region,
            )
            return Principal("sigv4", access_key)
        if not authorization:
            raise AccessDeniedError("Missing Authentication Token")
        raise AccessDeniedError(
            f"Unsupported Authorization scheme {scheme!r}: "
            f"use AWS Signature Version 4 ({ALGORITHM}) or 'Bearer <api key>'."
        )

    def _bearer(self, token: str) -> Principal:
        presented = token.encode("utf-8", "surrogateescape")
        # Check every key (no early exit) so timing does not reveal how many keys exist
        # or which one nearly matched.
        ok = False
        for key in self._api_keys:
            ok |= hmac.compare_digest(presented, key)
        if not (ok and token):
            raise AccessDeniedError(
                "Invalid API key: the Bearer token in the Authorization header is not a "
                "configured Bedrock API key for this server."
            )
        return _BEARER
