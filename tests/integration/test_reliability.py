"""The reliability suite, short: the same code ``python -m outcrop.reliability --full`` runs.

Each part starts its own server (``outcrop.reliability.live``: a real ``outcrop serve`` on
127.0.0.1 with a data dir under tmp_path and the shared model cache) and reports what held;
a failure prints the examples it kept.
"""

from __future__ import annotations

import json

import pytest

from outcrop.reliability import contract, crash, live, rawsock, soak, tamper


def _explain(result: dict) -> str:
    result = {k: v for k, v in result.items() if k != "samples_s_rss_fds"}
    return json.dumps(result, indent=1, default=str)[:6000]


def test_fuzzed_requests_from_botocore_models_get_no_5xx_and_only_modelled_errors(tmp_path):
    result = contract.run(tmp_path, requests=500, seed=3)
    assert result["held"], _explain(result)
    assert result["operations"] >= 40  # every served surface was reached
    assert result["status_5xx"] == 0 and result["unhandled_in_log"] == 0


def test_malformed_http_huge_bodies_and_slow_clients_hold(tmp_path):
    result = rawsock.run(tmp_path, full=False)
    assert result["held"], _explain(result)
    huge = next(r for r in result["results"] if r["case"] == "1 GB Content-Length")
    assert huge["status"] == 400 and huge["seconds"] < 2  # refused from the header
    assert result["rss_growth_mb_after_huge_bodies"] < 64  # never buffered


def test_every_sigv4_tampering_is_a_403_and_no_secret_is_logged(tmp_path):
    result = tamper.run(tmp_path)
    assert result["held"], _explain(result)
    assert result["refused_403"] >= 100 and result["controls"] >= 5


def test_soak_mixed_clients_with_hang_ups_leaves_no_leak(tmp_path):
    result = soak.run(tmp_path, clients=6, seconds=45)
    assert result["held"], _explain(result)
    assert result["ok"] > 0 and result["running_and_queued_at_end"] == (0.0, 0.0)


def test_kill_9_under_db_writes_and_during_a_batch_job_recovers(tmp_path):
    result = crash.run(tmp_path, full=False)
    assert result["held"], _explain(result)


@pytest.mark.parametrize(
    "body",
    [
        {"modelId": live.SMOL, "modelInput": {}, "outputDataConfig": "s3://b/out"},
        {"modelId": live.SMOL, "modelInput": {}, "outputDataConfig": {"s3OutputDataConfig": 7}},
    ],
    ids=["config-is-a-string", "s3-config-is-a-number"],
)
def test_start_async_invoke_with_a_malformed_output_config_is_a_validation_error(tmp_path, body):
    # Found by the contract fuzzer: AttributeError -> 500.
    server = live.server(tmp_path, preload=False)
    try:
        wire = tamper.sign(server.url, "POST", "/async-invoke", json.dumps(body).encode())
        status, headers, _ = tamper.send(server.url, wire)
        assert (status, headers.get("x-amzn-errortype")) == (400, "ValidationException")
    finally:
        server.stop()
