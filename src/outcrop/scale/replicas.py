"""What runs inside engine replicas: outcrop's own engines and ModelManager, unchanged.

Plain classes; ``ray_app`` turns them into Serve deployments with per-model options
(names, resources, autoscaling), so one class serves every hot model.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import ray
from ray import serve

from outcrop.engines.base import EngineEvent, EngineStats, GenerationRequest, TextEngine, Truncate
from outcrop.models.catalog import ModelCard
from outcrop.models.manager import ModelManager
from outcrop.models.store import model_store
from outcrop.scale.priority import normal_priority
from outcrop.settings import Settings

# Serve's count-based LRU only steers routing to replicas that hold a model; the
# replica's ModelManager enforces the real limits (model count, memory budget).
POOL_ROUTING_MODELS = 8


def _manager(settings: Settings) -> ModelManager:
    from outcrop.server import engine_factory

    budget = settings.memory_budget_mb
    keep_alive = settings.keep_alive
    return ModelManager(
        model_store(settings),
        engine_factory(settings),
        max_loaded=settings.max_loaded_models,
        memory_budget_bytes=budget * 2**20 if budget else None,
        keep_alive=None if keep_alive is None or keep_alive < 0 else keep_alive,
    )


FLUSH_S = 0.02
"""How long later events wait to travel together: every streamed item costs the replica,
the ingress and Ray's core worker some CPU, which the engine wants. The first event
travels alone, so time to first token does not change."""

_END = object()


async def coalesce(events: AsyncIterator[EngineEvent]) -> AsyncIterator[list[EngineEvent]]:
    """The engine's events in lists: the first alone, then what arrived within FLUSH_S.

    Leaving early (the caller cancelled: its client went away) cancels the pump, which
    closes the engine's generator and frees the sequence at the engine's next step."""
    queue: asyncio.Queue[Any] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in events:
                queue.put_nowait(event)
            queue.put_nowait(_END)
        except Exception as exc:  # ThrottlingError and friends: raised in the caller
            queue.put_nowait(exc)

    task = asyncio.create_task(pump())
    try:
        first = True
        while True:
            batch: list[EngineEvent] = []
            item = await queue.get()
            deadline = asyncio.get_running_loop().time() + (0 if first else FLUSH_S)
            first = False
            while True:
                if item is _END or isinstance(item, Exception):
                    if batch:
                        yield batch
                    if isinstance(item, Exception):
                        raise item
                    return
                batch.append(item)
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0 and queue.empty():
                    break
                try:
                    item = (
                        queue.get_nowait()
                        if not queue.empty()
                        else await asyncio.wait_for(queue.get(), remaining)
                    )
                except TimeoutError:
                    break
            yield batch
    finally:
        task.cancel()


def _node() -> dict[str, Any]:
    return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid()}


class TextEngineReplica:
    """One hot model, loaded when the replica starts (its cold start is the load)."""

    def __init__(self, settings: Settings, card: ModelCard) -> None:
        from outcrop.server import engine_factory

        normal_priority()  # before the engine thread starts: it inherits the niceness
        path = model_store(settings).ensure(card)
        engine = engine_factory(settings)(card, path)
        assert isinstance(engine, TextEngine)
        self.engine = engine

    async def generate(self, request: GenerationRequest) -> AsyncIterator[list[EngineEvent]]:
        async for batch in coalesce(self.engine.generate(request)):
            yield batch

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def node(self) -> dict[str, Any]:
        """Where this replica runs, and what it is generating now."""
        return _node() | {"running": self.engine.stats().running}

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.close()


class PooledEngineReplica:
    """The long tail and custom/imported models: any text model, loaded on demand by the
    replica's ModelManager (memory budget, keep-alive) and multiplexed by model ID."""

    def __init__(self, settings: Settings) -> None:
        normal_priority()
        self.manager = _manager(settings)

    @serve.multiplexed(max_num_models_per_replica=POOL_ROUTING_MODELS)
    async def _routing_entry(self, model_id: str) -> str:
        return model_id

    async def load(self, card: ModelCard) -> int:
        """Load ``card`` here (the ingress's model load); its context per sequence."""
        await self._routing_entry(serve.get_multiplexed_model_id() or card.model_id)
        engine = await self.manager.engine(card)
        assert isinstance(engine, TextEngine)
        return engine.n_ctx_per_seq

    async def generate(self, card: ModelCard, request: GenerationRequest):  # noqa: ANN201
        await self._routing_entry(serve.get_multiplexed_model_id() or card.model_id)
        engine = await self.manager.engine(card)
        assert isinstance(engine, TextEngine)
        async for batch in coalesce(engine.generate(request)):
            yield batch

    def loaded(self) -> list[str]:
        return [m.card.model_id for m in self.manager.loaded()]

    def node(self) -> dict[str, Any]:
        return _node()


class EmbeddingReplica:
    """Embedding models (SentenceTransformerEngine batches concurrent requests itself)."""

    def __init__(self, settings: Settings) -> None:
        normal_priority()
        self.manager = _manager(settings)

    async def info(self, card: ModelCard) -> dict[str, int]:
        engine = await self.manager.engine(card)
        return {"dimensions": engine.dimensions, "max_tokens": engine.max_tokens}  # type: ignore[union-attr]

    async def embed(self, card: ModelCard, texts: Sequence[str], truncate: Truncate):  # noqa: ANN201
        engine = await self.manager.engine(card)
        return await engine.embed(texts, truncate=truncate)  # type: ignore[union-attr]

    def node(self) -> dict[str, Any]:
        return _node()
