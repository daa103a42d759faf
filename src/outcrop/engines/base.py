"""The small interfaces engines offer the service layer: text generation and embeddings."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from outcrop.errors import InternalServerError

if TYPE_CHECKING:
    import numpy as np

FinishReason = Literal["eos", "length", "stop"]


@dataclass
class CachePoint:
    """The prompt's first ``position`` tokens form a prefix to keep cached."""

    position: int
    ttl: float | None = None
    """Seconds the entry lives after its last use (None: until evicted)."""


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
    # A GBNF grammar the output must follow (tool calls, structured output).
    grammar: str | None = None
    # Background work (batch records, async invokes) fills only the slots interactive
    # requests leave free, yields them at the next step when one arrives, and never
    # counts against the interactive queue limit.
    background: bool = False
    # Explicit cache points (Bedrock cachePoint, Anthropic cache_control): prefixes the
    # engine should keep in its prompt cache. Reuse of any cached prefix is automatic.
    cache_points: list[CachePoint] = field(default_factory=list)


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
    cached_tokens: int = 0
    """Prompt tokens taken from the prefix cache instead of being computed."""
    stored_tokens: int = 0
    """Length of the longest explicit cache point prefix this request wrote to the cache."""


EngineEvent = TextChunk | Finished


@dataclass
class EngineStats:
    running: int
    waiting: int
    slots: int
    max_queue: int
    steps: int
    tokens_generated: int
    background: int = 0  # background sequences held (running or waiting)
    preemptions: int = 0  # background sequences that yielded a slot, in total
    aborted_steps: int = 0  # background-only steps stopped for an arriving request
    prefix_cache: bool = False
    prompt_tokens: int = 0
    """Prompt tokens of admitted requests."""
    prompt_tokens_computed: int = 0
    """Prompt tokens actually run through the model (the rest came from the cache)."""
    cache_hit_tokens: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    cache_entries: int = 0
    cache_bytes: int = 0
    """Host memory held by this model's prompt-cache entries."""
    cache_evictions: int = 0
    step_seconds: float = 0.0
    """Engine thread time in steps: scheduling, batch filling, decode, sampling."""
    decode_seconds: float = 0.0
    """Of which inside ``llama_decode`` (the model itself)."""
    sample_seconds: float = 0.0
    """Of which sampling and turning tokens into text (per-sequence work)."""
    deliver_seconds: float = 0.0
    """Handing each step's events to the asyncio side."""


class GenerationLost(InternalServerError):
    """The engine serving a generation went away after it had sent tokens (a remote
    replica died). Streams end with an error event; a unary call, whose tokens never
    reached the client, may start again through ``restart``."""

    def __init__(self, message: str, restart: Callable[[], AsyncIterator[EngineEvent]]):
        super().__init__(message)
        self.restart = restart


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


# --------------------------------------------------------------------------- embeddings

Truncate = Literal["NONE", "START", "END"]
"""What to do with a text longer than the model reads: refuse it, or drop tokens from
its start or its end."""


@dataclass
class EmbeddingOutput:
    """Raw sentence embeddings (one row per text, model's own scale: not normalized) and
    the number of tokens the model read for each text, special tokens included."""

    vectors: np.ndarray
    tokens: list[int]


@dataclass
class EmbeddingStats:
    running: int
    """Requests in the forward pass now."""
    waiting: int
    max_queue: int
    max_batch: int
    requests: int
    texts: int
    batches: int
    """Forward passes run: fewer than ``requests`` means requests were batched together."""
    tokens: int


class EmbeddingEngine(ABC):
    """A loaded embedding model that batches concurrent requests together."""

    model_id: str
    dimensions: int
    max_tokens: int
    """Tokens per text the model reads, special tokens included."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens the model would read for ``text`` untruncated, special tokens included."""

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character span of each of ``text``'s tokens, special tokens excluded (chunking
        counts tokens with the model's own tokenizer). Engines without one raise."""
        raise NotImplementedError

    @abstractmethod
    async def embed(self, texts: Sequence[str], *, truncate: Truncate = "NONE") -> EmbeddingOutput:
        """Embed ``texts`` in one request.

        Raises ValidationError when a text is longer than ``max_tokens`` and ``truncate`` is
        ``NONE``, and ThrottlingError at once when the queue is full.
        """

    @abstractmethod
    def stats(self) -> EmbeddingStats: ...

    @abstractmethod
    def close(self) -> None: ...


Engine = TextEngine | EmbeddingEngine
