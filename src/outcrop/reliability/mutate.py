"""Wire mutations of a serialized botocore request (before it is signed).

Each mutation names one way a client gets a request wrong: a member dropped, a value of
the wrong type, strings and lists far past their limits, nesting deep enough to break a
recursive parser, bytes that are not UTF-8, JSON that is not JSON, a mangled path label
or query. The request stays correctly signed: only the server's parsing is on trial.
"""

from __future__ import annotations

import json
import random
from typing import Any

MUTATIONS = (
    "drop-member",
    "wrong-type",
    "huge-string",
    "huge-list",
    "deep-nesting",
    "very-deep-nesting",
    "bad-utf8",
    "lone-surrogate",
    "not-json",
    "empty-body",
    "nan-and-huge-numbers",
    "label",
    "query",
    "content-type",
)
WRONG = [None, True, 0, -1, 1.5, "", "text", [], {}, [None], {"": {}}, 2**70]


def _nodes(value: Any, path: tuple = ()) -> list[tuple]:
    """Paths to every node below the root (dict keys and list indexes)."""
    out = []
    if isinstance(value, dict):
        for k, v in value.items():
            out.append((*path, k))
            out.extend(_nodes(v, (*path, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out.append((*path, i))
            out.extend(_nodes(v, (*path, i)))
    return out


def _set(root: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        root = root[part]
    root[path[-1]] = value


def _delete(root: Any, path: tuple) -> None:
    for part in path[:-1]:
        root = root[part]
    del root[path[-1]]


def _json_body(request: dict) -> Any:
    body = request.get("body") or b""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def mutate(request: dict, mutation: str, rng: random.Random, template: str = "") -> None:
    """Mutate ``request`` in place; ``template`` is the requestUri (labels in braces)."""
    fixed = template.split("?", 1)[0].split("/")
    doc = _json_body(request)
    nodes = _nodes(doc) if doc is not None else []
    target = rng.choice(nodes) if nodes else None
    body: bytes | None = None
    if mutation == "drop-member" and target:
        _delete(doc, target)
    elif mutation == "wrong-type":
        if target:
            _set(doc, target, rng.choice(WRONG))
        else:
            doc = {"unexpected": rng.choice(WRONG)}
    elif mutation == "huge-string":
        big = rng.choice(["x", "é", "🦜"]) * rng.choice([70_000, 1_000_000])
        if target:
            _set(doc, target, big)
        else:
            doc = {"x": big}
    elif mutation == "huge-list":
        big = [rng.choice(WRONG[:9])] * rng.choice([1_000, 100_000])
        if target:
            _set(doc, target, big)
        else:
            doc = {"x": big}
    elif mutation in ("deep-nesting", "very-deep-nesting"):
        depth = 500 if mutation == "deep-nesting" else 200_000
        key = str(target[0]) if target else "x"
        body = b'{"' + key.encode() + b'": ' + b"[" * depth + b"]" * depth + b"}"
    elif mutation == "bad-utf8":
        raw = json.dumps(doc or {"x": "y"}).encode()
        at = raw.find(b'"', 1) + 1 or 1
        body = raw[:at] + rng.choice([b"\xff\xfe", b"\xc3", b"\xed\xa0\x80"]) + raw[at:]
    elif mutation == "lone-surrogate":
        if target:
            _set(doc, target, "\ud800x")
        else:
            doc = {"x": "\udfff"}
        body = json.dumps(doc).encode()  # json escapes it as \ud800: valid JSON, bad text
    elif mutation == "not-json":
        body = rng.choice([b"{", b"[1,2]", b"null", b'"str"', b"\x00\x01", b"{}}", b"{'a':1}"])
    elif mutation == "empty-body":
        body = b""
    elif mutation == "nan-and-huge-numbers":
        text = json.dumps(doc or {})
        body = (text[:-1] + (", " if len(text) > 2 else "") + rng.choice(
            ['"n": NaN}', '"n": Infinity}', '"n": 1e400}', '"n": ' + "9" * 5000 + "}"]
        )).encode()  # fmt: skip
    elif mutation == "label":
        # Only segments that hold a label: a changed literal names another operation.
        parts = request["url_path"].split("/")
        labels = [i for i, p in enumerate(parts) if i < len(fixed) and fixed[i].startswith("{")]
        if labels:
            i = rng.choice(labels)
            parts[i] = rng.choice(["", "..", "%2e%2e", "%ff%fe", "a" * 10_000, "%00", "%"])
            request["url_path"] = "/".join(parts)
    elif mutation == "query":
        junk = rng.choice(
            [{"maxResults": "-1"}, {"nextToken": "\xff" * 3}, {"maxResults": "9" * 30},
             {"sortBy": "nope", "sortOrder": "Sideways"}, {"x": "y" * 5000}]
        )  # fmt: skip
        query = request.get("query_string") or {}
        if isinstance(query, dict):
            query.update(junk)
            request["query_string"] = query
    elif mutation == "content-type":
        request["headers"]["Content-Type"] = rng.choice(
            ["text/plain", "application/x-www-form-urlencoded", "", "application/json; charset=latin-1"]
        )  # fmt: skip
    if body is None and doc is not None and mutation not in ("label", "query", "content-type"):
        body = json.dumps(doc).encode()
    if body is not None:
        request["body"] = body
