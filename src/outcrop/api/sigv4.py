"""AWS Signature Version 4 verification: the server-side mirror of ``botocore.auth.SigV4Auth``.

Pure: no I/O, no clock (``now`` is passed in), no framework types. The ASGI layer hands over the
request exactly as received (``scope["raw_path"]``, ``scope["query_string"]``, raw headers) because
the signature covers the wire bytes, not a decoded view of them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote

from outcrop.errors import AccessDeniedError, SignatureMismatchError, UnrecognizedClientError

__all__ = ["ALGORITHM", "SERVICE", "verify_sigv4"]

ALGORITHM = "AWS4-HMAC-SHA256"
# Every Bedrock service (runtime, control plane, agents) signs with signing name "bedrock".
SERVICE = "bedrock"
_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"

_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. "
    "Consult the service documentation for details."
)
_BAD_TOKEN = "The security token included in the request is invalid."


@dataclass(frozen=True, slots=True)
class _AuthHeader:
    access_key: str
    date: str  # yyyymmdd from the credential scope
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _parse_authorization(value: str) -> _AuthHeader:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise AccessDeniedError(f"Unsupported authorization type: {algorithm or '(empty)'}")
    params: dict[str, str] = {}
    for part in rest.split(","):
        key, sep, val = part.strip().partition("=")
        if sep:
            params[key] = val
    missing = [p for p in ("Credential", "SignedHeaders", "Signature") if not params.get(p)]
    if missing:
        raise AccessDeniedError(
            " ".join(f"Authorization header requires '{p}' parameter." for p in missing)
            + f" Authorization={ALGORITHM}"
        )
    cred = params["Credential"].split("/")
    if len(cred) != 5 or not all(cred) or cred[4] != "aws4_request":
        raise AccessDeniedError(
            "Credential should be scoped to a valid region. "
            f"Malformed credential: {params['Credential']!r}"
        )
    return _AuthHeader(
        access_key=cred[0],
        date=cred[1],
        region=cred[2],
        service=cred[3],
        signed_headers=tuple(h.strip().lower() for h in params["SignedHeaders"].split(";")),
        signature=params["Signature"],
    )


def _group_headers(headers: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, value in headers:
        grouped.setdefault(name.lower(), []).append(value)
    return grouped


def _request_time(grouped: dict[str, list[str]]) -> tuple[datetime, str]:
    """The signing time and its ``yyyymmddThhmmssZ`` form, from X-Amz-Date or Date."""
    if amz := grouped.get("x-amz-date"):
        try:
            when = datetime.strptime(amz[0].strip(), _AMZ_DATE).replace(tzinfo=UTC)
        except ValueError:
            raise AccessDeniedError(f"Invalid X-Amz-Date: {amz[0]!r}") from None
    elif date := grouped.get("date"):
        # botocore signs an HTTP-date header with the same instant in amz format.
        try:
            when = parsedate_to_datetime(date[0]).astimezone(UTC)
        except (TypeError, ValueError):
            raise AccessDeniedError(f"Invalid Date header: {date[0]!r}") from None
    else:
        raise AccessDeniedError(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
        )
    return when, when.strftime(_AMZ_DATE)


def _remove_dot_segments(path: str) -> str:
    # Same as botocore.utils.remove_dot_segments: drops '.', resolves '..', collapses '//'.
    if not path:
        return "/"
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg and seg != ".":
            out.append(seg)
    first = "/" if path[0] == "/" else ""
    last = "/" if path[-1] == "/" and out else ""
    return first + "/".join(out) + last


def canonical_uri(raw_path: str) -> str:
    """Non-S3 services quote the already-encoded wire path again (``%3A`` -> ``%253A``).

    Decode ASGI ``raw_path`` bytes with ``("utf-8", "surrogateescape")`` so any stray non-ASCII
    bytes are quoted exactly as they arrived.
    """
    path = _remove_dot_segments(raw_path).encode("utf-8", "surrogateescape")
    return quote(path, safe="/~")


def canonical_query(raw_query: str) -> str:
    # Raw wire pairs, not decoded: botocore signs the query exactly as it put it on the wire.
    if not raw_query:
        return ""
    pairs = sorted(tuple(p.partition("=")[::2]) for p in raw_query.split("&"))
    return "&".join(f"{k}={v}" for k, v in pairs)


def _payload_hash(grouped: dict[str, list[str]], body: bytes) -> str:
    actual = hashlib.sha256(body).hexdigest()
    claimed = grouped.get("x-amz-content-sha256")
    if not claimed:
        return actual  # botocore does not send it for Bedrock
    value = claimed[0].strip()
    if value == _UNSIGNED_PAYLOAD:
        return value
    # A claimed hash is only worth signing if it is the body's hash; otherwise the body could be
    # swapped under a valid signature.
    if not _HEX64.fullmatch(value) or value.lower() != actual:
        raise SignatureMismatchError(
            "The provided 'x-amz-content-sha256' header does not match what was computed."
        )
    return value


def verify_sigv4(
    method: str,
    raw_path: str,
    raw_query: str,
    headers: list[tuple[str, str]],
    body: bytes,
    lookup_secret: Callable[[str], str | None],
    now: datetime,
    max_skew: timedelta = timedelta(minutes=15),
    region: str | None = None,
) -> str:
    """Verify a SigV4-signed request and return its access key id.

    ``headers`` are (name, value) pairs as received; names in any case, repeats allowed.
    ``lookup_secret`` maps an access key id to its secret, or ``None`` if unknown.
    ``region``: the one region this server answers for (None: any, as the pure tests use).
    Raises ``AccessDeniedError``, ``UnrecognizedClientError`` or ``SignatureMismatchError``.
    """
    grouped = _group_headers(headers)
    auth_values = grouped.get("authorization")
    if not auth_values:
        raise AccessDeniedError("Missing Authentication Token")
    if len(auth_values) > 1:
        raise AccessDeniedError("Multiple Authorization headers are not allowed.")
    auth = _parse_authorization(auth_values[0])

    if auth.service != SERVICE:
        raise SignatureMismatchError(
            f"Credential should be scoped to correct service: '{SERVICE}'. "
            f"Service '{auth.service}' is not valid."
        )
    if region is not None and auth.region != region:
        # As AWS: a signature scoped to another region is not valid here, even if correct.
        raise SignatureMismatchError(
            f"Credential should be scoped to a valid region, not '{auth.region}'. "
            f"This server's region is '{region}'."
        )
    if "host" not in auth.signed_headers:
        raise SignatureMismatchError("'Host' must be a 'SignedHeader' in the AWS Authorization.")

    when, amz_date = _request_time(grouped)
    if auth.date != amz_date[:8]:
        raise SignatureMismatchError(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of "
            f"date from HTTP: '{auth.date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    minutes = f"{max_skew.total_seconds() / 60:g} min."
    if when < now - max_skew:
        raise SignatureMismatchError(
            f"Signature expired: {amz_date} is now earlier than "
            f"{(now - max_skew).strftime(_AMZ_DATE)} ({now.strftime(_AMZ_DATE)} - {minutes})"
        )
    if when > now + max_skew:
        raise SignatureMismatchError(
            f"Signature not yet current: {amz_date} is still later than "
            f"{(now + max_skew).strftime(_AMZ_DATE)} ({now.strftime(_AMZ_DATE)} + {minutes})"
        )

    secret = lookup_secret(auth.access_key)
    if secret is None:
        raise UnrecognizedClientError(_BAD_TOKEN)

    signed = sorted(set(auth.signed_headers))
    canonical_headers = "".join(
        f"{name}:{','.join(' '.join(v.split()) for v in grouped.get(name, ()))}\n"
        for name in signed
    )
    canonical_request = "\n".join(
        (
            method.upper(),
            canonical_uri(raw_path),
            canonical_query(raw_query),
            canonical_headers,
            ";".join(signed),
            _payload_hash(grouped, body),
        )
    )
    string_to_sign = "\n".join(
        (
            ALGORITHM,
            amz_date,
            auth.scope,
            hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
        )
    )
    key = ("AWS4" + secret).encode("utf-8")
    for part in (auth.date, auth.region, auth.service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()

    # Bytes, not str: compare_digest rejects non-ASCII str, and the header is attacker-controlled.
    if not hmac.compare_digest(expected.encode(), auth.signature.encode("utf-8", "replace")):
        raise SignatureMismatchError(_MISMATCH)
    return auth.access_key
