"""The benchmark's pieces that need no server: statistics, options, the instant engine."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from outcrop.bench import options, report
from outcrop.bench.instant_engine import InstantEngine
from outcrop.engines.base import Finished, GenerationRequest, TextChunk


def test_percentile_interpolates_and_handles_empty():
    assert report.percentile([], 50) is None
    assert report.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert report.percentile([0.0, 10.0], 99) == 9.9


def test_instant_engine_answers_max_tokens_chunks_then_length():
    engine = InstantEngine("m")

    async def collect():
        return [e async for e in engine.generate(GenerationRequest([1, 2, 3], max_tokens=5))]

    events = asyncio.run(collect())
    assert [type(e) for e in events] == [TextChunk] * 5 + [Finished]
    assert events[-1].reason == "length" and events[-1].completion_tokens == 5


def test_bench_options_default_requests_to_twice_concurrency_and_slots_to_concurrency():
    parser = argparse.ArgumentParser()
    options.add_arguments(parser)
    opts = options.from_args(
        parser.parse_args(["--concurrency", "8", "--model", "gemma"]), Path(".")
    )
    assert (opts.requests, opts.parallel, opts.models) == (16, 8, [options.GEMMA])
    quick = options.from_args(parser.parse_args(["--quick"]), Path("."))
    assert quick.quick and quick.requests <= 8 and quick.max_tokens <= 16


def test_targets_report_pass_and_fail_without_asserting():
    model = {
        "ratios": {
            "throughput_vs_ceiling": 0.97,
            "ttft_p99_vs_one_at_a_time": 0.2,
            "single_stream_api_vs_raw": 0.99,
            "throughput_vs_llama_server": 1.2,
        }
    }
    rows = report.targets(model, {"added_latency_p50_ms": 0.8})
    # L2 did not run (no llama-server p99): reported as None, not as a pass or a fail.
    assert [r["pass"] for r in rows] == [True, False, True, True, False] + [None] * 5
    assert report.cost(3.6, 1000.0, None)["output_usd_per_million_tokens"] == 1.0


def test_targets_of_a_skipped_llama_server_carry_its_reason():
    model = {
        "ratios": {"throughput_vs_ceiling": 0.97},
        "llama_server": {"skipped": "llama-server is not built: run with --llama-server build"},
    }
    rows = {r["id"]: r for r in report.targets(model, None)}
    assert rows["P1"]["pass"] is True and "skipped" not in rows["P1"]
    for tid in ("L1", "L2", "S1", "S2", "S3", "S4"):
        assert rows[tid]["value"] is None and rows[tid]["pass"] is None
        assert rows[tid]["skipped"] == model["llama_server"]["skipped"]
    assert rows["P4"]["skipped"] == "the HTTP-layer phase did not run"


def test_same_file_rows_compare_the_engines_on_the_served_file():
    model = {
        "ratios": {
            "throughput_vs_llama_server": 1.53,
            "throughput_vs_llama_server_same_file": 0.96,
            "ttft_p50_vs_llama_server_same_file": 3.6,
            "ttft_p99_vs_llama_server_same_file": 1.09,
            "itl_p99_vs_llama_server_same_file": 1.49,
        }
    }
    rows = {r["id"]: r for r in report.targets(model, None)}
    assert rows["L1"]["pass"] is True  # the format choice alone wins on the shipped file
    assert [rows[s]["pass"] for s in ("S1", "S2", "S3", "S4")] == [False] * 4
