"""Numbers from raw timings, the targets P1-P4, cost, and the printed tables."""

from __future__ import annotations

import math
from typing import Any

from outcrop.bench.client import LoadResult, RequestResult


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated ``q``-th percentile (0-100); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def to_ms(x: float | None) -> float | None:
    return None if x is None else round(x * 1000, 3)


def pooled(runs: list[LoadResult]) -> LoadResult:
    """Several load runs as one (alternating rounds): all requests, the walls added up."""
    return LoadResult(
        [r for run in runs for r in run.requests],
        sum(run.wall_s for run in runs),
        runs[0].concurrency,
    )


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 4)


def summarize_load(load: LoadResult) -> dict[str, Any]:
    ok = [r for r in load.requests if r.error is None]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    itl = [x for r in ok for x in r.inter_token]
    latency = [r.finished - r.started for r in ok]
    out_tokens = sum(r.output_tokens for r in ok)
    return {
        "concurrency": load.concurrency,
        "requests": len(load.requests),
        "errors": len(load.requests) - len(ok),
        "first_error": next((r.error for r in load.requests if r.error), None),
        "wall_s": round(load.wall_s, 3),
        "input_tokens": sum(r.input_tokens for r in ok),
        "output_tokens": out_tokens,
        "mean_output_tokens": round(out_tokens / len(ok), 1) if ok else 0,
        "output_tokens_per_s": round(out_tokens / load.wall_s, 2) if load.wall_s else 0.0,
        "requests_per_s": round(len(ok) / load.wall_s, 3) if load.wall_s else 0.0,
        "ttft_p50_ms": to_ms(percentile(ttft, 50)),
        "ttft_p99_ms": to_ms(percentile(ttft, 99)),
        "itl_p50_ms": to_ms(percentile(itl, 50)),
        "itl_p99_ms": to_ms(percentile(itl, 99)),
        "latency_p50_ms": to_ms(percentile(latency, 50)),
        "latency_p99_ms": to_ms(percentile(latency, 99)),
    }


def decode_rates(results: list[RequestResult]) -> list[float]:
    return [r.decode_rate for r in results if r.error is None and r.decode_rate is not None]


def median(values: list[float]) -> float | None:
    return percentile(values, 50)


def cost(price_per_hour: float, output_tps: float, input_tps: float | None) -> dict[str, Any]:
    """USD per million tokens if the machine did nothing but this at the measured rates."""

    def per_million(tps: float | None) -> float | None:
        if not tps:
            return None
        return round(price_per_hour / 3600 / tps * 1e6, 4)

    return {
        "price_per_hour_usd": price_per_hour,
        "output_usd_per_million_tokens": per_million(output_tps),
        "input_usd_per_million_tokens": per_million(input_tps),
        "input_rate_source": "engine ceiling's batched prefill tokens/s",
    }


def targets(model: dict[str, Any], http: dict[str, Any] | None) -> list[dict[str, Any]]:
    """P1-P4, L1-L2 (llama-server on the shipped file), S1-S4 (on the served file), reported,
    never asserted.

    ``value`` None means the phase did not run; such a row says why in ``skipped``.
    """
    r = model["ratios"]
    llama_skipped = (model.get("llama_server") or {}).get("skipped")

    def row(tid: str, what: str, goal: str, value: Any, ok: bool | None) -> dict[str, Any]:
        out = {"id": tid, "what": what, "target": goal, "value": value, "pass": ok}
        if value is None:
            if tid[0] in "LS" and llama_skipped:
                out["skipped"] = llama_skipped
            elif tid == "P4" and http is None:
                out["skipped"] = "the HTTP-layer phase did not run"
            else:
                out["skipped"] = "the phase this ratio needs did not run"
        return out

    p1 = r.get("throughput_vs_ceiling")
    p2 = r.get("ttft_p99_vs_one_at_a_time")
    p3 = r.get("single_stream_api_vs_raw")
    p4 = http["added_latency_p50_ms"] if http else None
    l1 = r.get("throughput_vs_llama_server")
    l2 = r.get("ttft_p99_vs_llama_server")
    s1 = r.get("throughput_vs_llama_server_same_file")
    s2 = r.get("ttft_p50_vs_llama_server_same_file")
    s3 = r.get("ttft_p99_vs_llama_server_same_file")
    s4 = r.get("itl_p99_vs_llama_server_same_file")
    return [
        row("P1", "aggregate tokens/s vs engine ceiling (a)", ">= 0.95x", p1,
            None if p1 is None else p1 >= 0.95),
        row("P2", "p99 TTFT vs one-at-a-time serving (b)", "<= 0.125x", p2,
            None if p2 is None else p2 <= 0.125),
        row("P3", "single-stream API decode vs raw (c)", ">= 0.95x", p3,
            None if p3 is None else p3 >= 0.95),
        row("P4", "HTTP layer added latency p50 (ms)", "< 1 ms", p4,
            None if p4 is None else p4 < 1.0),
        row("L1", "aggregate tokens/s vs llama-server on the shipped file", ">= 1.5x", l1,
            None if l1 is None else l1 >= 1.5),
        row("L2", "p99 TTFT vs llama-server", "<= 1.0x", l2,
            None if l2 is None else l2 <= 1.0),
        # The same file outcrop serves: the engine against the engine, no format choice.
        row("S1", "aggregate tokens/s vs llama-server, same file", ">= 1.0x", s1,
            None if s1 is None else s1 >= 1.0),
        row("S2", "p50 TTFT vs llama-server, same file", "<= 1.0x", s2,
            None if s2 is None else s2 <= 1.0),
        row("S3", "p99 TTFT vs llama-server, same file", "<= 1.0x", s3,
            None if s3 is None else s3 <= 1.0),
        row("S4", "p99 ITL vs llama-server, same file", "<= 1.0x", s4,
            None if s4 is None else s4 <= 1.0),
    ]  # fmt: skip


