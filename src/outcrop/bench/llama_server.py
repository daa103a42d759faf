"""Baseline: llama.cpp's own ``llama-server`` on the shipped weights, same client load.

The binary is built from the llama.cpp source vendored in the llama-cpp-python sdist of
the installed version (so both sides run the same llama.cpp), once, and cached under the
data dir. If the build is not possible here (no cmake / compiler, no sdist), the bench
says why and skips this baseline; it never fakes it.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from outcrop.bench.client import LoadResult, RequestResult
from outcrop.bench.serverproc import LoopbackServer


def binary_path(cache_dir: Path) -> Path:
    return cache_dir / f"llama-server-{version('llama-cpp-python')}-{platform.machine()}"


def build(cache_dir: Path, say: Callable[[str], None]) -> Path:
    """Build llama-server (minutes). Raises RuntimeError with the reason when impossible."""
    target = binary_path(cache_dir)
    if target.exists():
        return target
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed")
    ver = version("llama-cpp-python")
    with tempfile.TemporaryDirectory(prefix="outcrop-llama-server-") as tmp:
        work = Path(tmp)
        say(f"llama-server: fetching the llama-cpp-python {ver} sdist")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"llama-cpp-python=={ver}", "-d", str(work)],
            check=True, capture_output=True,
        )  # fmt: skip
        (sdist,) = work.glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if "/vendor/llama.cpp/" in m.name]
            tar.extractall(work / "src", members=members, filter="data")
        (source,) = (work / "src").glob("*/vendor/llama.cpp")
        build_dir = work / "build"
        say("llama-server: compiling (about 10 minutes on 2 cores)")
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
             # The default downloads a web UI during the build; the network may be closed.
             "-DLLAMA_USE_PREBUILT_UI=OFF", "-DLLAMA_OPENSSL=OFF", "-DBUILD_SHARED_LIBS=OFF",
             "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
             "-DLLAMA_BUILD_TOOLS=ON", "-DLLAMA_BUILD_SERVER=ON"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(
            ["cmake", "--build", str(build_dir), "--target", "llama-server",
             "-j", str(os.cpu_count() or 2)],
            check=True, capture_output=True,
        )  # fmt: skip
        built = next(build_dir.rglob("llama-server"))
        cache_dir.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copy2(built, partial)
        partial.rename(target)
    return target


class LlamaServer(LoopbackServer):
    """``with LlamaServer(...) as srv:`` runs llama-server on a free loopback port."""

    name = "llama-server"
    start_timeout_s = 300.0
    stop_timeout_s = 20.0

    def __init__(
        self, binary: Path, model: Path, *, parallel: int, n_ctx_per_seq: int, threads: int,
        log_path: Path,
    ) -> None:  # fmt: skip
        super().__init__(log_path)
        self.cmd = [
            str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
            "--parallel", str(parallel), "--ctx-size", str(parallel * n_ctx_per_seq),
            "--threads", str(threads), "--threads-batch", str(threads),
        ]  # fmt: skip


async def _stream_chat(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> RequestResult:
    result = RequestResult(started=time.perf_counter())
    try:
        async with http.stream("POST", url + "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                now = time.perf_counter()
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        result.first_token = result.first_token or now
                        result.delta_times.append(now)
                usage = chunk.get("usage")
                if usage:
                    result.input_tokens = usage.get("prompt_tokens", 0)
                    result.output_tokens = usage.get("completion_tokens", 0)
    except httpx.HTTPError as exc:
        result.error = repr(exc)
    result.finished = time.perf_counter()
    return result


def chat_body(prompt: str, max_tokens: int, system: str | None) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    return {
        "messages": messages + [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def run_load(url: str, body: dict[str, Any], concurrency: int, n_requests: int) -> LoadResult:
    """The same closed-loop load as the outcrop client: ``concurrency`` workers in turn."""
    remaining = n_requests
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                results.append(await _stream_chat(http, url, body))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, n_requests))))
        return LoadResult(results, time.perf_counter() - t0, concurrency)
