"""Prefix reuse inside the llama.cpp engine, in process, with the real SmolLM2 weights:
what the HTTP tests cannot see (which engine an entry belongs to, what unloading frees)."""

from __future__ import annotations

import asyncio

import pytest

from outcrop.engines.base import CachePoint, Finished, GenerationRequest, TextChunk
from outcrop.engines.llamacpp.engine import EngineConfig, LlamaCppEngine
from outcrop.engines.prompt_cache import PromptCache
from outcrop.models.catalog import Catalog
from outcrop.models.store import ModelStore
from tests.conftest import SMOL, models_data_dir

pytestmark = pytest.mark.slow

SYSTEM = "\n".join(f"Rule {i}: item {i} needs a short, careful answer." for i in range(1, 30))


@pytest.fixture(scope="module")
def smol_path():
    return ModelStore(models_data_dir(), weight_format="auto").ensure(Catalog().get(SMOL))


def engine(model_id: str, path, cache: PromptCache, slots: int = 2) -> LlamaCppEngine:
    return LlamaCppEngine(
        model_id, path, EngineConfig(slots=slots, n_threads=1, prompt_cache=cache)
    )


async def run(eng: LlamaCppEngine, question: str, points: list[CachePoint] | None = None):
    tokens = eng.tokenize(f"{SYSTEM}\nQ: {question}\nA:")
    text, fin = [], None
    async for event in eng.generate(
        GenerationRequest(tokens, 12, temperature=0.0, cache_points=points or [])
    ):
        if isinstance(event, TextChunk):
            text.append(event.text)
        elif isinstance(event, Finished):
            fin = event
    return "".join(text), fin


def prefix_len(eng: LlamaCppEngine) -> int:
    return len(eng.tokenize(SYSTEM))


def test_entries_belong_to_one_engine_and_go_when_it_closes(smol_path):
    cache = PromptCache(256 * 2**20)
    a = engine("model-a", smol_path, cache)
    b = engine("model-b", smol_path, cache)  # same weights, another model: shares nothing
    try:
        point = [CachePoint(prefix_len(a))]
        _, first = asyncio.run(run(a, "What is rule 1?", point))
        assert first.stored_tokens == point[0].position and first.cached_tokens == 0
        assert cache.bytes > 0 and a.stats().cache_entries == 1
        _, other = asyncio.run(run(b, "What is rule 2?", point))
        assert other.cached_tokens == 0  # a's entry is not offered to b
        _, again = asyncio.run(run(a, "What is rule 3?", point))
        assert again.cached_tokens >= point[0].position
        held_by_b = b.stats().cache_bytes
    finally:
        a.close()
    assert cache.bytes == held_by_b  # unloading a dropped its entries, b's remain
    b.close()
    assert cache.bytes == 0


def test_cache_off_reuses_nothing_and_reports_nothing(smol_path):
    eng = engine("model-off", smol_path, PromptCache(0))
    try:
        _, first = asyncio.run(run(eng, "What is rule 1?", [CachePoint(prefix_len(eng))]))
        _, second = asyncio.run(run(eng, "What is rule 1?", [CachePoint(prefix_len(eng))]))
        assert (second.cached_tokens, second.stored_tokens) == (0, 0)
        stats = eng.stats()
        assert not stats.prefix_cache and stats.cache_hits == 0
        assert stats.prompt_tokens_computed == stats.prompt_tokens  # every token, twice
    finally:
        eng.close()
