"""One benchmark run: every phase in order, baselines next to what they are compared with.

Per model: start ``outcrop serve --parallel P``; the N-client load, then (a) the engine
ceiling in process while the server idles; (c) raw and API single streams, interleaved; then
(b) the same load against ``--parallel 1``. Once per run: memory bandwidth, and the HTTP
layer against a server on the instant engine.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from outcrop.bench import baselines, llama_server, report
from outcrop.bench.client import BedrockClient, RequestResult, converse_body, run_load
from outcrop.bench.options import BenchOptions
from outcrop.bench.serverproc import ServerProcess
from outcrop.models.catalog import Catalog, ModelCard
from outcrop.models.formats import cpu_flags
from outcrop.models.resolve import ModelResolver
from outcrop.models.store import ModelStore, safe_name

SCHEMA_VERSION = 1


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    ram = None
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
        with open("/proc/meminfo") as fh:
            kib = next(int(ln.split()[1]) for ln in fh if ln.startswith("MemTotal:"))
            ram = round(kib / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram,
        "python": sys.version.split()[0],
        # Machines vary (AVX2 or AVX-512, bf16 or not): figures mean little without them.
        "flags": " ".join(sorted(f for f in cpu_flags() if f.startswith(("avx", "amx")))),
    }


class Bench:
    def __init__(self, opts: BenchOptions, n_ctx: int) -> None:
        self.opts = opts
        self.n_ctx = n_ctx
        self.data_dir = Path(opts.data_dir) if opts.data_dir else Path.home()
        self.log_dir = opts.server_log_dir or Path(tempfile.mkdtemp(prefix="outcrop-bench-"))
        self.body = converse_body(opts.prompt, opts.max_tokens)
        self.resolver = ModelResolver(Catalog(), [])
        # The weights `serve` chooses by default, so every phase measures the same file.
        self.store = ModelStore(self.data_dir, weight_format="auto")

    # -- the run ------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        o = self.opts
        out: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "machine": machine(),
            "options": {
                "concurrency": o.concurrency,
                "requests": o.requests,
                "max_tokens": o.max_tokens,
                "prompt": o.prompt,
                "threads": o.threads,
                "parallel": o.parallel,
                "quick": o.quick,
                "n_ctx_per_request": self.n_ctx,
            },
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        cards = [self._card(m) for m in o.models]
        for card in cards:
            self.store.ensure(card, progress=True)
        bandwidth = None
        if o.baselines:
            _say(f"memory bandwidth ({o.bandwidth_mib} MiB arrays)")
            bandwidth = baselines.memory_bandwidth(o.bandwidth_mib, o.threads)
        out["memory_bandwidth"] = bandwidth
        out["models"] = [self._model(card, bandwidth) for card in cards]
        out["http_layer"] = self._http_layer(cards[0])
        for res in out["models"]:
            res["targets"] = report.targets(res, out["http_layer"])
        out["server_logs"] = str(self.log_dir)
        return out

    def _card(self, model_id: str) -> ModelCard:
        return self.resolver.resolve(model_id).card

    def _server(self, name: str, parallel: int, instant: bool = False) -> ServerProcess:
        return ServerProcess(
            self.data_dir,
            parallel=parallel,
            threads=self.opts.threads,
            max_queue=max(64, self.opts.requests),
            n_ctx=self.n_ctx,
            log_path=self.log_dir / f"{name}.log",
            instant_engine=instant,
        )

    def _model(self, card: ModelCard, bandwidth: dict[str, float] | None) -> dict[str, Any]:
        o = self.opts
        path = self.store.ensure(card)
        n_ctx_per_seq = min(self.n_ctx, card.context_length)
        res: dict[str, Any] = {"model": card.model_id, "ratios": {}}
        with self._server(f"{safe_name(card.model_id)}-parallel{o.parallel}", o.parallel) as srv:
            _say(f"{card.model_id}: server up on {srv.url} (pid {srv.pid}); warming up")
            self._warm(srv, card.model_id)
            _say(f"outcrop serve: {o.concurrency} clients, {o.requests} requests")
            load = asyncio.run(self._load(srv, card.model_id, o.concurrency, o.requests))
            res["server"] = report.summarize_load(load)
            if o.baselines:
                # The same tokens per request as the server produced: its stop strings
                # (Gemma's "\nQ:") end requests early, the raw loop knows only end-of-text.
                budget = max(1, round(res["server"]["mean_output_tokens"]))
                _say(f"(a) engine ceiling: {o.concurrency} sequences in lock-step, in process")
                ceiling = baselines.batched_ceiling(
                    path, card, self.body, n_seqs=o.concurrency, n_requests=o.requests,
                    max_tokens=budget, n_ctx_per_seq=n_ctx_per_seq, threads=o.threads,
                )  # fmt: skip
                res["engine_ceiling"] = {
                    "sequences": ceiling.sequences,
                    "max_tokens": budget,
                    "generated": ceiling.generated,
                    "wall_s": round(ceiling.wall_s, 3),
                    "tokens_per_s": round(ceiling.tokens_per_s, 2),
                    "prefill_tokens_per_s": round(ceiling.prefill_tokens_per_s, 1),
                }
            if o.baselines:
                res["single_stream"] = self._single_stream(srv, card, path, n_ctx_per_seq, budget)
            res["server"]["peak_rss_bytes"] = srv.peak_rss()
        res["workload"] = {
            "concurrency": o.concurrency,
            "requests": o.requests,
            "max_tokens": o.max_tokens,
            "prompt_tokens": res["server"]["input_tokens"] // max(1, o.requests),
        }
        if o.baselines:
            with self._server(f"{safe_name(card.model_id)}-parallel1", 1) as srv:
                _say("(b) one request at a time: the same load against --parallel 1")
                self._warm(srv, card.model_id)
                load = asyncio.run(self._load(srv, card.model_id, o.concurrency, o.requests))
                res["one_at_a_time"] = report.summarize_load(load)
                res["one_at_a_time"]["peak_rss_bytes"] = srv.peak_rss()
        if o.baselines and o.llama_server != "off":
            shipped = self.store.original_path(card) or self.store.ensure(card)
            res["llama_server"] = self._llama_server(card, n_ctx_per_seq, shipped)
            if "skipped" not in res["llama_server"]:
                if path == shipped:
                    res["llama_server"]["same_file"] = True
                else:  # the engine comparison: llama-server on the very file outcrop serves
                    res["llama_server_served"] = self._llama_server(card, n_ctx_per_seq, path)
        elif o.baselines:
            res["llama_server"] = {"skipped": "turned off (--llama-server off)"}
        self._ratios(res, bandwidth)
        if o.price_per_hour is not None:
            prefill = (res.get("engine_ceiling") or {}).get("prefill_tokens_per_s")
            res["cost"] = report.cost(
                o.price_per_hour, res["server"]["output_tokens_per_s"], prefill
            )
        return res

    def _single_stream(
        self, srv: ServerProcess, card: ModelCard, path: Path, n_ctx_per_seq: int, budget: int
    ) -> dict[str, Any]:
        o = self.opts
        _say(f"(c) single stream, raw loop vs API, {o.single_stream_runs} runs each, interleaved")
        raw_runs: list[baselines.DecodeRun] = []
        api_runs: list[RequestResult] = []
        with baselines.RawSingleStream(
            path, card, self.body, max_tokens=budget, n_ctx_per_seq=n_ctx_per_seq,
            threads=o.threads,
        ) as raw:  # fmt: skip
            raw.run()  # warm caches
            for _ in range(o.single_stream_runs):
                raw_runs.append(raw.run())
                api_runs.append(asyncio.run(self._load(srv, card.model_id, 1, 1)).requests[0])
            tensor_bytes = raw.tensor_bytes
        raw_rate = report.median([r.decode_rate for r in raw_runs if r.decode_rate])
        api_rate = report.median(report.decode_rates(api_runs))
        return {
            "runs": o.single_stream_runs,
            "raw_decode_tokens_per_s": None if raw_rate is None else round(raw_rate, 2),
            "api_decode_tokens_per_s": None if api_rate is None else round(api_rate, 2),
            "raw_tokens": [r.generated for r in raw_runs],
            "api_tokens": [r.output_tokens for r in api_runs],
            "api_ttft_ms": [None if r.ttft is None else round(r.ttft * 1000, 2) for r in api_runs],
            "raw_ttft_ms": [round(r.prefill_s * 1000, 2) for r in raw_runs],
            "model_bytes": tensor_bytes,
        }

    def _llama_server(
        self, card: ModelCard, n_ctx_per_seq: int, model_file: Path
    ) -> dict[str, Any]:
        """llama.cpp's llama-server on ``model_file``, same clients, same load."""
        o = self.opts
        cache = self.data_dir / "cache"
        try:
            binary = llama_server.binary_path(cache)
            if not binary.exists():
                if o.llama_server != "build":
                    return {"skipped": "llama-server is not built: run with --llama-server build"}
                binary = llama_server.build(cache, _say)
        except (RuntimeError, OSError, ValueError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            _say(f"llama-server baseline skipped: {exc}")
            return {"skipped": f"could not build llama-server: {exc} {detail[-300:]!r}"}
        shipped = model_file
        body = llama_server.chat_body(o.prompt, o.max_tokens, card.default_system)
        with llama_server.LlamaServer(
            binary, shipped, parallel=o.parallel, n_ctx_per_seq=n_ctx_per_seq,
            threads=o.threads,
            log_path=self.log_dir / f"{safe_name(card.model_id)}-llama-server-{shipped.stem}.log",
        ) as ls:  # fmt: skip
            _say(f"llama-server --parallel {o.parallel} on {shipped.name}: the same load")
            asyncio.run(llama_server.run_load(ls.url, {**body, "max_tokens": 4}, 1, 1))
            load = asyncio.run(llama_server.run_load(ls.url, body, o.concurrency, o.requests))
            summary = report.summarize_load(load)
            summary["peak_rss_bytes"] = ls.peak_rss()
            summary["model_file"] = shipped.name
        return summary

    def _ratios(self, res: dict[str, Any], bandwidth: dict[str, float] | None) -> None:
        r = res["ratios"]
        srv = res["server"]
        ls = res.get("llama_server")
        if ls and "skipped" not in ls:
            r["throughput_vs_llama_server"] = report.ratio(
                srv["output_tokens_per_s"], ls["output_tokens_per_s"]
            )
            r["ttft_p99_vs_llama_server"] = report.ratio(srv["ttft_p99_ms"], ls["ttft_p99_ms"])
        same = res.get("llama_server_served") or (ls if ls and ls.get("same_file") else None)
        if same:
            for key, field in (
                ("throughput_vs_llama_server_same_file", "output_tokens_per_s"),
                ("ttft_p50_vs_llama_server_same_file", "ttft_p50_ms"),
                ("ttft_p99_vs_llama_server_same_file", "ttft_p99_ms"),
                ("itl_p99_vs_llama_server_same_file", "itl_p99_ms"),
            ):
                r[key] = report.ratio(srv[field], same[field])
        if "engine_ceiling" in res:
            r["throughput_vs_ceiling"] = report.ratio(
                srv["output_tokens_per_s"], res["engine_ceiling"]["tokens_per_s"]
            )
        if "one_at_a_time" in res:
            b = res["one_at_a_time"]
            r["ttft_p99_vs_one_at_a_time"] = report.ratio(srv["ttft_p99_ms"], b["ttft_p99_ms"])
            r["throughput_vs_one_at_a_time"] = report.ratio(
                srv["output_tokens_per_s"], b["output_tokens_per_s"]
            )
        s = res.get("single_stream")
        if s:
            r["single_stream_api_vs_raw"] = report.ratio(
                s["api_decode_tokens_per_s"], s["raw_decode_tokens_per_s"]
            )
            if bandwidth:
                bw = bandwidth["read"]
                roof = bw / s["model_bytes"]
                res["roofline"] = {
                    "model_bytes": s["model_bytes"],
                    "bandwidth_bytes_per_s": round(bw),
                    "tokens_per_s": round(roof, 1),
                    "raw_share": report.ratio(s["raw_decode_tokens_per_s"], roof),
                    "api_share": report.ratio(s["api_decode_tokens_per_s"], roof),
                }

    # -- HTTP layer -----------------------------------------------------------------------
    def _http_layer(self, card: ModelCard) -> dict[str, Any]:
        o = self.opts
        with self._server("instant-engine", o.parallel, instant=True) as srv:
            _say(f"HTTP layer: instant engine, {o.http_requests} Converse calls")
            return asyncio.run(self._http_calls(srv, card.model_id))

    async def _http_calls(self, srv: ServerProcess, model_id: str) -> dict[str, Any]:
        o = self.opts
        client = BedrockClient(srv.url, srv.key, srv.secret, max_connections=o.concurrency)
        try:
            for _ in range(min(20, o.http_requests)):
                await client.converse(model_id, self.body)
            sequential = [
                await client.converse(model_id, self.body) for _ in range(o.http_requests)
            ]
            health = []
            for _ in range(o.http_requests):
                t = time.perf_counter()
                await client.http.get(srv.url + "/health")
                health.append(time.perf_counter() - t)
            concurrent = await run_load(
                client, model_id, self.body, o.concurrency, o.http_requests, stream=False
            )
        finally:
            await client.aclose()
        ok = [r.finished - r.started for r in sequential if r.error is None]
        errors = [r.error for r in sequential + concurrent.requests if r.error]
        conc = report.summarize_load(concurrent)
        return {
            "max_tokens": o.max_tokens,
            "requests": o.http_requests,
            "errors": len(errors),
            "first_error": errors[0] if errors else None,
            "added_latency_p50_ms": report.to_ms(report.percentile(ok, 50)),
            "added_latency_p99_ms": report.to_ms(report.percentile(ok, 99)),
            "above_health_floor_p50_ms": report.to_ms(
                report.percentile(ok, 50) - report.percentile(health, 50)
            ),
            "health_p50_ms": report.to_ms(report.percentile(health, 50)),
            "health_p99_ms": report.to_ms(report.percentile(health, 99)),
            "concurrency": o.concurrency,
            "requests_per_s": conc["requests_per_s"],
            "concurrent_latency_p50_ms": conc["latency_p50_ms"],
            "concurrent_latency_p99_ms": conc["latency_p99_ms"],
            "peak_rss_bytes": srv.peak_rss(),
        }

    # -- helpers --------------------------------------------------------------------------
    def _warm(self, srv: ServerProcess, model_id: str) -> None:
        async def go() -> RequestResult:
            client = BedrockClient(srv.url, srv.key, srv.secret)
            try:
                return await client.converse_stream(model_id, converse_body("Hi", 4))
            finally:
                await client.aclose()

        result = asyncio.run(go())
        if result.error:
            raise RuntimeError(f"warm-up request failed: {result.error} (log: {srv.log_path})")

    async def _load(self, srv: ServerProcess, model_id: str, concurrency: int, n: int):
        client = BedrockClient(srv.url, srv.key, srv.secret, max_connections=concurrency)
        try:
            return await run_load(client, model_id, self.body, concurrency, n)
        finally:
            await client.aclose()


def run(opts: BenchOptions, n_ctx: int) -> dict[str, Any]:
    """Run the benchmark, print the tables, write ``opts.json_out``; the report dict."""
    result = Bench(opts, n_ctx).run()
    report.print_report(result)
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps(result, indent=2) + "\n")
        _say(f"wrote {opts.json_out}")
    return result
