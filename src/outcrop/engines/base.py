"""The one small interface every text engine offers the service layer."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["eos", "length", "stop"]


@dataclass
class GenerationRequest:
    """Tokens in, sampling controls. ``temperature == 0`` means greedy and deterministic."""

    prompt_tokens: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class TextChunk:
    """Newly generated text (whole UTF-8 characters, stop sequences held back)."""

    text: str
    n_tokens: int


@dataclass
class Finished:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    stop_sequence: str | None = None


EngineEvent = TextChunk | Finished


@dataclass
class EngineStats:
    running: int
    waiting: int
    slots: int
    max_queue: int
    steps: int
    tokens_generated: int


class TextEngine(ABC):
    """A loaded text model that serves many concurrent generations."""

    model_id: str
    n_ctx_per_seq: int

    @abstractmethod
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]: ...

    @abstractmethod
    def chat_template(self) -> str | None: ...

    @property
    @abstractmethod
    def bos_text(self) -> str: ...

    @property
    @abstractmethod
    def eos_text(self) -> str: ...

    @abstractmethod
    def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        """Stream a generation. Raises ThrottlingError at once when the queue is full.

        Closing the iterator early (a client that went away) frees the sequence at the
        engine's next step.
        """

    @abstractmethod
    def stats(self) -> EngineStats: ...

    @abstractmethod
    def close(self) -> None: ...
