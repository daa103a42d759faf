"""``outcrop bench --quick`` end to end: every phase runs and the JSON has every field.

Speed is never asserted here: this machine's numbers are the benchmark's business.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import SMOL, models_data_dir

pytestmark = pytest.mark.slow

LOAD_FIELDS = {
    "requests", "errors", "wall_s", "output_tokens", "output_tokens_per_s", "requests_per_s",
    "ttft_p50_ms", "ttft_p99_ms", "itl_p50_ms", "itl_p99_ms", "peak_rss_bytes",
}  # fmt: skip


def test_quick_bench_writes_every_field(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable, "-m", "outcrop", "bench", "--quick", "--threads", "1",
        "--data-dir", str(models_data_dir()), "--model", SMOL,
        "--price-per-hour", "0.5", "--json", str(out),
        # Never read a llama-server binary an earlier run left in the shared cache: the
        # result must not depend on what this machine built before (a fresh machine has none).
        "--llama-server", "off",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(out.read_text())

    assert {"cpu", "cores", "ram_gib"} <= set(report["machine"])
    assert set(report["memory_bandwidth"]) >= {"read", "read_1thread", "copy_1thread"}
    (model,) = report["models"]
    assert model["model"] == SMOL
    for phase in ("server", "one_at_a_time"):
        assert LOAD_FIELDS <= set(model[phase]), phase
        assert model[phase]["errors"] == 0, model[phase]["first_error"]
        assert model[phase]["output_tokens"] > 0
    assert {"tokens_per_s", "generated", "prefill_tokens_per_s"} <= set(model["engine_ceiling"])
    single = model["single_stream"]
    assert single["raw_decode_tokens_per_s"] and single["api_decode_tokens_per_s"]
    assert {
        "model_bytes",
        "bandwidth_bytes_per_s",
        "tokens_per_s",
        "raw_share",
        "api_share",
    } <= set(model["roofline"])
    assert set(model["ratios"]) >= {
        "throughput_vs_ceiling",
        "ttft_p99_vs_one_at_a_time",
        "single_stream_api_vs_raw",
    }
    assert [t["id"] for t in model["targets"]] == [
        "P1", "P2", "P3", "P4", "L1", "L2", "S1", "S2", "S3", "S4",
    ]  # fmt: skip
    measured = {t["id"]: t for t in model["targets"] if t["value"] is not None}
    assert set(measured) == {"P1", "P2", "P3", "P4"}
    assert all(t["pass"] in (True, False) for t in measured.values())
    assert model["llama_server"] == {"skipped": "turned off (--llama-server off)"}
    for t in model["targets"]:
        if t["id"][0] in "LS":  # a skipped baseline carries its reason, never a bare null
            assert t["pass"] is None and t["skipped"] == model["llama_server"]["skipped"]
    assert model["cost"]["output_usd_per_million_tokens"] > 0

    http = report["http_layer"]
    assert http["errors"] == 0, http["first_error"]
    assert {"added_latency_p50_ms", "added_latency_p99_ms", "requests_per_s"} <= set(http)
    assert "PASS" in done.stdout or "FAIL" in done.stdout
