"""A real ``outcrop serve`` subprocess for the suite: start, measure, kill, restart.

Like the tests' conftest server, but importable by ``python -m outcrop.reliability``:
each server gets its own data dir whose ``models``/``cache`` link to a shared model cache
(``OUTCROP_TEST_DATA_DIR``, default ``~/.cache/outcrop-test``), so nothing outlives a run.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SMOL = "huggingface.smollm2-135m-instruct-v1:0"
EMBED = "sentence-transformers.all-minilm-l6-v2-v1:0"
KEY = "AKIARELIABILITY00001"
SECRET = "reliability-secret-key-00000000000000000"
API_KEY = "reliability-api-key"
REGION = "us-east-1"
ALIASES = ("anthropic.claude-3-haiku-*=" + SMOL, "amazon.titan-embed-*=" + EMBED)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shared_models_dir() -> Path:
    d = Path(os.environ.get("OUTCROP_TEST_DATA_DIR", Path.home() / ".cache" / "outcrop-test"))
    for sub in ("models", "cache"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    return d


def new_data_dir(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    shared = shared_models_dir()
    for sub in ("models", "cache"):
        if not (data / sub).exists():
            (data / sub).symlink_to(shared / sub, target_is_directory=True)
    return data


@dataclass
class Live:
    """One server process; ``restart`` keeps its data dir and port."""

    data_dir: Path
    args: list[str]
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 900) -> Live:
        env = {
            **os.environ,
            "OUTCROP_ACCESS_KEY_ID": KEY,
            "OUTCROP_SECRET_ACCESS_KEY": SECRET,
            "OUTCROP_API_KEY": API_KEY,
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("AWS_BEARER_TOKEN_BEDROCK", None)
        self.log = self.data_dir.parent / f"server-{self.port}.log"
        cmd = [
            sys.executable, "-m", "outcrop", "serve", "--host", "127.0.0.1",
            "--port", str(self.port), "--data-dir", str(self.data_dir), *self.args,
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.tail()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(f"server did not start: {self.tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def secrets_in_log(self) -> list[str]:
        """Which of the server's secrets appear anywhere in its log (must be none)."""
        text = self.tail(10**9)
        return [name for name, s in (("secret key", SECRET), ("api key", API_KEY)) if s in text]

    def unhandled_in_log(self) -> int:
        """Tracebacks the app logged as unhandled (each one a 500 or a lost request)."""
        return self.tail(10**9).count("unhandled error")

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log else ""

    def kill(self) -> None:
        """``kill -9``: no shutdown hook runs."""
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def client(self, service: str):
        import boto3
        from botocore.config import Config

        return boto3.client(
            service, endpoint_url=self.url, region_name=REGION, aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            config=Config(read_timeout=300, retries={"max_attempts": 1, "mode": "standard"}),
        )  # fmt: skip

    def rss_bytes(self) -> int:
        """The server process's resident memory (Linux /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))


def server(root: Path, *args: str, preload: bool = True) -> Live:
    extra = [a for alias in ALIASES for a in ("--alias", alias)]
    if preload:
        extra += ["--preload", SMOL]
    return Live(new_data_dir(root), [*extra, *args]).start()


def engine_gauges(url: str) -> tuple[float, float]:
    """(running sequences, queued requests) summed over loaded models, from /metrics."""
    running = queued = 0.0
    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("outcrop_running_sequences{"):
            running += float(line.rsplit(" ", 1)[1])
        elif line.startswith("outcrop_queue_depth{"):
            queued += float(line.rsplit(" ", 1)[1])
    return running, queued
