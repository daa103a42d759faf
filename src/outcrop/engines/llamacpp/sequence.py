"""One request's state inside the engine: tokens, progress, text decoding, stops."""

from __future__ import annotations

import codecs
import enum
from collections.abc import Callable
from dataclasses import dataclass, field

from outcrop.engines.base import EngineEvent, GenerationRequest
from outcrop.engines.llamacpp.stop import StopMatcher


class Status(enum.Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


@dataclass(eq=False)
class Sequence:
    request: GenerationRequest
    emit: Callable[[EngineEvent], None]
    status: Status = Status.WAITING
    slot: int = -1
    n_prefilled: int = 0
    n_generated: int = 0
    last_token: int = -1
    cancelled: bool = False
    sampler: object | None = None
    loop: object | None = None  # the asyncio loop that consumes this sequence's events
    n_reused: int = 0
    """Prompt tokens whose KV came from the prefix cache (prefill starts after them)."""
    store_points: list[int] = field(default_factory=list)
    """Explicit cache points still to save, ascending (the scheduler cuts chunks there)."""
    n_stored: int = 0
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace")
    )
    _stops: StopMatcher | None = None
    prefill_tokens: list[int] = field(default_factory=list)
    """What prefill feeds the model: the prompt, or after a preemption prompt + output."""
    generated: list[int] = field(default_factory=list)
    preemptions: int = 0
    fed_at: int = -1
    """The scheduler step that last fed this background sequence a token (one beside no
    interactive sequence is fed again after BACKGROUND_STARVE_STEPS)."""

    def __post_init__(self) -> None:
        self._stops = StopMatcher(self.request.stop)
        self.prefill_tokens = self.request.prompt_tokens

    @property
    def background(self) -> bool:
        return self.request.background

    @property
    def n_prompt(self) -> int:
        return len(self.request.prompt_tokens)

    @property
    def n_prefill(self) -> int:
        return len(self.prefill_tokens)

    def preempt(self) -> None:
        """Give the slot back; resuming recomputes prompt + output so far, nothing more.

        Sampling continues where it stopped (same sampler, grammar state and text
        decoder), so a greedy answer is the same as without the preemption.
        """
        self.prefill_tokens = self.request.prompt_tokens + self.generated
        self.n_prefilled = 0
        self.status = Status.WAITING
        self.slot = -1
        self.preemptions += 1

    @property
    def position(self) -> int:
        """Position of the last sampled token, the next one fed to the model."""
        return self.n_prompt + self.n_generated - 1

    def decode_bytes(self, data: bytes) -> tuple[str, str | None]:
        """Turn token bytes into whole characters, then apply stop sequences."""
        text = self._decoder.decode(data)
        if not text:
            return "", None
        return self._stops.feed(text)

    def flush_text(self) -> str:
        tail = self._decoder.decode(b"", final=True)
        out, _ = self._stops.feed(tail) if tail else ("", None)
        return out + self._stops.flush()
