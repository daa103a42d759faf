"""Prompt caching: the same workloads against a server with caching off and one with it on.

    python benchmarks/bench_prompt_cache.py [--data-dir DIR] [--model ID] [--clients 8]
        [--rounds 2] [--system-tokens 1500] [--turns 10] [--threads 1] [--json OUT]

Two servers run one after the other (never at once, so they do not share the cores):
``--prompt-cache-mb 0`` (no reuse at all) and the default cache. Each gets:

1. **Agent workload**: a ~1,500-token system prompt plus a tool list shared by every
   request (``cachePoint`` after each, as a Bedrock agent would send), short distinct
   questions, ``--clients`` concurrent ConverseStream clients, ``--rounds`` requests
   each. One request primes the server first, so on the cached server every measured
   request can hit. Reported: TTFT p50/p95, requests/s, the cache read/write usage.
2. **Multi-turn chat**: one client, ``--turns`` turns, each resending the whole history
   (the previous answers included). Reported: prompt tokens the engine computed
   (``prompt_tokens_computed`` from ``/outcrop/ps``) against the tokens that were new in
   each turn.
3. **Memory**: the server's peak RSS and the bytes its prompt cache holds at the end.

Ratios (off / on) are printed; every number goes to ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from outcrop.bench.client import REGION, BedrockClient
from outcrop.bench.serverproc import ServerProcess

SMOL = "huggingface.smollm2-135m-instruct-v1:0"
TOPICS = (
    "billing", "shipping", "returns", "warranty", "accounts", "passwords", "invoices",
    "refunds", "coupons", "delivery", "orders", "subscriptions",
)  # fmt: skip
CACHE = {"cachePoint": {"type": "default"}}


def agent_system(target_tokens: int) -> str:
    """A support agent's long instructions: ~17 tokens per numbered policy line."""
    lines = ["You are the support agent of Outcrop Outfitters. Follow every policy below."]
    i = 0
    while len(lines) * 17 < target_tokens:
        topic = TOPICS[i % len(TOPICS)]
        lines.append(
            f"Policy {i + 1}: for {topic} questions, check the account first, then answer briefly."
        )
        i += 1
    return "\n".join(lines)


TOOLS = {
    "tools": [
        {
            "toolSpec": {
                "name": name,
                "description": description,
                "inputSchema": {"json": {"type": "object", "properties": props}},
            }
        }
        for name, description, props in (
            ("lookup_order", "Find an order by its number.", {"order_id": {"type": "string"}}),
            (
                "refund",
                "Refund an order, fully or in part.",
                {"order_id": {"type": "string"}, "amount": {"type": "number"}},
            ),
            ("track_parcel", "Where a parcel is now.", {"tracking": {"type": "string"}}),
        )
    ]
    + [CACHE]
}


def agent_body(system: str, question: str, max_tokens: int) -> dict[str, Any]:
    return {
        "system": [{"text": system}, CACHE],
        "messages": [{"role": "user", "content": [{"text": question}]}],
        "toolConfig": TOOLS,
        "inferenceConfig": {"maxTokens": max_tokens, "temperature": 0.0},
    }


def signed_get(server: ServerProcess, path: str) -> dict[str, Any]:
    req = AWSRequest("GET", server.url + path)
    SigV4Auth(Credentials(server.key, server.secret), "bedrock", REGION).add_auth(req)
    return httpx.get(req.url, headers=dict(req.headers), timeout=30).json()


