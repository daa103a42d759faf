"""Wire responses: JSON bodies and errors in the shape botocore parses."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.responses import Response

from outcrop.errors import OutcropError


def new_request_id() -> str:
    return str(uuid.uuid4())


def json_response(
    body: Any, request_id: str, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    h = {"x-amzn-RequestId": request_id}
    if headers:
        h.update(headers)
    return Response(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
        status_code=status,
        media_type="application/json",
        headers=h,
    )


def error_response(error: OutcropError, request_id: str) -> Response:
    return Response(
        json.dumps({"message": error.message}).encode(),
        status_code=error.status,
        media_type="application/json",
        headers={"x-amzn-RequestId": request_id, "x-amzn-ErrorType": error.shape},
    )
