from __future__ import annotations

import json
import re
import stat
from datetime import UTC, datetime
from pathlib import Path
from unittest import mock
from urllib.parse import urlsplit

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from outcrop.api.auth import Authenticator, Principal
from outcrop.credentials import export_lines, load_or_create_credentials
from outcrop.errors import AccessDeniedError, SignatureMismatchError, UnrecognizedClientError

AK, SK = "AKIAOUTCROPTEST00001", "s" * 40
NOW = datetime(2025, 6, 1, 8, 30, tzinfo=UTC)
PATH = "/model/meta.llama3-8b-instruct-v1%3A0/converse"
BODY = b'{"messages":[]}'


def signed_headers(secret: str = SK, key: str = AK) -> list[tuple[str, str]]:
    req = AWSRequest(method="POST", url=f"http://localhost:8000{PATH}", data=BODY)
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4Auth(Credentials(key, secret), "bedrock", "us-west-2").add_auth(req)
    prepared = req.prepare()
    assert urlsplit(prepared.url).path == PATH
    return [*prepared.headers.items(), ("host", "localhost:8000")]


@pytest.fixture
def authn() -> Authenticator:
    return Authenticator({AK: SK}, {"bedrock-key-1", "ABSK-two"}, "sigv4", clock=lambda: NOW)


def call(authn: Authenticator, headers: list[tuple[str, str]]) -> Principal:
    return authn.authenticate("POST", PATH, "", headers, BODY)


def test_sigv4_good(authn) -> None:
    assert call(authn, signed_headers()) == Principal("sigv4", AK)


def test_sigv4_bad_signature(authn) -> None:
    with pytest.raises(SignatureMismatchError):
        call(authn, signed_headers(secret="x" * 40))


def test_sigv4_unknown_key(authn) -> None:
    with pytest.raises(UnrecognizedClientError):
        call(authn, signed_headers(key="AKIAUNKNOWN"))


def test_sigv4_uses_clock(authn) -> None:
    late = Authenticator({AK: SK}, set(), "sigv4", clock=lambda: NOW.replace(hour=9))
    with pytest.raises(SignatureMismatchError, match="expired"):
        call(late, signed_headers())


@pytest.mark.parametrize("value", ["Bearer bedrock-key-1", "bearer ABSK-two", "Bearer  ABSK-two "])
def test_bearer_good(authn, value) -> None:
    assert call(authn, [("authorization", value)]) == Principal("bearer")


@pytest.mark.parametrize("value", ["Bearer nope", "Bearer ", "Bearer bedrock-key-", "Bearer é"])
def test_bearer_bad(authn, value) -> None:
    with pytest.raises(AccessDeniedError, match="API key") as info:
        call(authn, [("Authorization", value)])
    assert info.value.status == 403


def test_bearer_rejected_when_no_api_keys() -> None:
    with pytest.raises(AccessDeniedError):
        call(Authenticator({AK: SK}, set(), "sigv4"), [("Authorization", "Bearer ")])


@pytest.mark.parametrize("headers", [[], [("Authorization", "Basic dXNlcjpwYXNz")]])
def test_missing_or_unsupported(authn, headers) -> None:
    with pytest.raises(AccessDeniedError):
        call(authn, headers)


@pytest.mark.parametrize(
    "headers", [[], [("Authorization", "Bearer nope")], [("Authorization", "AWS4-HMAC-SHA256 x")]]
)
def test_none_mode_is_anonymous(headers) -> None:
    authn = Authenticator({}, set(), "none")
    assert call(authn, headers) == Principal("anonymous")


def test_bad_mode() -> None:
    with pytest.raises(ValueError):
        Authenticator({}, set(), "trust")  # type: ignore[arg-type]


def test_credentials_created_once_with_0600(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    key, secret, created = load_or_create_credentials(data_dir)
    assert created
    assert re.fullmatch(r"AKIA[A-Z0-9]{16}", key)
    assert len(secret) == 40
    path = data_dir / "credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["aws_access_key_id"] == key
    assert load_or_create_credentials(data_dir) == (key, secret, False)
    assert [p.name for p in data_dir.iterdir()] == ["credentials.json"]  # no temp files left


def test_credentials_differ_per_data_dir(tmp_path: Path) -> None:
    assert (
        load_or_create_credentials(tmp_path / "a")[:2]
        != load_or_create_credentials(tmp_path / "b")[:2]
    )


def test_created_credentials_sign_and_verify(tmp_path: Path) -> None:
    key, secret, _ = load_or_create_credentials(tmp_path)
    authn = Authenticator({key: secret}, set(), "sigv4", clock=lambda: NOW)
    assert call(authn, signed_headers(secret=secret, key=key)) == Principal("sigv4", key)


def test_export_lines() -> None:
    out = export_lines("http://127.0.0.1:8000", AK, "a/b+c", "us-east-1")
    assert out.splitlines() == [
        "export AWS_ENDPOINT_URL=http://127.0.0.1:8000",
        f"export AWS_ACCESS_KEY_ID={AK}",
        "export AWS_SECRET_ACCESS_KEY=a/b+c",
        "export AWS_REGION=us-east-1",
        "export AWS_DEFAULT_REGION=us-east-1",
    ]


def test_a_signature_scoped_to_another_region_is_refused() -> None:
    # Found by the SigV4 tampering suite: a correct signature for eu-west-1 was accepted.
    here = Authenticator({AK: SK}, set(), "sigv4", clock=lambda: NOW, region="us-west-2")
    assert call(here, signed_headers()) == Principal("sigv4", AK)  # signed for us-west-2
    elsewhere = Authenticator({AK: SK}, set(), "sigv4", clock=lambda: NOW, region="eu-west-1")
    with pytest.raises(SignatureMismatchError, match="valid region"):
        call(elsewhere, signed_headers())
