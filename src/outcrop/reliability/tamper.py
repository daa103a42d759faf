"""SigV4 tampering: break one thing in a correctly signed request, expect a 403.

Requests are signed by ``botocore.auth.SigV4Auth`` and then altered on the wire (sent
through ``http.client`` so the path and headers go out exactly as altered). botocore is
the oracle too: for each altered request it signs the altered parts again at the same
instant; if that signature differs from the one presented, the server must refuse (403,
AWS's error shape, an error code botocore parses); if it is the same (header-name case,
query order), the server must accept. Clock skew, region, service and keys are checked
by rule, as AWS states them.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.parsers import create_parser

from outcrop.reliability import live

AUTH_ERRORS = {"InvalidSignatureException", "AccessDeniedException", "UnrecognizedClientException"}


@dataclass
class Wire:
    method: str
    path: str  # with the query
    headers: list[tuple[str, str]]
    body: bytes


@contextmanager
def _clock(at: dt.datetime):
    with mock.patch("botocore.auth.get_current_datetime", return_value=at):
        yield


def sign(
    url: str, method: str, path: str, body: bytes, *, at: dt.datetime | None = None,
    key: str = live.KEY, secret: str = live.SECRET, region: str = live.REGION,
    service: str = "bedrock", headers: dict[str, str] | None = None,
) -> Wire:  # fmt: skip
    at = at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    request = AWSRequest(method=method, url=url + path, data=body, headers=dict(headers or {}))
    with _clock(at):
        SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    host = urlsplit(url).netloc
    wire = [("Host", host), *((k, str(v)) for k, v in request.headers.items())]
    return Wire(method, path, wire, body)


def _header(wire: Wire, name: str) -> str | None:
    return next((v for k, v in wire.headers if k.lower() == name.lower()), None)


def botocore_agrees(url: str, wire: Wire, secret: str = live.SECRET) -> bool:
    """Would botocore, signing the altered request's parts, produce the same signature?"""
    auth = _header(wire, "Authorization") or ""
    if "Signature=" not in auth or "Credential=" not in auth:
        return False
    presented = auth.rsplit("Signature=", 1)[1]
    scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
    signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
    amz = _header(wire, "X-Amz-Date")
    if amz is None or len(scope) != 5:
        return False
    try:
        at = dt.datetime.strptime(amz, "%Y%m%dT%H%M%SZ")
    except ValueError:
        return False  # not a date botocore could have signed with
    headers = {k: v for k, v in wire.headers if k.lower() in signed and k.lower() != "host"}
    host = _header(wire, "Host")
    if host is None:
        return False
    try:
        redo = sign(
            f"http://{host}", wire.method, wire.path, wire.body, at=at, key=scope[0],
            secret=secret, region=scope[2], service=scope[3],
            headers={k: v for k, v in headers.items() if k.lower() != "x-amz-date"},
        )  # fmt: skip
    except ValueError:  # botocore cannot even sign it (a host with a bad port)
        return False
    return (_header(redo, "Authorization") or "").rsplit("Signature=", 1)[-1] == presented


def send(url: str, wire: Wire) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(wire.method, wire.path, skip_host=True, skip_accept_encoding=True)
        for k, v in wire.headers:
            conn.putheader(k, v)
        if wire.body or wire.method == "POST":
            conn.putheader("Content-Length", str(len(wire.body)))
        conn.endheaders(wire.body or None)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def _replace(wire: Wire, name: str, value: str | None) -> Wire:
    headers = [(k, v) for k, v in wire.headers if k.lower() != name.lower()]
    if value is not None:
        headers.append((name, value))
    return Wire(wire.method, wire.path, headers, wire.body)


