"""Prefix reuse inside the llama.cpp engine, in process, with the real SmolLM2 weights:
what the HTTP tests cannot see (which engine an entry belongs to, what unloading frees)."""

from __future__ import annotations

import asyncio

import pytest

from outcrop.engines.base import CachePoint, Finished, GenerationRequest, TextChunk
from outcrop.engines.llamacpp.engine import EngineConfig, LlamaCppEngine
from outcrop.engines.prompt_cache import PromptCache, common_prefix
from outcrop.models.catalog import Catalog
from outcrop.models.store import ModelStore
from tests.conftest import GEMMA, SMOL, models_data_dir

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


RIVERS = "\n".join(
    f"Fact {i}: the river number {i} flows into lake number {i * 7 % 13}." for i in range(1, 70)
)
QUESTIONS = (
    "First question: where does river 5 flow?",
    "Second question: where does river 12 flow?",
    "Third question: where does river 40 flow?",
)


async def ask_rivers(eng: LlamaCppEngine, question: str, points: list[CachePoint] | None = None):
    tokens = eng.tokenize(f"{RIVERS}\n{question}\nAnswer:")
    text, fin = [], None
    request = GenerationRequest(tokens, 16, temperature=0.0, cache_points=points or [])
    async for event in eng.generate(request):
        if isinstance(event, TextChunk):
            text.append(event.text)
        else:
            fin = event
    return "".join(text), fin


@pytest.mark.parametrize("model_id", [SMOL, GEMMA])
def test_reused_kv_is_exactly_a_fresh_computation(model_id):
    """Reused in place, and restored from host memory after the only slot was taken, the
    prefix gives the answer a fresh engine gives when its prefill is cut at the same
    position: the reused KV is the same computation, bit for bit. (Cut elsewhere, a cold
    run may differ in near-ties: llama.cpp's CPU kernels round differently for other
    chunk shapes; see docs/benchmarks.md.) Gemma 3 has sliding-window layers."""
    path = ModelStore(models_data_dir(), weight_format="auto").ensure(Catalog().get(model_id))
    warm = engine("warm", path, PromptCache(512 * 2**20), slots=1)
    try:
        tokens = [warm.tokenize(f"{RIVERS}\n{q}\nAnswer:") for q in QUESTIONS]
        cut = common_prefix(tokens[0], tokens[1])
        assert cut == common_prefix(tokens[1], tokens[2]) > 1000
        point = [CachePoint(cut)]  # the first request's prefill ends a chunk there
        asyncio.run(ask_rivers(warm, QUESTIONS[0], point))
        in_place = asyncio.run(ask_rivers(warm, QUESTIONS[1]))
        asyncio.run(run(warm, "What is rule 1?"))  # takes the slot: the rivers go to host
        restored = asyncio.run(ask_rivers(warm, QUESTIONS[2]))
        assert warm.stats().cache_hits >= 2
    finally:
        warm.close()
    for question, (text, fin) in zip(QUESTIONS[1:], (in_place, restored), strict=True):
        assert fin.cached_tokens == cut
        fresh = engine("fresh", path, PromptCache(512 * 2**20), slots=1)
        try:
            again, fin_again = asyncio.run(ask_rivers(fresh, question, point))
        finally:
            fresh.close()
        assert fin_again.cached_tokens == 0 and again == text


def test_a_burst_with_one_system_prompt_computes_it_once(smol_path):
    """Eight requests at once, one long system prompt: it is computed once and copied
    (the scheduler holds the others back a step instead of computing it eight times)."""
    eng = engine("model-burst", smol_path, PromptCache(256 * 2**20), slots=8)
    questions = [f"What is rule {i}?" for i in range(1, 9)]

    async def burst():
        return await asyncio.gather(*(run(eng, q) for q in questions))

    try:
        shared = prefix_len(eng)
        answers = asyncio.run(burst())
        stats = eng.stats()
    finally:
        eng.close()
    assert all(text.strip() and fin.reason in ("length", "eos", "stop") for text, fin in answers)
    assert stats.prompt_tokens > 8 * shared
    # once in full, then only each question's own tail (a few tokens each)
    assert stats.prompt_tokens_computed < stats.prompt_tokens - 6 * shared
    assert sum(fin.cached_tokens for _, fin in answers) >= 7 * shared
