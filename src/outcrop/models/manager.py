"""Loaded models: pull on first use, load once, share between all requests.

Concurrent first requests for a model wait on the same load instead of loading twice.
Loading runs in a worker thread so the server keeps answering meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from outcrop.engines.base import Engine
from outcrop.errors import ModelNotReadyError, ServiceUnavailableError
from outcrop.models.catalog import ModelCard
from outcrop.models.store import ModelStore

log = logging.getLogger("outcrop.models")

EngineFactory = Callable[[ModelCard, "object"], Engine]
"""Builds the engine a card names (text or embedding) from its installed files."""


@dataclass
class LoadedModel:
    card: ModelCard
    engine: Engine


class ModelManager:
    def __init__(self, store: ModelStore, factory: EngineFactory, load_timeout: float = 600.0):
        self.store = store
        self.factory = factory
        self.load_timeout = load_timeout
        self._loaded: dict[str, LoadedModel] = {}
        self._loading: dict[str, asyncio.Task[LoadedModel]] = {}

    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    async def engine(self, card: ModelCard) -> Engine:
        """The card's loaded engine, whatever the factory built for it."""
        hit = self._loaded.get(card.model_id)
        if hit is not None:
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
        return loaded.engine

    async def _load(self, card: ModelCard) -> LoadedModel:
        try:
            path = await asyncio.to_thread(self.store.ensure, card)
            log.info("loading %s from %s", card.model_id, path)
            engine = await asyncio.to_thread(self.factory, card, path)
        except Exception as exc:
            log.exception("could not load %s", card.model_id)
            raise ServiceUnavailableError(
                f"Model {card.model_id} could not be loaded: {exc}"
            ) from exc
        loaded = LoadedModel(card, engine)
        self._loaded[card.model_id] = loaded
        return loaded

    def unload(self, model_id: str) -> bool:
        """Close a loaded model's engine (a deleted custom model, say)."""
        item = self._loaded.pop(model_id, None)
        if item is None:
            return False
        item.engine.close()
        return True

    def close(self) -> None:
        for item in self._loaded.values():
            item.engine.close()
        self._loaded.clear()
