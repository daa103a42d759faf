"""A real ``python -m outcrop serve`` on a free loopback port, and its peak memory."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Self

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_bytes(pid: int) -> int | None:
    """The process's high-water resident set (``VmHWM``), else its current RSS."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return psutil.Process(pid).memory_info().rss
    except Exception:
        return None


class LoopbackServer:
    """A child process serving HTTP on a free loopback port.

    ``with`` starts it (``cmd``, output to ``log_path``), waits for ``/health`` and stops it.
    Subclasses set ``cmd`` (and ``env``) in ``__init__`` after calling this one.
    """

    name = "server"
    start_timeout_s = 120.0
    stop_timeout_s = 30.0

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.cmd: list[str] = []
        self.env: dict[str, str] | None = None
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            self.cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self._log_tail()}"
                )
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not start:\n{self._log_tail()}")

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def peak_rss(self) -> int | None:
        return None if self.process is None else peak_rss_bytes(self.process.pid)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


class ServerProcess(LoopbackServer):
    """``with ServerProcess(...) as srv:`` runs ``python -m outcrop serve``."""

    def __init__(
        self,
        data_dir: Path,
        *,
        parallel: int,
        threads: int,
        max_queue: int,
        n_ctx: int,
        log_path: Path,
        instant_engine: bool = False,
    ) -> None:
        super().__init__(log_path)
        self.key = "AKIA" + secrets.token_hex(8).upper()
        self.secret = secrets.token_urlsafe(30)
        env = {
            **os.environ,
            "OUTCROP_ACCESS_KEY_ID": self.key,
            "OUTCROP_SECRET_ACCESS_KEY": self.secret,
            "OUTCROP_N_CTX": str(n_ctx),
            # A bench loads one side while the other waits: the waiting side must not
            # unload its model and pay the load in its next time-to-first-token.
            "OUTCROP_KEEP_ALIVE": "-1",
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("OUTCROP_API_KEY", None)
        env.pop("OUTCROP_CONFIG_FILE", None)
        if instant_engine:
            env["OUTCROP_BENCH_INSTANT_ENGINE"] = "1"
        else:
            env.pop("OUTCROP_BENCH_INSTANT_ENGINE", None)
        self.cmd = [
            sys.executable, "-m", "outcrop", "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(data_dir), "--auth", "sigv4",
            "--parallel", str(parallel), "--threads", str(threads),
            "--max-queue", str(max_queue),
        ]  # fmt: skip
        self.env = env
