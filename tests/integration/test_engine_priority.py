"""Background work in the real engine: it yields slots to interactive requests and resumes
with exactly the greedy answer it would have given alone."""

from __future__ import annotations

import asyncio

import pytest

from outcrop.engines.base import Finished, GenerationRequest, TextChunk
from outcrop.engines.llamacpp.engine import EngineConfig, LlamaCppEngine, wait_idle
from outcrop.models.catalog import Catalog
from outcrop.models.store import ModelStore
from tests.conftest import SMOL, models_data_dir

pytestmark = pytest.mark.slow

PROMPTS = [
    "Write a short poem about the sea.",
    "List three facts about the Moon.",
    "Explain what a compiler does.",
    "Describe a cat in two sentences.",
]


@pytest.fixture(scope="module")
def engine():
    card = Catalog().get(SMOL)
    path = ModelStore(models_data_dir()).ensure(card)
    eng = LlamaCppEngine(SMOL, path, EngineConfig(slots=2, n_ctx_per_seq=512, max_queue=8))
    yield eng
    eng.close()


def tokens(engine: LlamaCppEngine, text: str) -> list[int]:
    return engine.tokenize(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")


async def run(engine, prompt: str, background: bool, started: asyncio.Event | None = None):
    req = GenerationRequest(tokens(engine, prompt), 48, temperature=0.0, background=background)
    text, finished = "", None
    async for event in engine.generate(req):
        if isinstance(event, TextChunk):
            text += event.text
            if started is not None and not started.is_set():
                started.set()
        elif isinstance(event, Finished):
            finished = event
    return text, finished


def test_preempted_background_work_resumes_with_the_same_greedy_answer(engine):
    async def alone():
        return [await run(engine, p, False) for p in PROMPTS]

    reference = asyncio.run(alone())

    async def mixed():
        began = [asyncio.Event(), asyncio.Event()]
        background = [
            asyncio.create_task(run(engine, PROMPTS[i], True, began[i])) for i in range(2)
        ]
        await asyncio.wait_for(asyncio.gather(*(b.wait() for b in began)), 60)
        # both slots hold background work: interactive arrivals must take them over
        interactive = [asyncio.create_task(run(engine, PROMPTS[i], False)) for i in (2, 3)]
        done_first = await asyncio.gather(*interactive)
        assert not all(b.done() for b in background) or engine.stats().preemptions > 0
        return await asyncio.gather(*background) + done_first

    before = engine.stats().preemptions
    results = asyncio.run(mixed())
    assert engine.stats().preemptions > before
    assert [r[0] for r in results] == [reference[i][0] for i in (0, 1, 2, 3)]
    for (_, fin), (_, ref) in zip(results, [reference[i] for i in (0, 1, 2, 3)], strict=True):
        assert (fin.prompt_tokens, fin.completion_tokens) == (
            ref.prompt_tokens,
            ref.completion_tokens,
        )
    assert wait_idle(engine) and engine.stats().background == 0


def test_background_work_never_takes_interactive_queue_room(engine):
    async def flood():
        gens = [
            engine.generate(GenerationRequest(tokens(engine, "Hi"), 4, 0.0, background=True))
            for _ in range(engine.config.max_queue)  # as many as the interactive queue holds
        ]
        # an interactive request is still accepted (no ThrottlingError)
        text, fin = await run(engine, "Say hello.", False)
        for g in gens:
            async for _ in g:
                pass
        return fin

    assert asyncio.run(flood()).completion_tokens > 0
    assert wait_idle(engine)


def test_an_interactive_arrival_stops_a_background_step_in_flight(engine):
    """A background-only step (nothing interactive about) is stopped mid-way when an
    interactive request arrives; the background answer is unchanged by the restart."""
    long_prompt = "Summarize this in one line: " + "the tide comes in and goes out. " * 40

    async def alone():
        return await run(engine, long_prompt, True)

    reference = asyncio.run(alone())
    assert wait_idle(engine)

    async def mixed():
        background = asyncio.create_task(run(engine, long_prompt, True))
        # The long prompt's prefill is one big step: arrive while it is in flight.
        while not engine._abortable:
            await asyncio.sleep(0.001)
        interactive = await run(engine, PROMPTS[0], False)
        return await background, interactive

    before = engine.stats().aborted_steps
    (text, fin), (itext, _) = asyncio.run(mixed())
    assert engine.stats().aborted_steps > before
    assert text == reference[0] and fin.completion_tokens == reference[1].completion_tokens
    assert itext
    assert wait_idle(engine) and engine.stats().background == 0
