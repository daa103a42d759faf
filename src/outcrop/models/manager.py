"""Loaded models: pull on first use, load once, share between all requests, unload
what is not needed.

- Concurrent first requests for a model wait on the same load (bounded by
  ``load_timeout``) instead of loading twice; loading runs in a worker thread so the
  server keeps answering meanwhile.
- At most ``max_loaded`` models stay loaded, and their measured memory stays under
  ``memory_budget_bytes``: loading another one unloads the least recently used *idle*
  model first. A model with requests in flight is never unloaded under them.
- A model idle for ``keep_alive`` seconds is unloaded (``None``: never).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from outcrop.engines.base import Engine
from outcrop.errors import ModelNotReadyError, ServiceUnavailableError
from outcrop.models.catalog import ModelCard
from outcrop.models.store import ModelStore

log = logging.getLogger("outcrop.models")

EngineFactory = Callable[[ModelCard, "object"], Engine]


def process_rss() -> int:
    """Resident memory of this process, in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class LoadedModel:
    card: ModelCard
    engine: Engine
    memory_bytes: int = 0
    loaded_at: float = field(default_factory=time.time)
    last_used: float = field(default_factory=time.monotonic)

    def busy(self) -> bool:
        stats = self.engine.stats()
        return stats.running > 0 or stats.waiting > 0

    def idle_seconds(self) -> float:
        return time.monotonic() - self.last_used


class ModelManager:
    def __init__(
        self,
        store: ModelStore,
        factory: EngineFactory,
        *,
        max_loaded: int = 3,
        memory_budget_bytes: int | None = None,
        keep_alive: float | None = 300.0,
        load_timeout: float = 600.0,
    ) -> None:
        self.store = store
        self.factory = factory
        self.max_loaded = max_loaded
        self.memory_budget_bytes = memory_budget_bytes
        self.keep_alive = keep_alive
        self.load_timeout = load_timeout
        self.unloads = 0
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}
        self._load_lock: asyncio.Lock | None = None
        self._reaper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The loop models are loaded on: every change to ``_loaded`` happens there."""

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def loading(self) -> list[str]:
        return list(self._loading)

    async def engine(self, card: ModelCard) -> Engine:
        self._loop = asyncio.get_running_loop()
        self._start_reaper()
        hit = self._loaded.get(card.model_id)
        if hit is not None:
            hit.last_used = time.monotonic()
            return hit.engine
        task = self._loading.get(card.model_id)
        if task is None:
            task = asyncio.create_task(self._load(card))
            self._loading[card.model_id] = task
            task.add_done_callback(lambda _t, mid=card.model_id: self._loading.pop(mid, None))
        try:
            # shield: one impatient client must not cancel a load others wait for.
            loaded = await asyncio.wait_for(asyncio.shield(task), self.load_timeout)
        except TimeoutError as exc:
            raise ModelNotReadyError(
                f"Model {card.model_id} is still loading; retry shortly."
            ) from exc
        loaded.last_used = time.monotonic()
        return loaded.engine

    async def _load(self, card: ModelCard) -> LoadedModel:
        if self._load_lock is None:
            self._load_lock = asyncio.Lock()
        try:
            path = await asyncio.to_thread(self.store.ensure, card)
            # One load at a time: the RSS difference then measures this model alone.
            async with self._load_lock:
                await self._make_room(incoming=card)
                before = process_rss()
                log.info("loading %s from %s", card.model_id, path)
                engine = await asyncio.to_thread(self.factory, card, path)
                memory = max(0, process_rss() - before)
        except ModelNotReadyError as exc:  # its files could not be fetched: say so as is
            log.warning("could not load %s: %s", card.model_id, exc)
            raise
        except Exception as exc:
            log.exception("could not load %s", card.model_id)
            raise ServiceUnavailableError(
                f"Model {card.model_id} could not be loaded: {exc}"
            ) from exc
        loaded = LoadedModel(card, engine, memory_bytes=memory)
        self._loaded[card.model_id] = loaded
        log.info("loaded %s (%.0f MiB)", card.model_id, memory / 2**20)
        return loaded

    def _over_limits(self, extra_models: int, extra_bytes: int) -> bool:
        if len(self._loaded) + extra_models > self.max_loaded:
            return True
        if self.memory_budget_bytes is None:
            return False
        used = sum(m.memory_bytes for m in self._loaded.values())
        return used + extra_bytes > self.memory_budget_bytes

    async def _make_room(self, incoming: ModelCard) -> None:
        # The incoming model's size is not known before it loads: its file size is a
        # floor (weights are mapped in), the measured figure replaces it afterwards.
        estimate = incoming.size_bytes or 0
        while self._over_limits(1, estimate):
            idle = [m for m in self._loaded.values() if not m.busy()]
            if not idle:
                log.warning("over the model limit, but every loaded model is busy")
                return
            victim = min(idle, key=lambda m: m.last_used)
            await self._unload(victim, reason="least recently used")

    async def _unload(self, item: LoadedModel, reason: str) -> None:
        # Removed first (same loop tick as the idle check), so no new request can pick
        # the engine up; closing joins its thread, off the event loop.
        if self._loaded.get(item.card.model_id) is not item:
            return
        del self._loaded[item.card.model_id]
        self.unloads += 1
        log.info("unloading %s (%s)", item.card.model_id, reason)
        await asyncio.to_thread(item.engine.close)

    def _start_reaper(self) -> None:
        if self._reaper is None and self.keep_alive is not None:
            self._reaper = asyncio.create_task(self._reap_idle())

    async def _reap_idle(self) -> None:
        interval = max(0.5, min(30.0, (self.keep_alive or 0) / 4))
        while True:
            await asyncio.sleep(interval)
            for item in list(self._loaded.values()):
                if item.idle_seconds() >= (self.keep_alive or 0) and not item.busy():
                    await self._unload(item, reason=f"idle for {item.idle_seconds():.0f}s")

    def unload(self, model_id: str) -> bool:
        """Unload a model now (a deleted custom model, say), from a worker thread: it runs
        on the manager's loop as every other unload does, counted and logged."""
        item = self._loaded.get(model_id)
        if item is None or self._loop is None:
            return False
        unloading = self._unload(item, reason="deleted")
        asyncio.run_coroutine_threadsafe(unloading, self._loop).result()
        return True

    def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for item in self._loaded.values():
            item.engine.close()
        self._loaded.clear()
