"""Overload answered with 429, the second built-in model, and the CLI around the server."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GEMMA, SMOL, models_data_dir, start_server, stop_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    live = start_server(tmp_path_factory.mktemp("tiny"), "--parallel", "1", "--max-queue", "1")
    yield live
    stop_server(live)


def test_saturated_model_answers_throttling_429(tiny_server):
    client = tiny_server.client()

    def call(_):
        try:
            client.converse(
                modelId=SMOL,
                messages=[{"role": "user", "content": [{"text": "Tell me a long story."}]}],
                inferenceConfig={"maxTokens": 200, "temperature": 0.7},
            )
            return "ok"
        except ClientError as exc:
            return (
                exc.response["Error"]["Code"],
                exc.response["ResponseMetadata"]["HTTPStatusCode"],
            )

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(call, range(6)))
    assert "ok" in results
    assert ("ThrottlingException", 429) in results
    # The server is still healthy afterwards.
    assert call(0) == "ok"


def test_gemma_base_model_answers_as_completion(runtime):
    out = runtime.converse(
        modelId=GEMMA,
        messages=[{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
        inferenceConfig={"temperature": 0, "maxTokens": 24},
    )
    text = out["output"]["message"]["content"][0]["text"]
    assert "Paris" in text
    assert "Q:" not in text  # the transcript's turn marker is an implicit stop


def test_cli_credentials_prints_exports(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "outcrop", "credentials", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "export AWS_ACCESS_KEY_ID=" in out.stdout and "export AWS_ENDPOINT_URL=" in out.stdout
    again = subprocess.run(
        [sys.executable, "-m", "outcrop", "credentials", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert again.stdout == out.stdout


def test_cli_models_list_shows_installed(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "outcrop", "models", "list", "--json", "--data-dir", str(models_data_dir())],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = {row["modelId"]: row for row in json.loads(out.stdout)}
    assert rows[SMOL]["installed"] is True


def test_auth_none_refused_off_loopback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "outcrop", "serve", "--auth", "none", "--host", "0.0.0.0",
         "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode != 0
    assert "loopback" in (out.stderr + out.stdout)
