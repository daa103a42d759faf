"""Several models in one server: load on first use, LRU unload, keep-alive, ps, metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from tests.conftest import GEMMA, SMOL, TEST_KEY, TEST_SECRET, start_server, stop_server

pytestmark = pytest.mark.slow
EMBED = "sentence-transformers.all-minilm-l6-v2-v1:0"
HELLO = [{"role": "user", "content": [{"text": "Say hello."}]}]


def ps(server) -> dict:
    env = {
        **os.environ,
        "OUTCROP_ACCESS_KEY_ID": TEST_KEY,
        "OUTCROP_SECRET_ACCESS_KEY": TEST_SECRET,
    }
    out = subprocess.run(
        [sys.executable, "-m", "outcrop", "models", "ps", "--json", "--endpoint", server.url],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return {m["modelId"]: m for m in json.loads(out.stdout)}


def _unloads(server) -> int:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="GET", url=server.url + "/outcrop/ps")
    SigV4Auth(Credentials(TEST_KEY, TEST_SECRET), "bedrock", "us-east-1").add_auth(req)
    return httpx.get(req.url, headers=dict(req.headers), timeout=10).json()["unloads"]


@pytest.fixture(scope="module")
def two_model_server(tmp_path_factory):
    live = start_server(
        tmp_path_factory.mktemp("lru"), "--max-loaded-models", "2", "--keep-alive", "-1"
    )
    yield live
    stop_server(live)


def test_two_chat_models_and_embeddings_with_lru_unloading(two_model_server):
    client = two_model_server.client()
    client.converse(modelId=SMOL, messages=HELLO, inferenceConfig={"maxTokens": 4})
    assert set(ps(two_model_server)) == {SMOL}
    client.invoke_model(modelId=EMBED, body=json.dumps({"inputText": "hello"}))
    loaded = ps(two_model_server)
    assert set(loaded) == {SMOL, EMBED}
    assert all(m["memoryBytes"] > 0 for m in loaded.values())
    # A third model: the least recently used idle one (SmolLM2) makes room.
    out = client.converse(modelId=GEMMA, messages=HELLO, inferenceConfig={"maxTokens": 4})
    assert out["usage"]["outputTokens"] > 0
    assert set(ps(two_model_server)) == {EMBED, GEMMA}
    # ...and comes back on its next use.
    client.converse(modelId=SMOL, messages=HELLO, inferenceConfig={"maxTokens": 4})
    assert SMOL in ps(two_model_server)


def test_idle_model_is_unloaded_after_keep_alive(tmp_path):
    live = start_server(tmp_path, "--keep-alive", "1")
    try:
        # The answer proves the model was loaded; under load the 1 s keep-alive may
        # already have run out by the time we look, so count unloads instead.
        live.client().converse(modelId=SMOL, messages=HELLO, inferenceConfig={"maxTokens": 4})
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and SMOL in ps(live):
            time.sleep(0.5)
        assert SMOL not in ps(live)
        status = httpx.get(live.url + "/metrics", timeout=10)  # server still healthy
        assert status.status_code == 200
        assert _unloads(live) >= 1
    finally:
        stop_server(live)


def test_metrics_count_requests_and_tokens(server, runtime):
    runtime.converse(
        modelId=SMOL, messages=HELLO, inferenceConfig={"maxTokens": 8, "temperature": 0}
    )
    text = httpx.get(server.url + "/metrics", timeout=10).text
    assert 'outcrop_requests_total{operation="Converse",status="200"}' in text
    assert f'outcrop_output_tokens_total{{model="{SMOL}"}}' in text
    assert f'outcrop_time_to_first_token_seconds_count{{model="{SMOL}"}}' in text
    assert f'outcrop_queue_depth{{model="{SMOL}"}}' in text
