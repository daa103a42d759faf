from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from outcrop.api.sigv4 import canonical_uri, verify_sigv4
from outcrop.errors import AccessDeniedError, SignatureMismatchError, UnrecognizedClientError

AK, SK = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)
BODY = b'{"messages": [{"role": "user", "content": [{"text": "hi"}]}]}'
ARN_PATH = (
    "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3A"
    "application-inference-profile%2Fabc123/invoke"
)
LLAMA_PATH = "/model/meta.llama3-8b-instruct-v1%3A0/converse"


def lookup(key: str) -> str | None:
    return {AK: SK, "ASIATEMP": "tempsecret"}.get(key)


def sign(
    url: str,
    body: bytes = BODY,
    method: str = "POST",
    *,
    creds: Credentials | None = None,
    service: str = "bedrock",
    headers: dict[str, str] | None = None,
    at: datetime = T0,
) -> tuple[str, str, list[tuple[str, str]]]:
    """Sign with botocore's own signer; return the wire (raw_path, raw_query, headers)."""
    req = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    req.headers["Content-Type"] = "application/json"
    with mock.patch("botocore.auth.get_current_datetime", return_value=at.replace(tzinfo=None)):
        SigV4Auth(creds or Credentials(AK, SK), service, "us-east-1").add_auth(req)
    prepared = req.prepare()
    parts = urlsplit(prepared.url)
    wire = [(k, v) for k, v in prepared.headers.items()]
    wire.append(("Host", parts.netloc))  # what the HTTP client adds
    return parts.path, parts.query, wire


def verify(path, query, headers, body=BODY, method="POST", now=T0):
    return verify_sigv4(method, path, query, headers, body, lookup, now)


@pytest.mark.parametrize(
    "url",
    [
        f"http://localhost:8080{ARN_PATH}",
        f"http://localhost:8080{LLAMA_PATH}",
        "http://127.0.0.1:37955/model/anthropic.claude-3-haiku-20240307-v1:0/invoke",
        "http://localhost/foundation-models?byProvider=Meta&byOutputModality=TEXT",
        "http://localhost/async-invoke?statusEquals=Completed&maxResults=5&nextToken=a%20b%2Bc",
        "http://localhost:8080/model/a//b/./c/../invoke",
    ],
)
def test_botocore_signed_requests_accepted(url: str) -> None:
    path, query, headers = sign(url)
    assert path == urlsplit(url).path  # the wire path keeps %3A / %2F / raw ':'
    assert verify(path, query, headers) == AK


def test_get_with_empty_body_accepted() -> None:
    path, query, headers = sign(
        "http://localhost/foundation-models?byProvider=Meta&byOutputModality=TEXT", b"", "GET"
    )
    assert query == "byProvider=Meta&byOutputModality=TEXT"
    assert verify(path, query, headers, b"", "GET") == AK


def test_reference_vector() -> None:
    auth = (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=6780503c7aab3b723fdccf97e6f6bcc61a0ff5f868cf85b5e03bc8b0bf76bee5"
    )
    headers = [
        ("Content-Type", "application/json"),
        ("User-Agent", "Boto3/x"),
        ("X-Amz-Date", "20250101T120000Z"),
        ("Authorization", auth),
        ("host", "localhost:8080"),
    ]
    assert canonical_uri(LLAMA_PATH) == "/model/meta.llama3-8b-instruct-v1%253A0/converse"
    assert verify(LLAMA_PATH, "", headers, now=T0 + timedelta(minutes=3)) == AK


def test_temporary_credentials_accepted() -> None:
    path, query, headers = sign(
        f"http://localhost{LLAMA_PATH}", creds=Credentials("ASIATEMP", "tempsecret", "tok==")
    )
    assert ("X-Amz-Security-Token", "tok==") in headers
    assert verify(path, query, headers) == "ASIATEMP"
    tampered = [(k, "other" if k == "X-Amz-Security-Token" else v) for k, v in headers]
    with pytest.raises(SignatureMismatchError):
        verify(path, query, tampered)


def test_repeated_and_padded_headers() -> None:
    # botocore collapses whitespace and joins repeats with ','; we must do the same.
    path, query, headers = sign(
        f"http://localhost{LLAMA_PATH}", headers={"X-Amzn-Bedrock-Trace": "  a   b  "}
    )
    assert verify(path, query, headers) == AK
    with pytest.raises(SignatureMismatchError):
        verify(path, query, [*headers, ("x-amzn-bedrock-trace", "c")])


def test_content_sha256_header_used_and_checked() -> None:
    digest = hashlib.sha256(BODY).hexdigest()
    path, query, headers = sign(
        f"http://localhost{LLAMA_PATH}", headers={"X-Amz-Content-SHA256": digest}
    )
    assert verify(path, query, headers) == AK
    with pytest.raises(SignatureMismatchError, match="x-amz-content-sha256"):
        verify(path, query, headers, body=b"{}")
    path, query, headers = sign(
        f"http://localhost{LLAMA_PATH}", headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"}
    )
    assert verify(path, query, headers, body=b"anything") == AK


