"""Where one decode step's time goes at 32 sequences, in process (no HTTP).

The engine counts its own time per step (``EngineStats``: llama_decode, sampling and
text, the rest of the step — scheduling, batch filling, prefix bookkeeping — and the
hand-off to asyncio); this script adds the asyncio side: how long an event waits between
the engine thread's ``call_soon_threadsafe`` and the consumer's coroutine. Side by side,
the same 32 prompts decoded in lock-step by the bare llama-cpp-python loop (the
in-process ceiling) give the step time with no engine around llama_decode.

    python benchmarks/profile_step.py [--data-dir DIR] [--threads 1] [--sequences 32]
                                      [--max-tokens 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

import llama_cpp as ll

import outcrop.engines.llamacpp.engine as engine_mod
from outcrop.bench import baselines, report
from outcrop.bench.client import converse_body
from outcrop.bench.runner import machine
from outcrop.engines.base import Finished, GenerationRequest
from outcrop.engines.llamacpp.engine import EngineConfig, LlamaCppEngine
from outcrop.models.catalog import Catalog
from outcrop.models.store import model_store
from outcrop.settings import Settings

PROMPT = "Write a story about a lighthouse keeper who finds a message in a bottle."


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--model", default="huggingface.smollm2-135m-instruct-v1:0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--sequences", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--json", type=Path)
    a = p.parse_args()

    settings = Settings(**({"data_dir": a.data_dir} if a.data_dir else {}))
    card = Catalog().get(a.model)
    path = model_store(settings).ensure(card, progress=True)
    bodies = [converse_body(f"{PROMPT} Chapter {i}.", a.max_tokens) for i in range(a.sequences)]

    # asyncio hand-off: stamp each batch of events when the engine thread hands it over.
    handoff: list[float] = []
    dispatch = engine_mod._dispatch

    def timed_dispatch(items, stamp=None):
        if stamp is not None:
            handoff.append(time.perf_counter() - stamp)
        dispatch(items)

    def deliver(self) -> None:
        if not self._outbox:
            return
        out, self._outbox = self._outbox, []
        by_loop: dict = {}
        for seq, event in out:
            if not seq.cancelled:
                by_loop.setdefault(seq.loop, []).append((seq, event))
        for loop, items in by_loop.items():
            loop.call_soon_threadsafe(timed_dispatch, items, time.perf_counter())

    LlamaCppEngine._deliver = deliver  # this process only

    eng = LlamaCppEngine(
        card.model_id, path, EngineConfig(slots=a.sequences, n_ctx_per_seq=512, n_threads=a.threads)
    )
    try:
        prompts = [baselines.prompt_tokens(eng.model, card, b) for b in bodies]

        async def one(tokens: list[int]) -> int:
            n = 0
            async for event in eng.generate(GenerationRequest(tokens, a.max_tokens, 0.0)):
                if isinstance(event, Finished):
                    n = event.completion_tokens
            return n

        async def all_at_once() -> list[int]:
            return await asyncio.gather(*(one(t) for t in prompts))

        asyncio.run(one(prompts[0]))  # warm
        before = eng.stats()
        handoff.clear()
        t0 = time.perf_counter()
        generated = sum(asyncio.run(all_at_once()))
        wall = time.perf_counter() - t0
        after = eng.stats()
    finally:
        eng.close()

    steps = after.steps - before.steps
    per = {
        "step_ms": (after.step_seconds - before.step_seconds) / steps * 1000,
        "decode_ms": (after.decode_seconds - before.decode_seconds) / steps * 1000,
        "sample_ms": (after.sample_seconds - before.sample_seconds) / steps * 1000,
        "deliver_ms": (after.deliver_seconds - before.deliver_seconds) / steps * 1000,
    }
    per["other_ms"] = per["step_ms"] - per["decode_ms"] - per["sample_ms"]
    per = {k: round(v, 3) for k, v in per.items()}

    # The bare loop: the same prompts in lock-step, llama_decode and greedy sampling only.
    model = baselines.load_model(path, a.sequences, 512, a.threads)
    batch = ll.llama_batch_init(baselines.N_BATCH, 0, 1)
    sampler = baselines._Greedy()
    try:
        raw_t0 = time.perf_counter()
        raw_tokens, times = baselines._lockstep(model, batch, sampler, prompts, a.max_tokens)
    finally:
        sampler.free()
        ll.llama_batch_free(batch)
        model.close()
    raw_steps = [b - a_ for a_, b in zip(times, times[1:], strict=False)]
    raw_step_ms = sum(raw_steps) / len(raw_steps) * 1000

    out = {
        "machine": machine(),
        "model": a.model,
        "file": path.name,
        "threads": a.threads,
        "sequences": a.sequences,
        "max_tokens": a.max_tokens,
        "engine": {
            "steps": steps,
            "tokens": generated,
            "wall_s": round(wall, 3),
            "tokens_per_s": round(generated / wall, 2),
            "per_step": per,
            "asyncio_handoff_p50_ms": report.to_ms(report.percentile(handoff, 50)),
            "asyncio_handoff_p99_ms": report.to_ms(report.percentile(handoff, 99)),
        },
        "bare_loop": {
            "tokens": raw_tokens,
            "decode_step_ms": round(raw_step_ms, 3),
            "tokens_per_s": round(raw_tokens / (times[-1] - raw_t0), 2),  # prefill included
        },
    }
    print(json.dumps(out, indent=2))
    e = out["engine"]
    print(f"CPU flags: {out['machine']['flags']}")
    print(
        f"engine, {a.sequences} sequences: {per['step_ms']:.1f} ms per step = llama_decode "
        f"{per['decode_ms']:.1f} + sampling/text {per['sample_ms']:.2f} + scheduling/batch "
        f"{per['other_ms']:.2f}; hand-off to asyncio {per['deliver_ms']:.2f} ms per step, "
        f"events wait {e['asyncio_handoff_p50_ms']} ms p50 / {e['asyncio_handoff_p99_ms']} "
        f"ms p99 for the event loop"
    )
    print(
        f"bare lock-step loop: {raw_step_ms:.1f} ms per decode step; engine "
        f"{e['tokens_per_s']} tok/s vs bare {out['bare_loop']['tokens_per_s']} tok/s"
    )
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
