"""Engines whose tokens come from a Ray Serve deployment: the seam between the ingress's
unchanged service layer and engine replicas anywhere in the cluster.

The ingress's ModelManager builds these instead of local engines (``remote_factory``),
so api/, service/, auth and metering never learn that generation runs elsewhere.
What ``TextEngine`` asks synchronously (tokenize, chat template, special tokens) is
answered locally from the GGUF's vocabulary alone (a few MB, no weights), since a
sync call must not wait on the network from the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from outcrop.engines.base import (
    EmbeddingEngine,
    EmbeddingOutput,
    EmbeddingStats,
    EngineEvent,
    EngineStats,
    Finished,
    GenerationLost,
    GenerationRequest,
    TextEngine,
    Truncate,
)
from outcrop.errors import InternalServerError, OutcropError, ThrottlingError
from outcrop.models.catalog import ModelCard

log = logging.getLogger("outcrop.scale")

# A replica that is gone before it sent anything: the request goes to another one.
_RETRIES_BEFORE_FIRST_EVENT = 3
LOAD_TIMEOUT_S = 180.0
"""How long a model load waits for a pooled or embedding replica (one scaling from zero
needs free CPUs in the cluster); past it the request fails with ServiceUnavailable."""


def _wait_for_replica(loop: asyncio.AbstractEventLoop, call: Callable[[], Any], what: str) -> Any:
    """A remote load's answer, or an error that says why none came. Runs in the model
    manager's worker thread; the call itself is made and awaited on the ingress's event
    loop, the only place a handle may be used when Serve's router shares that loop
    (``RAY_SERVE_THROUGHPUT_OPTIMIZED``)."""

    async def answer() -> Any:
        response = call()
        try:
            return await asyncio.wait_for(response, LOAD_TIMEOUT_S)
        except TimeoutError:
            response.cancel()
            raise RuntimeError(
                f"no {what} replica started within {LOAD_TIMEOUT_S:.0f}s "
                "(does the cluster have free CPUs for it?)"
            ) from None

    return asyncio.run_coroutine_threadsafe(answer(), loop).result()


class ReplicaLostError(GenerationLost):
    """The engine replica serving a generation died after it had sent tokens.

    Streams end with an ``internalServerException`` event (never a clean-looking cut);
    unary calls, whose tokens never reached the client, start again elsewhere."""


def _ray_errors() -> tuple[tuple[type[BaseException], ...], type[BaseException]]:
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError, ReplicaUnavailableError

    return (RayActorError, ActorUnavailableError, ReplicaUnavailableError), BackPressureError


def translate(exc: BaseException) -> BaseException:
    """A Ray error as the outcrop error the HTTP layer renders the Bedrock way."""
    from ray.exceptions import RayTaskError

    lost, backpressure = _ray_errors()
    if isinstance(exc, RayTaskError):  # raised in the replica: its own error, unwrapped
        cause = getattr(exc, "cause", None)
        if isinstance(cause, OutcropError):
            return cause
    if isinstance(exc, OutcropError):
        return exc
    if isinstance(exc, backpressure):
        return ThrottlingError("Too many requests, please wait before trying again.")
    if isinstance(exc, lost):
        return InternalServerError("The model replica serving this request stopped.")
    return exc


def _is_lost(exc: BaseException) -> bool:
    return isinstance(exc, _ray_errors()[0])


class _Counters:
    def __init__(self) -> None:
        self.running = 0
        self.tokens = 0
        self.requests = 0


class RemoteTextEngine(TextEngine):
    """A text model served by a deployment (a hot model's own, or the pooled one)."""

    def __init__(
        self,
        card: ModelCard,
        path: Path,
        handle: Any,
        loop: asyncio.AbstractEventLoop,
        *,
        n_ctx_per_seq: int,
        slots: int,
        max_queue: int,
        multiplexed: bool,
    ) -> None:
        from outcrop.scale.vocab import Vocabulary

        self.model_id = card.model_id
        self.card = card
        if multiplexed:  # load it in a pool replica now, as a local manager would
            ctx = self._load(handle, loop, card)
            n_ctx_per_seq = min(n_ctx_per_seq, ctx)
        self._vocab = Vocabulary(path)
        # As the replica's LlamaModel computes it: never past what the model was trained on.
        self.n_ctx_per_seq = min(n_ctx_per_seq, self._vocab.n_ctx_train or n_ctx_per_seq)
        self._handle = handle
        self._multiplexed = multiplexed
        self._slots = slots
        self._max_queue = max_queue
        self._counters = _Counters()

    @staticmethod
    def _load(handle: Any, loop: asyncio.AbstractEventLoop, card: ModelCard) -> int:
        def call() -> Any:
            return handle.options(multiplexed_model_id=card.model_id).load.remote(card)

        return int(_wait_for_replica(loop, call, "pooled engine"))

    # -- what the service asks synchronously: answered from the local vocabulary -------
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        return self._vocab.tokenize(text, add_special=add_special)

    def chat_template(self) -> str | None:
        return self._vocab.chat_template()

    @property
    def bos_text(self) -> str:
        return self._vocab.token_text(self._vocab.bos_token)

    @property
    def eos_text(self) -> str:
        return self._vocab.token_text(self._vocab.eos_token)

    # -- generation ---------------------------------------------------------------------
    def _call(self, request: GenerationRequest):  # noqa: ANN202
        options: dict[str, Any] = {"stream": True}
        if self._multiplexed:
            options["multiplexed_model_id"] = self.model_id
            return self._handle.options(**options).generate.remote(self.card, request)
        return self._handle.options(**options).generate.remote(request)

    def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        return self._generate(request)

    async def _generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        self._counters.running += 1
        self._counters.requests += 1
        sent = 0
        try:
            for attempt in range(_RETRIES_BEFORE_FIRST_EVENT + 1):
                stream = self._call(request)
                try:
                    async for batch in stream:  # replicas send events in lists
                        for event in batch:
                            sent += 1
                            if isinstance(event, Finished):
                                self._counters.tokens += event.completion_tokens
                            yield event
                    return
                except (asyncio.CancelledError, GeneratorExit):
                    stream.cancel()  # the client went away: free the replica's slot
                    raise
                except Exception as exc:
                    if not _is_lost(exc):
                        raise translate(exc) from exc
                    if sent:
                        log.warning("replica lost mid-generation of %s: %s", self.model_id, exc)
                        raise ReplicaLostError(
                            "The model replica serving this stream stopped; "
                            "the response is incomplete.",
                            restart=lambda: self._generate(request),
                        ) from exc
                    if attempt == _RETRIES_BEFORE_FIRST_EVENT:
                        raise translate(exc) from exc
                    log.info("replica lost before %s answered; retrying", self.model_id)
                    await asyncio.sleep(0.2 * (attempt + 1))
        finally:
            self._counters.running -= 1

    def stats(self) -> EngineStats:
        """What flows through this ingress replica (the engine's own: ``remote_stats``)."""
        c = self._counters
        return EngineStats(
            running=c.running,
            waiting=0,
            slots=self._slots,
            max_queue=self._max_queue,
            steps=0,
            tokens_generated=c.tokens,
        )

    def close(self) -> None:
        self._vocab.close()


class RemoteEmbeddingEngine(EmbeddingEngine):
    """An embedding model served by its own deployment; token counts come from a local
    copy of its tokenizer (chunking asks for them synchronously)."""

    def __init__(
        self, card: ModelCard, path: Path, handle: Any, loop: asyncio.AbstractEventLoop
    ) -> None:
        from transformers import AutoTokenizer

        self.model_id = card.model_id
        self.card = card
        self._handle = handle
        # The factory runs in a worker thread, so waiting here does not block the loop.
        info = _wait_for_replica(loop, lambda: handle.info.remote(card), "embedding")
        self.dimensions = int(info["dimensions"])
        self.max_tokens = int(info["max_tokens"])
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._requests = 0
        self._texts = 0
        self._running = 0

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer(text, verbose=False)["input_ids"])

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        encoded = self._tokenizer(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [(int(s), int(e)) for s, e in encoded["offset_mapping"]]

    async def embed(self, texts: Sequence[str], *, truncate: Truncate = "NONE") -> EmbeddingOutput:
        self._running += 1
        self._requests += 1
        self._texts += len(texts)
        try:
            for attempt in range(_RETRIES_BEFORE_FIRST_EVENT + 1):
                try:
                    return await self._handle.embed.remote(self.card, list(texts), truncate)
                except Exception as exc:  # an embedding is safe to retry whole
                    if not _is_lost(exc) or attempt == _RETRIES_BEFORE_FIRST_EVENT:
                        raise translate(exc) from exc
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise AssertionError("unreachable")
        finally:
            self._running -= 1

    def stats(self) -> EmbeddingStats:
        return EmbeddingStats(
            running=self._running, waiting=0, max_queue=0, max_batch=0,
            requests=self._requests, texts=self._texts, batches=0, tokens=0,
        )  # fmt: skip

    def close(self) -> None:
        pass


def remote_factory(settings: Any, routes: Callable[[ModelCard], tuple[Any, bool]], embed: Any):
    """The ModelManager factory of an ingress replica: a remote engine per card. Built on
    the replica's event loop; the factory then runs in the manager's worker threads."""
    loop = asyncio.get_running_loop()

    def build(card: ModelCard, path: Path):  # noqa: ANN202
        started = time.perf_counter()
        if card.engine == "sentence-transformers":
            engine: Any = RemoteEmbeddingEngine(card, path, embed, loop)
        else:
            handle, multiplexed = routes(card)
            engine = RemoteTextEngine(
                card, path, handle, loop,
                n_ctx_per_seq=min(settings.n_ctx, card.context_length or settings.n_ctx),
                slots=settings.max_batch, max_queue=settings.max_queue, multiplexed=multiplexed,
            )  # fmt: skip
        log.info(
            "remote engine for %s ready in %.2fs", card.model_id, time.perf_counter() - started
        )
        return engine

    return build