def _replace(headers, name, value):
    return [(k, value if k.lower() == name else v) for k, v in headers]


@pytest.fixture
def signed():
    return sign("http://localhost:8080/foundation-models?byProvider=Meta&byOutputModality=TEXT")


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda p, q, h: (p, q, h, b'{"x":1}'), id="body"),
        pytest.param(lambda p, q, h: ("/foundation-models/x", q, h, BODY), id="path"),
        pytest.param(lambda p, q, h: (p, "byProvider=Mistral", h, BODY), id="query"),
        pytest.param(lambda p, q, h: (p, q + "&extra=1", h, BODY), id="query-added"),
        pytest.param(
            lambda p, q, h: (p, q, _replace(h, "content-type", "text/plain"), BODY),
            id="signed-header",
        ),
        pytest.param(lambda p, q, h: (p, q, _replace(h, "host", "evil:8080"), BODY), id="host"),
    ],
)
def test_tampering_rejected(signed, tamper) -> None:
    path, query, headers, body = tamper(*signed)
    with pytest.raises(SignatureMismatchError, match="does not match the signature") as info:
        verify(path, query, headers, body)
    assert info.value.status == 403


def test_unsigned_header_change_allowed(signed) -> None:
    path, query, headers = signed
    assert verify(path, query, [*headers, ("User-Agent", "changed")]) == AK


def test_method_change_rejected(signed) -> None:
    with pytest.raises(SignatureMismatchError):
        verify(*signed, method="PUT")


@pytest.mark.parametrize(
    ("delta", "match"),
    [
        (timedelta(minutes=16), "Signature expired: 20250101T120000Z is now earlier than"),
        (-timedelta(minutes=16), "Signature not yet current: 20250101T120000Z is still later"),
    ],
)
def test_clock_skew(signed, delta, match) -> None:
    assert verify(*signed, now=T0 + delta / 16 * 14) == AK  # 14 minutes: still fine
    with pytest.raises(SignatureMismatchError, match=match):
        verify(*signed, now=T0 + delta)


def test_wrong_secret() -> None:
    path, query, headers = sign(f"http://localhost{ARN_PATH}", creds=Credentials(AK, "wrong"))
    with pytest.raises(SignatureMismatchError, match="Check your AWS Secret Access Key"):
        verify(path, query, headers)


def test_unknown_key() -> None:
    path, query, headers = sign(f"http://localhost{ARN_PATH}", creds=Credentials("AKIANOPE", SK))
    with pytest.raises(UnrecognizedClientError, match="security token included") as info:
        verify(path, query, headers)
    assert info.value.status == 403


@pytest.mark.parametrize(
    "auth",
    [
        None,
        "",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20250101/us-east-1/bedrock/aws4_request",
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/x, SignedHeaders=host, Signature=00",
        "AWS AKIDEXAMPLE:abc",
    ],
)
def test_missing_or_garbled_authorization(signed, auth) -> None:
    path, query, headers = signed
    headers = [(k, v) for k, v in headers if k.lower() != "authorization"]
    if auth is not None:
        headers.append(("Authorization", auth))
    with pytest.raises(AccessDeniedError) as info:
        verify(path, query, headers)
    assert info.value.status == 403


def test_wrong_service_in_scope() -> None:
    path, query, headers = sign(f"http://localhost{LLAMA_PATH}", service="s3")
    with pytest.raises(SignatureMismatchError, match="'s3'"):
        verify(path, query, headers)


def test_host_must_be_signed(signed) -> None:
    path, query, headers = signed
    headers = [
        (k, v.replace("content-type;host;", "content-type;") if k == "Authorization" else v)
        for k, v in headers
    ]
    with pytest.raises(SignatureMismatchError, match="Host"):
        verify(path, query, headers)


def test_missing_date(signed) -> None:
    path, query, headers = signed
    headers = [(k, v) for k, v in headers if k.lower() != "x-amz-date"]
    with pytest.raises(AccessDeniedError, match="X-Amz-Date"):
        verify(path, query, headers)


def test_non_ascii_signature_does_not_crash(signed) -> None:
    path, query, headers = signed
    headers = [(k, v[:-64] + "é" * 64 if k == "Authorization" else v) for k, v in headers]
    with pytest.raises(SignatureMismatchError):
        verify(path, query, headers)


def test_date_header_instead_of_x_amz_date() -> None:
    path, query, headers = sign(f"http://localhost{LLAMA_PATH}", headers={"Date": "whatever"})
    assert not any(k.lower() == "x-amz-date" for k, _ in headers)
    assert verify(path, query, headers) == AK
