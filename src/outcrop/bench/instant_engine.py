"""An engine with no model: it answers ``max_tokens`` tokens at once.

For the benchmark of the HTTP and service layers alone (auth, parsing, prompt rendering,
framing). The server uses it only when started with ``OUTCROP_BENCH_INSTANT_ENGINE=1``;
never in normal serving.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from outcrop.engines.base import (
    EngineEvent,
    EngineStats,
    Finished,
    GenerationRequest,
    TextChunk,
    TextEngine,
)

# A ChatML template like SmolLM2's, so prompt rendering costs what it costs for real.
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class InstantEngine(TextEngine):
    """Every generation is ``max_tokens`` one-token chunks of ``" tok"``, then ``length``."""

    def __init__(self, model_id: str, n_ctx_per_seq: int = 4096) -> None:
        self.model_id = model_id
        self.n_ctx_per_seq = n_ctx_per_seq
        self._steps = 0
        self._tokens = 0

    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return list(range(max(1, len(text) // 4)))  # about four characters a token

    def chat_template(self) -> str | None:
        return CHATML

    @property
    def bos_text(self) -> str:
        return ""

    @property
    def eos_text(self) -> str:
        return "<|im_end|>"

    def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        return self._generate(len(request.prompt_tokens), request.max_tokens)

    async def _generate(self, n_prompt: int, n: int) -> AsyncIterator[EngineEvent]:
        self._steps += 1
        self._tokens += n
        for _ in range(n):
            yield TextChunk(" tok", 1)
        yield Finished("length", n_prompt, n)

    def stats(self) -> EngineStats:
        return EngineStats(0, 0, 1, 0, self._steps, self._tokens)

    def close(self) -> None:
        pass
