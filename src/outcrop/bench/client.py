"""A cheap load generator: httpx.AsyncClient, SigV4 by botocore, event-stream by botocore.

One asyncio loop drives every client, so the generator costs little CPU next to the server
it measures. Times are ``time.perf_counter()`` seconds.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer

REGION = "us-east-1"


@dataclass
class RequestResult:
    started: float
    first_token: float | None = None
    finished: float = 0.0
    delta_times: list[float] = field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started

    @property
    def inter_token(self) -> list[float]:
        t = self.delta_times
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    @property
    def decode_rate(self) -> float | None:
        """Tokens/s between the first and the last streamed delta (prefill excluded)."""
        t = self.delta_times
        if len(t) < 2 or t[-1] <= t[0]:
            return None
        return (len(t) - 1) / (t[-1] - t[0])


@dataclass
class LoadResult:
    requests: list[RequestResult]
    wall_s: float
    concurrency: int


def converse_body(prompt: str, max_tokens: int, temperature: float = 0.0) -> dict[str, Any]:
    return {
        "messages": [{"role": "user", "content": [{"text": prompt}]}],
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": temperature},
    }


class BedrockClient:
    """Signed Converse / ConverseStream calls against one endpoint."""

    def __init__(self, url: str, key: str, secret: str, max_connections: int = 64) -> None:
        self.url = url.rstrip("/")
        self._signer = SigV4Auth(Credentials(key, secret), "bedrock", REGION)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(600.0, connect=30.0),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def _signed(self, model_id: str, op: str, body: bytes) -> tuple[str, dict[str, str]]:
        url = f"{self.url}/model/{quote(model_id, safe='')}/{op}"
        req = AWSRequest("POST", url, data=body, headers={"Content-Type": "application/json"})
        self._signer.add_auth(req)
        return url, dict(req.headers.items())

    async def converse(self, model_id: str, body: dict[str, Any]) -> RequestResult:
        data = json.dumps(body).encode()
        url, headers = self._signed(model_id, "converse", data)
        # The clock starts when the request leaves: signing is the client's own cost.
        result = RequestResult(started=time.perf_counter())
        try:
            response = await self.http.post(url, content=data, headers=headers)
            result.finished = time.perf_counter()
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {response.text[:200]}"
                return result
            usage = response.json().get("usage", {})
            result.input_tokens = usage.get("inputTokens", 0)
            result.output_tokens = usage.get("outputTokens", 0)
        except httpx.HTTPError as exc:
            result.finished = time.perf_counter()
            result.error = f"{type(exc).__name__}: {exc}"
        return result

    async def converse_stream(self, model_id: str, body: dict[str, Any]) -> RequestResult:
        data = json.dumps(body).encode()
        url, headers = self._signed(model_id, "converse-stream", data)
        # The clock starts when the request leaves: signing is the client's own cost.
        result = RequestResult(started=time.perf_counter())
        try:
            async with self.http.stream("POST", url, content=data, headers=headers) as response:
                if response.status_code != 200:
                    text = (await response.aread()).decode("utf-8", "replace")
                    result.error = f"HTTP {response.status_code}: {text[:200]}"
                    return result
                buffer = EventStreamBuffer()
                async for raw in response.aiter_raw():
                    now = time.perf_counter()
                    buffer.add_data(raw)
                    for message in buffer:
                        self._on_event(result, message, now)
        except httpx.HTTPError as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.finished = time.perf_counter()
        return result

    @staticmethod
    def _on_event(result: RequestResult, message: Any, now: float) -> None:
        headers = message.headers
        if headers.get(":message-type") != "event":
            result.error = f"{headers.get(':exception-type')}: {message.payload[:200]!r}"
            return
        kind = headers.get(":event-type")
        if kind == "contentBlockDelta":
            if result.first_token is None:
                result.first_token = now
            result.delta_times.append(now)
        elif kind == "metadata":
            usage = json.loads(message.payload).get("usage", {})
            result.input_tokens = usage.get("inputTokens", 0)
            result.output_tokens = usage.get("outputTokens", 0)


async def run_load(
    client: BedrockClient,
    model_id: str,
    body: dict[str, Any],
    concurrency: int,
    n_requests: int,
    *,
    stream: bool = True,
) -> LoadResult:
    """``concurrency`` workers send ``n_requests`` in all, each one after its previous."""
    remaining = n_requests
    results: list[RequestResult] = []
    call = client.converse_stream if stream else client.converse

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            results.append(await call(model_id, body))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n_requests))))
    return LoadResult(results, time.perf_counter() - t0, concurrency)