def engine_stats(server: ServerProcess, model: str) -> dict[str, Any]:
    return next(m for m in signed_get(server, "/outcrop/ps")["models"] if m["modelId"] == model)


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def agent_phase(server: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    system = agent_system(args.system_tokens)
    client = BedrockClient(server.url, server.key, server.secret)
    try:
        await client.converse_stream(args.model, agent_body(system, "Hello?", args.max_tokens))
        # One request alone: its TTFT is pure prefill, without the other clients' load.
        solo = await client.converse_stream(
            args.model, agent_body(system, "Where is order 999?", args.max_tokens)
        )
        usages: list[dict[str, int]] = []
        results = []

        async def worker(c: int) -> None:
            for r in range(args.rounds):
                question = f"Customer {c}-{r}: where is my order number {1000 + 37 * c + r}?"
                body = agent_body(system, question, args.max_tokens)
                results.append(await client.converse_stream(args.model, body))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in range(args.clients)))
        wall = time.perf_counter() - t0
        # One non-streamed call shows the usage fields a client sees.
        url, kwargs = _signed_converse(
            server, args.model, agent_body(system, "Thanks!", args.max_tokens)
        )
        done = await client.http.post(url, **kwargs)
        usages.append(done.json().get("usage", {}))
    finally:
        await client.aclose()
    errors = [r.error for r in results if r.error]
    ttfts = [r.ttft for r in results if r.ttft is not None]
    return {
        "requests": len(results),
        "errors": errors[:3],
        "wall_s": wall,
        "requests_per_s": len(results) / wall,
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "ttft_p95_s": pct(ttfts, 0.95),
        "solo_ttft_s": solo.ttft,
        "last_usage": usages[-1] if usages else {},
    }


def _signed_converse(server: ServerProcess, model: str, body: dict[str, Any]):
    from urllib.parse import quote

    data = json.dumps(body).encode()
    url = f"{server.url}/model/{quote(model, safe='')}/converse"
    req = AWSRequest("POST", url, data=data, headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(server.key, server.secret), "bedrock", REGION).add_auth(req)
    return url, {"content": data, "headers": dict(req.headers.items())}


def _post(server: ServerProcess, model: str, body: dict[str, Any]) -> dict[str, Any]:
    url, kwargs = _signed_converse(server, model, body)
    return httpx.post(url, timeout=600, **kwargs).json()


def chat_phase(server: ServerProcess, args: argparse.Namespace) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    system = [{"text": "You are a friendly travel planner. Keep answers short."}]
    before = engine_stats(server, args.model)
    prompt_sizes: list[int] = []
    t0 = time.perf_counter()
    for turn in range(args.turns):
        messages.append(
            {
                "role": "user",
                "content": [
                    {"text": f"Turn {turn + 1}: suggest one thing to do in city number {turn + 1}."}
                ],
            }
        )
        out = _post(
            server,
            args.model,
            {
                "system": system,
                "messages": messages,
                "inferenceConfig": {"maxTokens": 40, "temperature": 0.0},
            },
        )
        usage = out["usage"]
        prompt_sizes.append(usage["inputTokens"] + usage.get("cacheReadInputTokens", 0))
        answer = out["output"]["message"]["content"][0]["text"] or "OK."
        messages.append({"role": "assistant", "content": [{"text": answer}]})
    wall = time.perf_counter() - t0
    after = engine_stats(server, args.model)
    new = prompt_sizes[0] + sum(b - a for a, b in zip(prompt_sizes, prompt_sizes[1:], strict=False))
    computed = after["prompt_tokens_computed"] - before["prompt_tokens_computed"]
    return {
        "turns": args.turns,
        "prompt_tokens_per_turn": prompt_sizes,
        "prompt_tokens_total": sum(prompt_sizes),
        "new_tokens_total": new,
        "computed_tokens": computed,
        "computed_over_new": computed / new if new else None,
        "wall_s": wall,
    }


