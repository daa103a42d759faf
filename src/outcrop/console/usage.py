"""A rolling history of the server's own metrics, for the Usage page's charts.

Prometheus counters only say "so far"; a chart needs "when". So the console samples the
counters (tokens, time-to-first-token and inter-token histograms per model, requests) on a
timer and on every read, and keeps the last hour. The page turns deltas into rates.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from typing import Any

from outcrop.metering import Metrics

KEEP = 1800
INTERVAL_S = 2.0


class UsageHistory:
    def __init__(self, metrics: Metrics, interval_s: float = INTERVAL_S) -> None:
        self.metrics = metrics
        self.interval_s = interval_s
        self._samples: deque[dict[str, Any]] = deque(maxlen=KEEP)
        self._lock = threading.Lock()
        self._task: asyncio.Task | None = None
        self.started = time.time()

    def sample(self) -> dict[str, Any]:
        per_model: dict[str, dict[str, float]] = {}

        def put(model: str, key: str, value: float) -> None:
            per_model.setdefault(model, {})[key] = value

        for family, key in ((self.metrics.input_tokens, "in"), (self.metrics.output_tokens, "out")):
            for metric in family.collect():
                for s in metric.samples:
                    if s.name.endswith("_total"):
                        put(s.labels["model"], key, s.value)
        for family, key in ((self.metrics.ttft, "ttft"), (self.metrics.itl, "itl")):
            for metric in family.collect():
                for s in metric.samples:
                    if s.name.endswith("_sum"):
                        put(s.labels["model"], key + "Sum", s.value)
                    elif s.name.endswith("_count"):
                        put(s.labels["model"], key + "Count", s.value)
        requests = errors = 0.0
        for metric in self.metrics.requests.collect():
            for s in metric.samples:
                if s.name.endswith("_total"):
                    requests += s.value
                    errors += s.value if s.labels["status"][:1] in ("4", "5") else 0
        point = {"t": time.time(), "requests": requests, "errors": errors, "models": per_model}
        with self._lock:
            self._samples.append(point)
        return point

    def history(self) -> dict[str, Any]:
        with self._lock:
            fresh = not self._samples or time.time() - self._samples[-1]["t"] >= 0.5
        if fresh:
            self.sample()
        with self._lock:
            samples = list(self._samples)
        return {"since": self.started, "intervalSeconds": self.interval_s, "samples": samples}

    async def run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
