"""Contract fuzzing: requests generated from botocore's service models, signed correctly.

For every operation of bedrock-runtime, bedrock, bedrock-agent and bedrock-agent-runtime
that the server serves (an operation it does not know answers UnknownOperationException
and is left out, counted), requests are made from the input shape (:mod:`.shapes`),
serialized by botocore's own serializer, optionally mutated on the wire (:mod:`.mutate`),
signed with ``botocore.auth.SigV4Auth`` and sent. What must hold for each response:

- status < 500, and the server process still alive;
- an error body parses with botocore's parser into an error code the operation's model
  lists (a stream's exception frames: a member of its event stream);
- a success body parses with botocore's parser against the output shape.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import botocore.session
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest, prepare_request_dict
from botocore.credentials import Credentials
from botocore.eventstream import EventStreamBuffer
from botocore.model import OperationModel
from botocore.parsers import create_parser
from botocore.serialize import create_serializer

from outcrop.reliability import live
from outcrop.reliability.mutate import MUTATIONS, mutate
from outcrop.reliability.shapes import ValueMaker

SERVICES = ("bedrock-runtime", "bedrock", "bedrock-agent", "bedrock-agent-runtime")
HINTS: dict[str, list[Any]] = {
    "modelId": [live.SMOL, live.EMBED, "anthropic.claude-3-haiku-20240307-v1:0"],
    "maxTokens": [1, 4],
    "max_tokens": [1, 4],
}
#: What an operation the server does not serve answers: Bedrock's unknown operation, or
#: (bedrock's /v1/data_retention/... paths) OpenAI's 404 under /v1, which has no error type.
NOT_SERVED = ("UnknownOperationException", "404")
#: At most this many examples of each kind of failure are kept for the report.
EXAMPLES = 5


@dataclass
class Tally:
    """Counts for one run; ``failures`` maps a kind to examples."""

    sent: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_mutation: Counter = field(default_factory=Counter)
    failures: dict[str, list[str]] = field(default_factory=dict)
    failed: int = 0
    operations: list[str] = field(default_factory=list)
    not_served: list[str] = field(default_factory=list)
    skipped_serialize: int = 0
    crashed: bool = False
    seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def fail(self, kind: str, example: str) -> None:
        with self._lock:
            self.failed += 1
            examples = self.failures.setdefault(kind, [])
            if len(examples) < EXAMPLES:
                examples.append(example[:500])

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "operations": len(self.operations),
            "not_served": len(self.not_served),
            "status_5xx": sum(n for s, n in self.by_status.items() if s >= 500),
            "failed": self.failed,
            "server_crashed": self.crashed,
            "by_status": dict(sorted(self.by_status.items())),
            "by_mutation": dict(sorted(self.by_mutation.items())),
            "failures": self.failures,
            "seconds": round(self.seconds, 1),
        }


class Fuzzer:
    def __init__(self, server: live.Live, seed: int = 0) -> None:
        self.server = server
        self.seed = seed
        session = botocore.session.get_session()
        self.models = {s: session.get_service_model(s) for s in SERVICES}
        self.credentials = Credentials(live.KEY, live.SECRET)
        self.http = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=16))

    def operations(self) -> list[tuple[str, OperationModel]]:
        return [
            (s, m.operation_model(name))
            for s, m in self.models.items()
            for name in m.operation_names
            if not m.operation_model(name).has_event_stream_input
        ]

    def build(self, op: OperationModel, rng: random.Random, mutation: str | None):
        params = ValueMaker(rng, HINTS).value(op.input_shape) if op.input_shape is not None else {}
        request = create_serializer("rest-json", include_validation=False).serialize_to_request(
            params, op
        )
        if mutation:
            mutate(request, mutation, rng, op.http.get("requestUri", ""))
        prepare_request_dict(request, endpoint_url=self.server.url)
        aws = AWSRequest(
            method=request["method"],
            url=request["url"],
            data=request["body"],
            headers=request["headers"],
        )
        SigV4Auth(self.credentials, "bedrock", live.REGION).add_auth(aws)
        prepared = aws.prepare()
        for value in prepared.headers.values():
            # Header values are printable ASCII on the wire (raw-socket fuzz tries the rest).
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            if text != text.strip() or not all(" " <= c <= "~" for c in text):
                raise ValueError("not a legal header value")
        return prepared

    def send(
        self, service: str, op: OperationModel, seed: int, tally: Tally, probe: bool = False
    ) -> str | None:
        """One request; returns the error code (for the served-or-not probe)."""
        rng = random.Random(seed)
        mutation = rng.choice(MUTATIONS) if rng.random() < 0.6 and not probe else None
        try:
            prepared = self.build(op, rng, mutation)
        except Exception:  # the serializer refuses some generated values: not a server test
            with tally._lock:
                tally.skipped_serialize += 1
            return None
        where = f"{service}.{op.name} seed={seed} mutation={mutation}"
        try:
            resp = self.http.request(
                prepared.method, prepared.url, content=prepared.body, headers=prepared.headers
            )
        except httpx.HTTPError as exc:
            if not self.server.alive():
                tally.crashed = True
                tally.fail("server crashed", f"{where}: {exc!r}")
            else:
                tally.fail("transport error", f"{where}: {exc!r}")
            return None
        with tally._lock:
            tally.sent += 1
            tally.by_status[resp.status_code] += 1
            tally.by_mutation[mutation or "well-formed"] += 1
        return check(service, op, resp, where, tally, probe)

    def run(self, requests: int, workers: int = 4, budget_s: float | None = None) -> Tally:
        tally = Tally()
        started = time.monotonic()
        ops = self.operations()
        # Probe: which operations does this server serve?
        served = []
        for i, (service, op) in enumerate(ops):
            code = self.send(service, op, self.seed * 1_000_003 + i, tally, probe=True)
            if code in NOT_SERVED:
                tally.not_served.append(f"{service}.{op.name}")
            else:
                served.append((service, op))
        tally.operations = [f"{s}.{o.name}" for s, o in served]
        stop = threading.Event()

        def one(i: int) -> None:
            if stop.is_set():
                return
            if budget_s and time.monotonic() - started > budget_s:
                stop.set()
                return
            service, op = served[i % len(served)]
            self.send(service, op, self.seed * 1_000_003 + len(ops) + i, tally)
            if tally.crashed:
                stop.set()

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, range(max(0, requests - len(ops)))))
        tally.seconds = time.monotonic() - started
        return tally


def check(
    service: str, op: OperationModel, resp: httpx.Response, where: str, tally: Tally, probe: bool
):
    status = resp.status_code
    if status >= 500:
        tally.fail(f"status {status}", f"{where}: {resp.text[:300]}")
    parser = create_parser("rest-json")
    raw = {"status_code": status, "headers": dict(resp.headers), "body": resp.content}
    if status >= 300:
        try:
            parsed = parser.parse(raw, op.output_shape)
        except Exception as exc:
            tally.fail("error body not parseable", f"{where}: {exc!r}")
            return None
        code = parsed.get("Error", {}).get("Code")
        allowed = {s.name for s in op.error_shapes}
        if probe and code in NOT_SERVED:
            return code  # an operation this server does not serve
        if code == "UnknownOperationException" and "mutation=label" in where:
            return code  # the mangled path names no operation any more (as on AWS)
        if code not in allowed:
            tally.fail("error not in model", f"{where}: {status} {code} not in {sorted(allowed)}")
        return code
    if op.has_event_stream_output:
        return check_stream(op, resp, where, tally)
    try:
        parser.parse(raw, op.output_shape)
    except Exception as exc:
        tally.fail("success body not parseable", f"{where}: {exc!r}")
    return None


def check_stream(op: OperationModel, resp: httpx.Response, where: str, tally: Tally):
    stream = next(
        (m for m in op.output_shape.members.values() if m.serialization.get("eventstream")),
        None,
    ) or next(
        m for m in op.output_shape.members.values() if getattr(m, "type_name", "") == "structure"
    )
    members = set(stream.members)
    buffer = EventStreamBuffer()
    buffer.add_data(resp.content)
    try:
        for message in buffer:
            headers = message.headers
            kind = headers.get(":message-type")
            if kind == "exception" and headers.get(":exception-type") not in members:
                tally.fail("stream exception not in model", f"{where}: {headers}")
            elif kind == "error":
                tally.fail("stream error frame", f"{where}: {headers}")
            elif kind == "event" and headers.get(":event-type") not in members:
                tally.fail("stream event not in model", f"{where}: {headers}")
    except Exception as exc:
        tally.fail("stream not parseable", f"{where}: {exc!r}")
    return None


def run(root, requests: int, seed: int = 0, workers: int = 4) -> dict[str, Any]:
    """Start a server, fuzz it with ``requests`` requests, and say whether it held."""
    server = live.server(root, "--parallel", "4")
    try:
        out = Fuzzer(server, seed=seed).run(requests, workers=workers).summary()
        out["unhandled_in_log"] = server.unhandled_in_log()
        out["held"] = (
            out["failed"] == 0
            and out["status_5xx"] == 0
            and server.alive()
            and not out["unhandled_in_log"]
        )
        return out
    finally:
        server.stop()
