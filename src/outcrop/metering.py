"""Prometheus metrics: requests, tokens, latency, queue depth — per model.

One registry per server (no module-level state), rendered at ``GET /metrics``.
Engine gauges are read at scrape time from the model manager, so the hot path only
pays for counters and histogram observations.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from outcrop.models.manager import ModelManager

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_TOKEN_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)


class _EngineCollector:
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def collect(self):
        running = GaugeMetricFamily(
            "outcrop_running_sequences", "Sequences decoding now", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "outcrop_queue_depth", "Requests waiting for a slot", labels=["model"]
        )
        memory = GaugeMetricFamily(
            "outcrop_model_memory_bytes", "Measured memory of a loaded model", labels=["model"]
        )
        cache = _PrefixCacheFamilies()
        for item in self.manager.loaded():
            stats = item.engine.stats()
            running.add_metric([item.card.model_id], stats.running)
            queued.add_metric([item.card.model_id], stats.waiting)
            memory.add_metric([item.card.model_id], item.memory_bytes)
            if getattr(stats, "prefix_cache", False):
                cache.add(item.card.model_id, stats)
        yield running
        yield queued
        yield memory
        yield from cache.families()


class _PrefixCacheFamilies:
    """Prefix-cache figures per model, read from the engines at scrape time."""

    def __init__(self) -> None:
        model = ["model"]
        self.hit_tokens = CounterMetricFamily(
            "outcrop_prefix_cache_hit_tokens",
            "Prompt tokens served from the prefix cache",
            labels=model,
        )
        self.hits = CounterMetricFamily(
            "outcrop_prefix_cache_hits", "Requests that reused a cached prefix", labels=model
        )
        self.misses = CounterMetricFamily(
            "outcrop_prefix_cache_misses", "Requests that found no cached prefix", labels=model
        )
        self.evictions = CounterMetricFamily(
            "outcrop_prefix_cache_evictions", "Saved prefixes evicted (LRU or TTL)", labels=model
        )
        self.computed = CounterMetricFamily(
            "outcrop_prompt_tokens_computed", "Prompt tokens run through the model", labels=model
        )
        self.bytes = GaugeMetricFamily(
            "outcrop_prefix_cache_bytes", "Host memory held by saved prefixes", labels=model
        )
        self.entries = GaugeMetricFamily(
            "outcrop_prefix_cache_entries", "Saved prefixes held in host memory", labels=model
        )

    def add(self, model: str, stats) -> None:  # noqa: ANN001 - EngineStats
        self.hit_tokens.add_metric([model], stats.cache_hit_tokens)
        self.hits.add_metric([model], stats.cache_hits)
        self.misses.add_metric([model], stats.cache_misses)
        self.evictions.add_metric([model], stats.cache_evictions)
        self.computed.add_metric([model], stats.prompt_tokens_computed)
        self.bytes.add_metric([model], stats.cache_bytes)
        self.entries.add_metric([model], stats.cache_entries)

    def families(self):
        return [
            self.hit_tokens, self.hits, self.misses, self.evictions,
            self.computed, self.bytes, self.entries,
        ]  # fmt: skip


class Metrics:
    def __init__(self, manager: ModelManager | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "outcrop_requests",
            "Requests by operation and HTTP status",
            ["operation", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "outcrop_request_seconds", "Time to the response head", ["operation"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.input_tokens = Counter("outcrop_input_tokens", "Prompt tokens", ["model"], registry=r)
        self.output_tokens = Counter(
            "outcrop_output_tokens", "Generated tokens", ["model"], registry=r
        )
        self.ttft = Histogram(
            "outcrop_time_to_first_token_seconds", "Time to first token", ["model"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.itl = Histogram(
            "outcrop_inter_token_latency_seconds", "Time between streamed text pieces", ["model"],
            buckets=_TOKEN_BUCKETS, registry=r,
        )  # fmt: skip
        if manager is not None:
            r.register(_EngineCollector(manager))

    def request(self, operation: str, status: int, seconds: float) -> None:
        self.requests.labels(operation, str(status)).inc()
        self.request_seconds.labels(operation).observe(seconds)

    def usage(self, model: str, input_tokens: int, output_tokens: int) -> None:
        self.input_tokens.labels(model).inc(input_tokens)
        self.output_tokens.labels(model).inc(output_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)
