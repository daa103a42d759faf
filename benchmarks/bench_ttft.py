"""Engine against engine: outcrop vs llama.cpp's llama-server on the very same GGUF file.

Both servers run at once (an idle one costs nothing), same slots, same threads, the same
chat request (outcrop's ConverseStream, llama-server's OpenAI stream, the same system
prompt), and the two are loaded in turn, round after round, so drift on the machine lands
on both alike. Two workloads:

- **burst**: ``--clients`` closed-loop clients, each sending its next request as soon as
  the last one ends (all start together), ``--requests`` in all;
- **poisson**: open-loop arrivals at ``--load`` (0.8) of the capacity the burst measured
  on the slower server, the same arrival times for both.

Prints tokens/s, time-to-first-token p50/p99 and inter-token latency p50/p99 for each,
and the outcrop / llama-server ratios (goal: >= 1.0 for tokens/s, <= 1.0 for the rest).
``--distinct`` gives every request its own prompt (no prefix reuse for either side).

    python benchmarks/bench_ttft.py [--data-dir DIR] [--threads 1] [--clients 32]
        [--requests 64] [--max-tokens 128] [--rounds 2] [--distinct] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from outcrop.bench import llama_server, report
from outcrop.bench.client import BedrockClient, LoadResult, RequestResult, converse_body
from outcrop.bench.runner import machine
from outcrop.bench.serverproc import ServerProcess
from outcrop.models.catalog import Catalog
from outcrop.models.store import model_store
from outcrop.settings import Settings

PROMPT = "Write a story about a lighthouse keeper who finds a message in a bottle."


def prompt_for(i: int, distinct: bool) -> str:
    return f"{PROMPT} It is chapter {i}." if distinct else PROMPT


async def closed_loop(call, n_clients: int, n_requests: int) -> LoadResult:
    """``n_clients`` workers; each sends its next request when the last one ends."""
    results: list[RequestResult] = []
    counter = iter(range(n_requests))

    async def worker() -> None:
        for i in counter:
            results.append(await call(i))

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(n_clients, n_requests))))
    return LoadResult(results, time.perf_counter() - t0, n_clients)


async def open_loop(call, arrivals: list[float]) -> LoadResult:
    """One request at each arrival time (seconds from the start), whatever is running."""
    t0 = time.perf_counter()

    async def at(i: int, when: float) -> RequestResult:
        await asyncio.sleep(max(0.0, t0 + when - time.perf_counter()))
        return await call(i)

    results = await asyncio.gather(*(at(i, t) for i, t in enumerate(arrivals)))
    return LoadResult(list(results), time.perf_counter() - t0, len(arrivals))


class Outcrop:
    name = "outcrop"

    def __init__(self, srv: ServerProcess, model_id: str, max_tokens: int, distinct: bool):
        self.srv, self.model_id, self.max_tokens, self.distinct = (
            srv,
            model_id,
            max_tokens,
            distinct,
        )

    async def run(self, drive) -> LoadResult:
        client = BedrockClient(self.srv.url, self.srv.key, self.srv.secret, max_connections=256)
        try:

            async def call(i: int) -> RequestResult:
                body = converse_body(prompt_for(i, self.distinct), self.max_tokens)
                return await client.converse_stream(self.model_id, body)

            return await drive(call)
        finally:
            await client.aclose()


class LlamaServerSide:
    name = "llama-server"

    def __init__(self, url: str, system: str | None, max_tokens: int, distinct: bool):
        self.url, self.system, self.max_tokens, self.distinct = url, system, max_tokens, distinct

    async def run(self, drive) -> LoadResult:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(timeout=600, limits=limits) as http:

            async def call(i: int) -> RequestResult:
                body = llama_server.chat_body(
                    prompt_for(i, self.distinct), self.max_tokens, self.system
                )
                return await llama_server._stream_chat(http, self.url, body)

            return await drive(call)


def summary_line(name: str, s: dict[str, Any]) -> str:
    return (
        f"{name:>13}: {s['output_tokens_per_s']:7.1f} tok/s  TTFT p50 {s['ttft_p50_ms']:7.1f} "
        f"p99 {s['ttft_p99_ms']:7.1f} ms  ITL p50 {s['itl_p50_ms']:6.1f} p99 "
        f"{s['itl_p99_ms']:6.1f} ms  errors {s['errors']}"
    )


def ratios(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, float | None]:
    return {
        key: report.ratio(ours[key], theirs[key])
        for key in ("output_tokens_per_s", "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms")
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--model", default="huggingface.smollm2-135m-instruct-v1:0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--load", type=float, default=0.8, help="Poisson rate / burst capacity")
    p.add_argument("--poisson-requests", type=int, default=64)
    p.add_argument("--distinct", action="store_true", help="a distinct prompt per request")
    p.add_argument("--workloads", default="burst,poisson")
    p.add_argument("--json", type=Path)
    a = p.parse_args()

    settings = Settings(**({"data_dir": a.data_dir} if a.data_dir else {}))
    data_dir = settings.data_dir
    card = Catalog().get(a.model)
    served = model_store(settings).ensure(card, progress=True)
    binary = llama_server.binary_path(data_dir / "cache")
    if not binary.exists():
        binary = llama_server.build(data_dir / "cache", print)
    work = Path(tempfile.mkdtemp(prefix="outcrop-bench-ttft-"))
    n_ctx = 1024
    out: dict[str, Any] = {
        "machine": machine(),
        "model": a.model, "file": served.name, "threads": a.threads, "clients": a.clients,
        "requests": a.requests, "max_tokens": a.max_tokens, "rounds": a.rounds,
        "distinct_prompts": a.distinct,
    }  # fmt: skip
    print(f"CPU flags: {out['machine']['flags']}; file {served.name}; {a.threads} thread(s)")
    with (
        ServerProcess(
            data_dir, parallel=a.clients, threads=a.threads, max_queue=max(256, a.requests),
            n_ctx=n_ctx, log_path=work / "outcrop.log",
        ) as srv,
        llama_server.LlamaServer(
            binary, served, parallel=a.clients, n_ctx_per_seq=n_ctx, threads=a.threads,
            log_path=work / "llama-server.log",
        ) as ls,
    ):  # fmt: skip
        sides = [
            Outcrop(srv, a.model, a.max_tokens, a.distinct),
            LlamaServerSide(ls.url, card.default_system, a.max_tokens, a.distinct),
        ]
        for side in sides:  # load weights, warm caches
            asyncio.run(side.run(lambda call: closed_loop(call, 2, 2)))
        runs: dict[str, dict[str, list[LoadResult]]] = {}
        workloads = a.workloads.split(",")
        if "burst" in workloads:
            for rnd in range(a.rounds):
                for side in sides if rnd % 2 == 0 else reversed(sides):
                    print(f"burst round {rnd + 1}: {side.name}")
                    load = asyncio.run(
                        side.run(lambda call: closed_loop(call, a.clients, a.requests))
                    )
                    runs.setdefault("burst", {}).setdefault(side.name, []).append(load)
        if "poisson" in workloads:
            if "burst" in runs:
                capacity = min(
                    report.summarize_load(report.pooled(r))["requests_per_s"]
                    for r in runs["burst"].values()
                )
            else:
                capacity = a.clients / (a.max_tokens * 0.1)
            rate = a.load * capacity
            rng = random.Random(7)
            t, arrivals = 0.0, []
            for _ in range(a.poisson_requests):
                t += rng.expovariate(rate)
                arrivals.append(t)
            out["poisson_rate_per_s"] = round(rate, 3)
            print(f"poisson: {rate:.2f} requests/s ({a.load} of {capacity:.2f})")
            for rnd in range(a.rounds):
                for side in sides if rnd % 2 == 0 else reversed(sides):
                    print(f"poisson round {rnd + 1}: {side.name}")
                    load = asyncio.run(side.run(lambda call: open_loop(call, arrivals)))
                    runs.setdefault("poisson", {}).setdefault(side.name, []).append(load)
        out["peak_rss_bytes"] = {"outcrop": srv.peak_rss(), "llama-server": ls.peak_rss()}

    for workload, by_side in runs.items():
        summaries = {name: report.summarize_load(report.pooled(r)) for name, r in by_side.items()}
        r = ratios(summaries["outcrop"], summaries["llama-server"])
        out[workload] = {**summaries, "ratios": r}
        print(f"\n{workload} ({a.rounds} rounds pooled):")
        for name, s in summaries.items():
            print(summary_line(name, s))
            if s["errors"]:
                print(f"{'':>15}first error: {s['first_error']}")
        print(
            f"   outcrop / llama-server: tokens/s {r['output_tokens_per_s']}x (goal >= 1), "
            f"TTFT p50 {r['ttft_p50_ms']}x, p99 {r['ttft_p99_ms']}x, ITL p50 "
            f"{r['itl_p50_ms']}x, p99 {r['itl_p99_ms']}x (goal <= 1)"
        )
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
