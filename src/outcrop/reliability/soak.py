"""Soak: many clients at once for minutes, a mix of every kind of call, some of which
hang up mid-stream. What must hold: no failed request except ThrottlingException / 429
(the documented answer when a model's queue is full), server memory after warm-up grows
by less than 5 %, open file descriptors stay flat, and the engine's running sequences and
queue are back to 0 once the clients stop.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from botocore.exceptions import ClientError

from outcrop.reliability import live

CHAT = "anthropic.claude-3-haiku-20240307-v1:0"  # an alias of SMOL on the soak server
EMBED = "amazon.titan-embed-text-v2:0"  # an alias of the embedding model
KINDS = (
    "converse_stream",
    "converse",
    "invoke_model",
    "embeddings",
    "openai_stream",
    "disconnect_bedrock_stream",
    "disconnect_openai_stream",
)
MESSAGES = [{"role": "user", "content": [{"text": "Count from one to ten."}]}]


class Client(threading.Thread):
    def __init__(self, server: live.Live, deadline: float, seed: int, out: Counter, fails):
        super().__init__(daemon=True)
        self.server, self.deadline, self.rng = server, deadline, random.Random(seed)
        self.out, self.fails = out, fails
        self.runtime = server.client("bedrock-runtime")
        self.http = httpx.Client(
            base_url=server.url, timeout=300, headers={"Authorization": f"Bearer {live.API_KEY}"}
        )

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            kind = self.rng.choice(KINDS)
            try:
                getattr(self, kind)()
                self.out[f"{kind}:ok"] += 1
            except ClientError as exc:
                code = exc.response["Error"]["Code"]
                if code == "ThrottlingException":
                    self.out[f"{kind}:429"] += 1
                else:
                    self._fail(kind, f"{code}: {exc}")
            except Throttled:
                self.out[f"{kind}:429"] += 1
            except Exception as exc:  # anything else is a failure to report
                self._fail(kind, repr(exc))
        self.http.close()

    def _fail(self, kind: str, text: str) -> None:
        self.out[f"{kind}:failed"] += 1
        if len(self.fails) < 20:
            self.fails.append(f"{kind}: {text[:300]}")

    def converse_stream(self) -> None:
        resp = self.runtime.converse_stream(
            modelId=CHAT, messages=MESSAGES, inferenceConfig={"maxTokens": 16}
        )
        events = [e for e in resp["stream"]]
        assert "messageStop" in events[-2] or "metadata" in events[-1], events[-1]

    def converse(self) -> None:
        out = self.runtime.converse(
            modelId=CHAT, messages=MESSAGES, inferenceConfig={"maxTokens": 16}
        )
        assert out["output"]["message"]["content"]

    def invoke_model(self) -> None:
        body = {
            "anthropic_version": "bedrock-2023-05-31",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": "Count from one to ten."}],
        }
        out = json.loads(
            self.runtime.invoke_model(modelId=CHAT, body=json.dumps(body))["body"].read()
        )
        assert out["content"]

    def embeddings(self) -> None:
        body = json.dumps({"inputText": f"soak text {self.rng.random()}"})
        out = json.loads(self.runtime.invoke_model(modelId=EMBED, body=body)["body"].read())
        assert len(out["embedding"]) > 0

    def _openai(self, stop_after: int | None) -> None:
        body = {
            "model": CHAT,
            "stream": True,
            "max_tokens": 16 if stop_after is None else 200,
            "messages": [{"role": "user", "content": "Count from one to ten."}],
        }
        with self.http.stream("POST", "/v1/chat/completions", json=body) as resp:
            if resp.status_code == 429:
                raise Throttled()
            if resp.status_code != 200:
                raise AssertionError(f"{resp.status_code} {resp.read()[:200]!r}")
            lines = 0
            for line in resp.iter_lines():
                lines += bool(line.strip())
                if stop_after is not None and lines >= stop_after:
                    return  # leaving the block closes the connection mid-stream
            assert lines > 1

    def openai_stream(self) -> None:
        self._openai(None)

    def disconnect_openai_stream(self) -> None:
        self._openai(2)

    def disconnect_bedrock_stream(self) -> None:
        resp = self.runtime.converse_stream(
            modelId=CHAT, messages=MESSAGES, inferenceConfig={"maxTokens": 200}
        )
        stream = resp["stream"]
        for i, _event in enumerate(stream):
            if i >= 2:
                break
        stream.close()  # hang up mid-stream


class Throttled(Exception):
    pass


def _once(client: Client, kind: str) -> None:
    try:
        getattr(client, kind)()
    except Exception:  # a warm-up call that fails is not counted; the soak counts its own
        pass
    client.http.close()


def run(root: Path, clients: int = 8, seconds: float = 60) -> dict[str, Any]:
    # Both models loaded before the clock starts: loading is not growth.
    server = live.server(
        root, "--parallel", "8", "--prompt-cache-mb", "32", "--preload", live.EMBED
    )
    counts: Counter = Counter()
    fails: list[str] = []
    try:
        # Warm-up burst before the clock: every kind of call, ``clients`` at once, so the
        # KV-cache pages of every slot, lazy imports and allocator arenas are touched once
        # (a 45 s run measured +12.7 % without it, all of it first-touch).
        burst = Counter()
        for kind in KINDS:
            warmers = [Client(server, 0, i, burst, []) for i in range(clients)]
            pool = [threading.Thread(target=_once, args=(w, kind), daemon=True) for w in warmers]
            for t in pool:
                t.start()
            for t in pool:
                t.join()
        warmup = min(30.0, seconds * 0.25)
        started = time.monotonic()
        deadline = started + seconds
        threads = [Client(server, deadline, i, counts, fails) for i in range(clients)]
        for t in threads:
            t.start()
        # Warm-up: every kind of call has run once (lazy imports, caches, arenas).
        while time.monotonic() - started < seconds * 0.5 and (
            time.monotonic() - started < warmup
            or any(counts[f"{k}:ok"] + counts[f"{k}:429"] == 0 for k in KINDS)
        ):
            time.sleep(0.5)
        rss_warm, fds_warm = server.rss_bytes(), server.open_fds()
        samples = [(round(time.monotonic() - started), rss_warm, fds_warm)]
        while any(t.is_alive() for t in threads):
            time.sleep(min(10.0, max(1.0, seconds / 20)))
            samples.append(
                (round(time.monotonic() - started), server.rss_bytes(), server.open_fds())
            )
        for t in threads:
            t.join()
        gauges = live.engine_gauges(server.url)
        for _ in range(30):
            if gauges == (0.0, 0.0):
                break
            time.sleep(1)
            gauges = live.engine_gauges(server.url)
        rss_end, fds_end = server.rss_bytes(), server.open_fds()
        alive = server.alive()
    finally:
        server.stop()
    failed = sum(n for k, n in counts.items() if k.endswith(":failed"))
    growth = (rss_end - rss_warm) / rss_warm * 100
    held = failed == 0 and growth < 5 and fds_end <= fds_warm + 4 and gauges == (0.0, 0.0) and alive
    return {
        "clients": clients,
        "seconds": seconds,
        "requests": sum(counts.values()),
        "ok": sum(n for k, n in counts.items() if k.endswith(":ok")),
        "throttled_429": sum(n for k, n in counts.items() if k.endswith(":429")),
        "failed": failed,
        "by_kind": dict(sorted(counts.items())),
        "rss_mb_after_warmup": round(rss_warm / 2**20, 1),
        "rss_mb_end": round(rss_end / 2**20, 1),
        "rss_growth_pct": round(growth, 2),
        "fds_after_warmup": fds_warm,
        "fds_end": fds_end,
        "running_and_queued_at_end": gauges,
        "samples_s_rss_fds": [(s, round(r / 2**20, 1), f) for s, r, f in samples],
        "failures": fails,
        "held": held,
    }
