"""Random values for botocore shapes: well-formed by the model, with extremes.

``ValueMaker(rng).value(shape)`` follows the shape (required members, enums, min/max,
list and map lengths, unions with one member) but picks its values at the edges: empty
and maximum lengths, unusual unicode, integer bounds. A ``hints`` dict biases members by
name (``modelId`` -> a model the server has) so requests get past the first lookup.
"""

from __future__ import annotations

import base64
import datetime as dt
import random
from typing import Any

from botocore.model import Shape

#: Text that has broken parsers and renderers elsewhere: NUL, RTL, combining marks, emoji,
#: a lone-surrogate lookalike, template syntax.
ODD_TEXT = [
    "",
    " ",
    "\x00",
    "héllo wörld",
    "\u202eevil",
    "e\u0301\u0301\u0301",
    "🦜" * 8,
    "{{ 7*7 }}{% raw %}",
    "<|im_end|>",
    "%s%n%x",
    "../../etc/passwd",
    "\ufeff\u200b",
    "null",
]
MAX_DEPTH = 6
MAX_LIST = 4


class ValueMaker:
    def __init__(self, rng: random.Random, hints: dict[str, list[Any]] | None = None) -> None:
        self.rng = rng
        self.hints = hints or {}

    def value(self, shape: Shape, name: str = "", depth: int = 0) -> Any:
        if name in self.hints and self.rng.random() < 0.8:
            return self.rng.choice(self.hints[name])
        kind = shape.type_name
        maker = getattr(self, "_" + kind, None)
        if maker is None:
            return None
        return maker(shape, depth)

    def _structure(self, shape: Shape, depth: int) -> dict[str, Any]:
        members = shape.members
        if getattr(shape, "is_tagged_union", False):
            if not members:
                return {}
            name = self.rng.choice(list(members))
            return {name: self.value(members[name], name, depth + 1)}
        required = set(shape.required_members)
        out: dict[str, Any] = {}
        for name, member in members.items():
            if name in required or (depth < MAX_DEPTH and self.rng.random() < 0.4):
                if member.type_name in ("structure", "list", "map") and depth >= MAX_DEPTH:
                    if name not in required:
                        continue
                v = self.value(member, name, depth + 1)
                if v in ("", ".", "..") and member.serialization.get("location") == "uri":
                    # An empty or dot label names another path (clients drop dot segments).
                    v = "x"
                if v is not None:
                    out[name] = v
        return out

    def _list(self, shape: Shape, depth: int) -> list[Any]:
        lo = shape.metadata.get("min", 0)
        hi = min(shape.metadata.get("max", MAX_LIST), MAX_LIST)
        n = self.rng.randint(min(lo, hi), max(lo, hi)) if depth < MAX_DEPTH else lo
        return [self.value(shape.member, "", depth + 1) for _ in range(n)]

    def _map(self, shape: Shape, depth: int) -> dict[str, Any]:
        n = self.rng.randint(0, 2) if depth < MAX_DEPTH else 0
        return {
            str(self._string(shape.key, depth)) or "k": self.value(shape.value, "", depth + 1)
            for _ in range(n)
        }

    def _string(self, shape: Shape, depth: int) -> str:
        if shape.enum:
            return self.rng.choice(shape.enum)
        lo = shape.metadata.get("min", 0)
        hi = shape.metadata.get("max", 64)
        pick = self.rng.random()
        if pick < 0.3:
            text = self.rng.choice(ODD_TEXT)
        elif pick < 0.4:
            text = "x" * min(hi, 4096)  # at the maximum the model allows
        else:
            text = "".join(
                self.rng.choice("abcdefghijklmnopqrstuvwxyz0123456789-_.:/")
                for _ in range(self.rng.randint(1, 24))
            )
        if len(text) < lo:
            text += "a" * (lo - len(text))
        return text

    def _integer(self, shape: Shape, depth: int) -> int:
        lo = shape.metadata.get("min", -(2**31))
        hi = shape.metadata.get("max", 2**31 - 1)
        return self.rng.choice([lo, hi, 0, 1, self.rng.randint(int(lo), int(hi))])

    _long = _integer

    def _float(self, shape: Shape, depth: int) -> float:
        lo = shape.metadata.get("min", -1e9)
        hi = shape.metadata.get("max", 1e9)
        return self.rng.choice([float(lo), float(hi), 0.0, self.rng.uniform(lo, hi)])

    _double = _float

    def _boolean(self, shape: Shape, depth: int) -> bool:
        return self.rng.random() < 0.5

    def _timestamp(self, shape: Shape, depth: int) -> dt.datetime:
        return self.rng.choice(
            [
                dt.datetime(1970, 1, 1, tzinfo=dt.UTC),
                dt.datetime(2038, 1, 19, 3, 14, 8, tzinfo=dt.UTC),
                dt.datetime.now(dt.UTC),
            ]
        )

    def _blob(self, shape: Shape, depth: int) -> bytes:
        choices = [
            b"",
            b'{"prompt": "hi", "max_tokens": 4}',
            b'{"inputText": "hi"}',
            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}',
            bytes(self.rng.randrange(256) for _ in range(32)),
            base64.b64encode(b"not json"),
        ]
        return self.rng.choice(choices)

    def _document(self, shape: Shape, depth: int) -> Any:
        return self.rng.choice([{}, {"a": [1, "b", None]}, [], "text", 1.5, None])