def run_config(name: str, cache_mb: int | None, args: argparse.Namespace) -> dict[str, Any]:
    log = Path(args.log_dir) / f"prompt-cache-{name}.log"
    server = ServerProcess(
        Path(args.data_dir), parallel=args.parallel, threads=args.threads,
        max_queue=256, n_ctx=args.n_ctx, log_path=log,
    )  # fmt: skip
    if cache_mb is not None:
        server.cmd += ["--prompt-cache-mb", str(cache_mb)]
    server.cmd += ["--preload", args.model]
    server.start_timeout_s = 900
    with server:
        print(f"[{name}] agent workload ...", file=sys.stderr, flush=True)
        agent = asyncio.run(agent_phase(server, args))
        print(f"[{name}] chat ...", file=sys.stderr, flush=True)
        chat = chat_phase(server, args)
        stats = engine_stats(server, args.model)
        return {
            "agent": agent,
            "chat": chat,
            "peak_rss_bytes": server.peak_rss(),
            "cache_bytes": stats.get("cache_bytes", 0),
            "cache_entries": stats.get("cache_entries", 0),
            "engine": stats,
        }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", default=str(Path.home() / ".cache" / "outcrop-test"))
    p.add_argument("--model", default=SMOL)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--system-tokens", type=int, default=1500)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--parallel", type=int, default=8)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--cache-mb", type=int, default=None, help="the cached server's budget")
    p.add_argument("--log-dir", default="/tmp")
    p.add_argument("--json", default=None)
    args = p.parse_args()

    off = run_config("off", 0, args)
    on = run_config("on", args.cache_mb, args)
    a_off, a_on = off["agent"], on["agent"]
    ratios = {
        "ttft_p50_on_over_off": a_on["ttft_p50_s"] / a_off["ttft_p50_s"],
        "requests_per_s_on_over_off": a_on["requests_per_s"] / a_off["requests_per_s"],
        "chat_computed_over_new_on": on["chat"]["computed_over_new"],
        "chat_computed_over_new_off": off["chat"]["computed_over_new"],
    }
    out = {"args": vars(args), "off": off, "on": on, "ratios": ratios}
    mib = 2**20
    u = a_on["last_usage"]
    prompt = (
        u.get("inputTokens", 0)
        + u.get("cacheReadInputTokens", 0)
        + u.get("cacheWriteInputTokens", 0)
    )
    ratios["solo_ttft_on_over_off"] = a_on["solo_ttft_s"] / a_off["solo_ttft_s"]
    print(f"agent workload: {a_on['requests']} requests, {args.clients} clients, "
          f"prompt {prompt} tokens")  # fmt: skip
    print(f"  TTFT alone off {a_off['solo_ttft_s']:.3f}s   on {a_on['solo_ttft_s']:.3f}s   "
          f"on/off {ratios['solo_ttft_on_over_off']:.3f}")  # fmt: skip
    print(f"  TTFT p50   off {a_off['ttft_p50_s']:.3f}s   on {a_on['ttft_p50_s']:.3f}s   "
          f"on/off {ratios['ttft_p50_on_over_off']:.3f}  (goal <= 0.2)")  # fmt: skip
    print(f"  TTFT p95   off {a_off['ttft_p95_s']:.3f}s   on {a_on['ttft_p95_s']:.3f}s")
    print(f"  requests/s off {a_off['requests_per_s']:.2f}    on {a_on['requests_per_s']:.2f}    "
          f"on/off {ratios['requests_per_s_on_over_off']:.2f}x  (goal >= 3x)")  # fmt: skip
    print(f"  usage on a hit: {a_on['last_usage']}")
    for name, cfg in (("off", off), ("on", on)):
        c = cfg["chat"]
        print(f"chat {name}: {c['turns']} turns, prompt tokens {c['prompt_tokens_total']}, new "
              f"{c['new_tokens_total']}, computed {c['computed_tokens']} "
              f"({c['computed_over_new']:.2f}x new; goal <= 1.2x)")  # fmt: skip
    print(f"memory: peak RSS off {off['peak_rss_bytes'] / mib:.0f} MiB, on "
          f"{on['peak_rss_bytes'] / mib:.0f} MiB; cache holds {on['cache_bytes'] / mib:.1f} MiB "
          f"in {on['cache_entries']} entries")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