# --------------------------------------------------------------------------- printing


def _fmt(x: Any, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        text = f"{x:,.3f}" if abs(x) < 10 else f"{x:,.1f}"
    else:
        text = str(x)
    return text + unit


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=140)
    m = report["machine"]
    console.print(
        f"[bold]outcrop bench[/] on {m['cpu']} ({m['cores']} cores, "
        f"{m['ram_gib']} GiB RAM), threads={report['options']['threads']}"
    )
    for res in report["models"]:
        w = res["workload"]
        t = Table(
            title=f"{res['model']}: {w['concurrency']} clients, {w['requests']} requests, "
            f"{w['max_tokens']} max new tokens, {w['prompt_tokens']}-token prompt",
        )
        for col in ("", "tokens/s", "req/s", "TTFT p50", "TTFT p99", "ITL p50", "ITL p99",
                    "peak RSS", "vs outcrop"):  # fmt: skip
            t.add_column(col, justify="right" if col else "left")
        srv = res["server"]
        t.add_row("outcrop serve", *_load_cells(srv), "1.000")
        b = res.get("one_at_a_time")
        if b:
            t.add_row("(b) --parallel 1", *_load_cells(b), _fmt(ratio(b["output_tokens_per_s"],
                      srv["output_tokens_per_s"])))  # fmt: skip
        ls = res.get("llama_server")
        for other in (ls, res.get("llama_server_served")):
            if other and "skipped" not in other:
                t.add_row(f"llama-server ({other['model_file']})", *_load_cells(other),
                          _fmt(ratio(other["output_tokens_per_s"], srv["output_tokens_per_s"])))  # fmt: skip
        a = res.get("engine_ceiling")
        if a:
            t.add_row("(a) engine ceiling", _fmt(a["tokens_per_s"]), *["-"] * 6,
                      _fmt(ratio(a["tokens_per_s"], srv["output_tokens_per_s"])))  # fmt: skip
        console.print(t)
        if ls and "skipped" in ls:
            console.print(f"  llama-server baseline: skipped ({ls['skipped']})")
        s = res.get("single_stream")
        if s:
            roof = res.get("roofline") or {}
            console.print(
                f"  (c) one stream decode: raw {_fmt(s['raw_decode_tokens_per_s'])} tok/s, "
                f"API {_fmt(s['api_decode_tokens_per_s'])} tok/s "
                f"(ratio {_fmt(res['ratios'].get('single_stream_api_vs_raw'))}); roofline "
                f"{_fmt(roof.get('tokens_per_s'))} tok/s = "
                f"{_fmt(roof.get('model_bytes', 0) / 2**20)} MiB/token at "
                f"{_fmt(roof.get('bandwidth_bytes_per_s', 0) / 1e9)} GB/s; raw reaches "
                f"{_fmt(roof.get('raw_share'))}, API {_fmt(roof.get('api_share'))}"
            )
        if res.get("cost"):
            c = res["cost"]
            console.print(
                f"  cost at ${c['price_per_hour_usd']}/h: "
                f"${_fmt(c['output_usd_per_million_tokens'])} per million output tokens, "
                f"${_fmt(c['input_usd_per_million_tokens'])} per million input tokens"
            )
        tt = Table(title=f"targets ({res['model']})")
        for col in ("", "what", "target", "measured", "result"):
            tt.add_column(col)
        for row in res["targets"]:
            verdict = {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "-"}[row["pass"]]
            if row.get("skipped"):
                verdict = f"skipped: {row['skipped']}"
            tt.add_row(row["id"], row["what"], row["target"], _fmt(row["value"]), verdict)
        console.print(tt)
    h = report.get("http_layer")
    if h:
        console.print(
            f"HTTP layer (instant engine, Converse, {h['max_tokens']} tokens): added latency "
            f"p50 {_fmt(h['added_latency_p50_ms'])} ms, p99 {_fmt(h['added_latency_p99_ms'])} ms "
            f"(one client); {_fmt(h['requests_per_s'])} req/s with {h['concurrency']} clients; "
            f"GET /health floor p50 {_fmt(h['health_p50_ms'])} ms"
        )


def _load_cells(s: dict[str, Any]) -> list[str]:
    rss = s.get("peak_rss_bytes")
    return [
        _fmt(s["output_tokens_per_s"]),
        _fmt(s["requests_per_s"]),
        _fmt(s["ttft_p50_ms"], " ms"),
        _fmt(s["ttft_p99_ms"], " ms"),
        _fmt(s["itl_p50_ms"], " ms"),
        _fmt(s["itl_p99_ms"], " ms"),
        "-" if rss is None else f"{rss / 2**20:.0f} MiB",
    ]