def cases(url: str) -> list[tuple[str, Wire, bool | None]]:
    """(name, altered request, must be refused?). None: decide by botocore's signature."""
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()
    post = sign(url, "POST", "/model/no.such-model-v1%3A0/converse", body,
                headers={"Content-Type": "application/json"})  # fmt: skip
    get = sign(url, "GET", "/foundation-models?byOutputModality=TEXT&byProvider=meta", b"")
    out: list[tuple[str, Wire, bool | None]] = [
        ("untampered POST", post, False),
        ("untampered GET with query", get, False),
    ]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for base_name, base in (("POST", post), ("GET", get)):
        auth = _header(base, "Authorization") or ""
        signed = auth.split("SignedHeaders=", 1)[1].split(",", 1)[0].split(";")
        for name in signed:
            value = _header(base, name) or ""
            out.append((f"{base_name} header {name} altered", _replace(base, name, value + "x"), None))  # fmt: skip
            out.append((f"{base_name} header {name} removed", _replace(base, name, None), True))
        renamed = [(k.upper() if k.lower() == "x-amz-date" else k, v) for k, v in base.headers]
        out.append((f"{base_name} header name case changed", Wire(base.method, base.path, renamed, base.body), False))  # fmt: skip
        path, _, query = base.path.partition("?")
        for i in range(1, len(path)):
            c = path[i]
            flipped = chr(ord(c) ^ 1) if c not in "%/" else c
            if flipped == c or not flipped.isprintable() or flipped in " ?#%/":
                continue
            altered = path[:i] + flipped + path[i + 1 :] + ("?" + query if query else "")
            out.append((f"{base_name} path byte {i} altered", Wire(base.method, altered, base.headers, base.body), None))  # fmt: skip
        sig = auth.rsplit("Signature=", 1)[1]
        bad_sig = auth[: -len(sig)] + ("0" if sig[0] != "0" else "1") + sig[1:]
        out.append((f"{base_name} signature altered", _replace(base, "Authorization", bad_sig), True))  # fmt: skip
        out.append((f"{base_name} Authorization removed", _replace(base, "Authorization", None), True))  # fmt: skip
        out.append((f"{base_name} X-Amz-Date 16 min old", sign(url, base.method, base.path, base.body, at=now - dt.timedelta(minutes=16), headers=_content_type(base)), True))  # fmt: skip
        out.append((f"{base_name} X-Amz-Date 16 min ahead", sign(url, base.method, base.path, base.body, at=now + dt.timedelta(minutes=16), headers=_content_type(base)), True))  # fmt: skip
        out.append((f"{base_name} X-Amz-Date 14 min old", sign(url, base.method, base.path, base.body, at=now - dt.timedelta(minutes=14), headers=_content_type(base)), False))  # fmt: skip
        out.append((f"{base_name} wrong region", sign(url, base.method, base.path, base.body, region="eu-west-1", headers=_content_type(base)), True))  # fmt: skip
        out.append((f"{base_name} wrong service", sign(url, base.method, base.path, base.body, service="s3", headers=_content_type(base)), True))  # fmt: skip
        out.append((f"{base_name} unknown access key", sign(url, base.method, base.path, base.body, key="AKIANOSUCHKEY0000000", headers=_content_type(base)), True))  # fmt: skip
        out.append((f"{base_name} wrong secret", sign(url, base.method, base.path, base.body, secret="x" * 40, headers=_content_type(base)), True))  # fmt: skip
    for i in range(len(body)):
        altered = body[:i] + bytes([body[i] ^ 0x20]) + body[i + 1 :]
        out.append((f"POST body byte {i} altered", Wire(post.method, post.path, post.headers, altered), True))  # fmt: skip
    out.append(("POST body one byte longer", Wire(post.method, post.path, post.headers, body + b" "), True))  # fmt: skip
    out.append(("POST body one byte shorter", Wire(post.method, post.path, post.headers, body[:-1]), True))  # fmt: skip
    path, _, query = get.path.partition("?")
    pairs = query.split("&")
    for label, q in (
        ("query value altered", query.replace("meta", "metb")),
        ("query parameter added", query + "&maxResults=1"),
        ("query parameter dropped", pairs[0]),
    ):
        out.append((f"GET {label}", Wire("GET", f"{path}?{q}", get.headers, b""), True))
    reordered = "&".join(reversed(pairs))
    out.append(("GET query reordered", Wire("GET", f"{path}?{reordered}", get.headers, b""), False))  # fmt: skip
    return out


def _content_type(wire: Wire) -> dict[str, str]:
    ct = _header(wire, "Content-Type")
    return {"Content-Type": ct} if ct else {}


def run(root: Path) -> dict[str, Any]:
    server = live.server(root, preload=False)
    tried = refused = accepted = 0
    failures: list[str] = []
    parser = create_parser("rest-json")
    try:
        for name, wire, must_refuse in cases(server.url):
            expect = not botocore_agrees(server.url, wire) if must_refuse is None else must_refuse
            status, headers, body = send(server.url, wire)
            tried += 1
            if not expect:
                accepted += 1
                if status == 403:
                    failures.append(f"{name}: refused (403) but should pass: {body[:200]!r}")
                continue
            parsed = parser.parse({"status_code": status, "headers": headers, "body": body}, None)
            code = parsed.get("Error", {}).get("Code")
            if status != 403 or code not in AUTH_ERRORS or not parsed["Error"].get("Message"):
                failures.append(f"{name}: got {status} {code} {body[:200]!r}")
            else:
                refused += 1
        if not server.alive():
            failures.append("server died")
        if leaked := server.secrets_in_log():
            failures.append(f"in the server log: {', '.join(leaked)}")
    finally:
        server.stop()
    return {
        "tried": tried,
        "must_refuse": tried - accepted,
        "refused_403": refused,
        "controls_accepted": accepted - sum("should pass" in f for f in failures),
        "controls": accepted,
        "failures": failures[:20],
        "failed": len(failures),
        "held": not failures,
    }
