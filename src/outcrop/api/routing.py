"""Routing on the raw (still percent-encoded) path.

botocore sends ``/model/arn%3Aaws%3A...%2Fabc/converse``: decoding first would split an
ARN's ``/`` into extra segments. So the raw path is split on ``/`` and only then is
each segment percent-decoded.

A path prefix may declare its own error style (``/v1`` speaks OpenAI's error shape): the
app asks :meth:`Router.error_renderer` which renderer to use, Bedrock's by default.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

Handler = Callable[..., Awaitable[Any]]
ErrorRenderer = Callable[[Any, str], Any]
"""``(OutcropError, request_id) -> Response``: how errors look on the wire under a prefix."""


@dataclass(frozen=True)
class Route:
    method: str
    parts: tuple[str, ...]  # literal segments, or "{name}" for a label
    handler: Handler
    operation: str


class Router:
    def __init__(self) -> None:
        self._routes: list[Route] = []
        self._error_styles: list[tuple[str, ErrorRenderer]] = []

    def add(self, method: str, template: str, handler: Handler, operation: str) -> None:
        parts = tuple(p for p in template.strip("/").split("/") if p)
        self._routes.append(Route(method, parts, handler, operation))

    def errors_under(self, prefix: str, render: ErrorRenderer) -> None:
        """Render errors of every request under ``prefix`` (``"/v1"``) with ``render``."""
        self._error_styles.append((prefix.rstrip("/"), render))

    def error_renderer(self, raw_path: str) -> ErrorRenderer | None:
        """The renderer declared for ``raw_path``'s prefix; None means Bedrock's shape."""
        path = raw_path.split("?", 1)[0]
        for prefix, render in self._error_styles:
            if path == prefix or path.startswith(prefix + "/"):
                return render
        return None

    def match(self, method: str, raw_path: str) -> tuple[Route, dict[str, str]] | None | bool:
        """The route and its decoded labels; False when the path exists for another method."""
        segments = [unquote(s) for s in raw_path.split("?", 1)[0].strip("/").split("/") if s]
        path_known = False
        for route in self._routes:
            labels = _match_parts(route.parts, segments)
            if labels is None:
                continue
            if route.method == method:
                return route, labels
            path_known = True
        return False if path_known else None


def _match_parts(parts: tuple[str, ...], segments: list[str]) -> dict[str, str] | None:
    if len(parts) != len(segments):
        return None
    labels: dict[str, str] = {}
    for part, seg in zip(parts, segments, strict=True):
        if part.startswith("{"):
            labels[part[1:-1]] = seg
        elif part != seg:
            return None
    return labels
