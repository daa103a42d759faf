"""The loop that ties model, scheduler and sequences together.

One thread per loaded model runs ``step()`` while there is work: schedule, fill one
llama_batch, decode (GIL released), sample each sequence that produced logits, and hand
the step's output to the asyncio side in a single ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll

from outcrop.engines.base import (
    EngineEvent,
    EngineStats,
    Finished,
    GenerationRequest,
    TextChunk,
    TextEngine,
)
from outcrop.engines.llamacpp.model import DECODE_ABORTED, ContextConfig, LlamaModel
from outcrop.engines.llamacpp.prefix import COPY_MIN_GAIN, PrefixReuse, weights_identity
from outcrop.engines.llamacpp.sampler import GrammarError, Sampler
from outcrop.engines.llamacpp.scheduler import Scheduler, StepEntry
from outcrop.engines.llamacpp.sequence import Sequence, Status
from outcrop.engines.prompt_cache import PromptCache
from outcrop.errors import InternalServerError, ThrottlingError, ValidationError


class _Failed(Exception):
    """Delivered to a waiting consumer when the engine could not serve its sequence."""


@dataclass
class EngineConfig:
    slots: int = 32
    n_ctx_per_seq: int = 2048
    max_queue: int = 64
    max_step_tokens: int = 512
    prefill_chunk: int = 64
    background_share: float = 1.0
    n_threads: int | None = None
    gpu_layers: int = 0
    llama_log: bool = False
    prompt_cache: PromptCache | None = None
    """The server's host prompt cache; None or an empty budget turns prefix reuse off."""


class LlamaCppEngine(TextEngine):
    def __init__(self, model_id: str, path: Path, config: EngineConfig | None = None) -> None:
        self.model_id = model_id
        self.config = config or EngineConfig()
        self.model = LlamaModel(
            path,
            ContextConfig(
                n_seq_max=self.config.slots,
                n_ctx_per_seq=self.config.n_ctx_per_seq,
                n_batch=self.config.max_step_tokens,
                n_threads=self.config.n_threads,
                n_gpu_layers=self.config.gpu_layers,
                log=self.config.llama_log,
            ),
        )
        self.n_ctx_per_seq = self.model.n_ctx_per_seq
        self._prefix = PrefixReuse(
            self.model,
            self.config.slots,
            self.config.prompt_cache,
            weights_identity(model_id, path),
        )
        self._scheduler = Scheduler(
            self.config.slots,
            self.config.max_step_tokens,
            self.config.prefill_chunk,
            self.config.background_share,
            place=lambda seq, free: self._prefix.place(seq, free, self._scheduler.running),
            share_min_tokens=COPY_MIN_GAIN if self._prefix.enabled else None,
        )
        self._batch = ll.llama_batch_init(self.config.max_step_tokens, 0, 1)
        self._inbox: queue.SimpleQueue[tuple[str, Sequence]] = queue.SimpleQueue()
        self._admit_lock = threading.Lock()
        self._n_queued = 0  # interactive, accepted but not yet holding a slot
        self._n_background = 0  # background, accepted and not yet finished
        self._preemptions = 0
        # A step of background work only, started while no interactive work was about,
        # may be stopped mid-way when an interactive request arrives: it waits for no
        # more than one graph node instead of a whole 32-sequence step.
        self._abort_lock = threading.Lock()
        self._abortable = False
        self._aborted_steps = 0
        self._outbox: list[tuple[Sequence, EngineEvent | Exception]] = []
        self._steps = 0
        self._tokens_generated = 0
        # Where engine time goes (docs/benchmarks.md, "one decode step"): perf_counter
        # reads per step, not per token.
        self._t_step = self._t_decode = self._t_sample = self._t_deliver = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"engine:{model_id}", daemon=True)
        self._thread.start()

    # -- TextEngine -------------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool = True) -> list[int]:
        if self._closed:  # the vocabulary is freed: llama.cpp would abort the process
            raise InternalServerError(f"model {self.model_id} is unloading")
        return self.model.tokenize(text, add_special=add_special)

    def chat_template(self) -> str | None:
        return self.model.chat_template()

    @property
    def bos_text(self) -> str:
        return self.model.token_text(self.model.bos_token)

    @property
    def eos_text(self) -> str:
        return self.model.token_text(self.model.eos_token)

    def stats(self) -> EngineStats:
        p = self._prefix
        held = p.cache.stats(p.owner) if p.cache is not None else None
        return EngineStats(
            running=len(self._scheduler.running),
            waiting=self._n_queued,
            slots=self.config.slots,
            max_queue=self.config.max_queue,
            steps=self._steps,
            tokens_generated=self._tokens_generated,
            background=self._n_background,
            preemptions=self._preemptions,
            aborted_steps=self._aborted_steps,
            prefix_cache=p.enabled,
            prompt_tokens=p.prompt_tokens,
            prompt_tokens_computed=p.computed,
            cache_hit_tokens=p.hit_tokens,
            cache_hits=p.hits,
            cache_misses=p.misses,
            cache_entries=held.entries if held else 0,
            cache_bytes=held.bytes if held else 0,
            cache_evictions=held.evictions if held else 0,
            step_seconds=self._t_step,
            decode_seconds=self._t_decode,
            sample_seconds=self._t_sample,
            deliver_seconds=self._t_deliver,
        )

    def generate(self, request: GenerationRequest) -> AsyncIterator[EngineEvent]:
        if self._closed:
            raise InternalServerError(f"model {self.model_id} is unloading")
        n_prompt = len(request.prompt_tokens)
        if n_prompt == 0:
            raise ValidationError("The prompt is empty.")
        if n_prompt >= self.n_ctx_per_seq:
            raise ValidationError(
                f"Input is too long for requested model: the prompt has {n_prompt} tokens "
                f"and this model serves at most {self.n_ctx_per_seq - 1} per request."
            )
        if request.max_tokens < 1:
            raise ValidationError("maxTokens must be at least 1.")
        try:
            # Built here, not in the engine thread, so a bad grammar is a clean 400.
            sampler = Sampler(request, self.model.vocab)
        except GrammarError as exc:
            raise ValidationError(f"The output constraints could not be compiled: {exc}") from exc
        with self._admit_lock:
            if request.background:
                # Background work brings its own bound; it never takes interactive room.
                if self._n_background >= self.config.slots * 4:
                    sampler.free()
                    raise ThrottlingError(
                        f"Too much background work for {self.model_id}: "
                        f"{self._n_background} sequences. Please retry."
                    )
                self._n_background += 1
            elif self._n_queued >= self.config.max_queue:
                sampler.free()
                raise ThrottlingError(
                    f"Too many requests for {self.model_id}: {self._n_queued} are already "
                    "queued. Please retry."
                )
            else:
                self._n_queued += 1
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[EngineEvent | Exception] = asyncio.Queue()
        seq = Sequence(request, emit=events.put_nowait, loop=loop, sampler=sampler)
        self._inbox.put(("add", seq))
        if not request.background:
            with self._abort_lock:
                if self._abortable:
                    self.model.abort_decode(True)
        return _Generation(self._inbox, seq, events)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._inbox.put(("close", None))  # type: ignore[arg-type]
        self._thread.join(timeout=30)
        self._prefix.close()
        ll.llama_batch_free(self._batch)
        self.model.close()

    # -- engine thread ----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            block = not self._scheduler.has_work()
            if not self._drain_inbox(block):
                break
            if not self._scheduler.has_work():
                continue
            t0 = time.perf_counter()
            try:
                self._step()
            except Exception as exc:  # never let one bad step kill the engine thread
                for seq in list(self._scheduler.running):
                    self._fail(seq, InternalServerError(f"engine step failed: {exc}"))
                self._prefix.failed(list(range(self.config.slots)))
            t1 = time.perf_counter()
            self._t_step += t1 - t0
            self._deliver()
            self._t_deliver += time.perf_counter() - t1
        sched = self._scheduler
        for seq in list(sched.running) + list(sched.waiting) + list(sched.waiting_background):
            self._fail(seq, InternalServerError("the model was unloaded"))
        self._deliver()

    def _drain_inbox(self, block: bool) -> bool:
        while True:
            try:
                kind, seq = self._inbox.get(block=block)
            except queue.Empty:
                return True
            block = False
            if kind == "close":
                return False
            if kind == "add":
                if seq.cancelled:
                    self._release(seq)  # still WAITING: un-counts it, frees its sampler
                    continue
                self._scheduler.add(seq)
            elif kind == "cancel":
                self._release(seq)

    def _dequeued(self) -> None:
        with self._admit_lock:
            self._n_queued -= 1

    def _release(self, seq: Sequence) -> None:
        if seq.status is Status.FINISHED:
            return
        if seq.background:
            with self._admit_lock:
                self._n_background -= 1
        elif seq.status is Status.WAITING:
            self._dequeued()
        if seq.status is not Status.WAITING:
            self._prefix.released(seq.slot)
        if seq.sampler is not None:
            seq.sampler.free()
            seq.sampler = None
        self._scheduler.finish(seq)

    def _fail(self, seq: Sequence, exc: Exception) -> None:
        self._release(seq)
        self._outbox.append((seq, exc))

    def _step(self) -> None:
        for _, slot in self._scheduler.preempt():
            # Its KV stays with the slot: re-placed later, it reuses what is still there.
            self._prefix.released(slot)
            self._preemptions += 1
        waiting_before = len(self._scheduler.waiting)
        entries = self._scheduler.schedule()
        admitted = waiting_before - len(self._scheduler.waiting)
        if admitted:
            with self._admit_lock:
                self._n_queued -= admitted
        if not entries:
            return
        logit_rows = self._fill_batch(entries)
        abortable = not self._scheduler.interactive_recent()  # so: background only
        if abortable:
            with self._abort_lock:
                self._abortable = True
        t0 = time.perf_counter()
        rc = self.model.decode(self._batch)
        t1 = time.perf_counter()
        if abortable:
            with self._abort_lock:
                self._abortable = False
                self.model.abort_decode(False)
        self._t_decode += t1 - t0
        self._steps += 1
        if rc == DECODE_ABORTED and abortable:
            # Back to the state before the step (ubatches already done stay otherwise);
            # its sequences run again, after the interactive request is admitted.
            for entry in entries:
                self.model.truncate_sequence(entry.seq.slot, entry.start_pos)
            self._aborted_steps += 1
            return
        if rc != 0:
            self._prefix.failed([entry.seq.slot for entry in entries])
            for entry in entries:
                self._fail(entry.seq, InternalServerError(f"llama_decode returned {rc}"))
            return
        self._prefix.decoded(entries)
        for entry in entries:
            if entry.seq.status is Status.PREFILL:
                entry.seq.n_prefilled += len(entry.tokens)
        ctx = self.model.ctx
        t0 = time.perf_counter()
        for entry, row in logit_rows:
            seq = entry.seq
            token = seq.sampler.sample(ctx, row)
            self._on_token(seq, token)
        self._t_sample += time.perf_counter() - t0

    def _fill_batch(self, entries: list[StepEntry]) -> list[tuple[StepEntry, int]]:
        batch = self._batch
        tok, pos, nseq, seqid, logits = (
            batch.token,
            batch.pos,
            batch.n_seq_id,
            batch.seq_id,
            batch.logits,
        )
        rows: list[tuple[StepEntry, int]] = []
        i = 0
        for entry in entries:
            slot = entry.seq.slot
            p = entry.start_pos
            for t in entry.tokens:
                tok[i] = t
                pos[i] = p
                nseq[i] = 1
                seqid[i][0] = slot
                logits[i] = 0
                p += 1
                i += 1
            if entry.wants_logits:
                logits[i - 1] = 1
                rows.append((entry, i - 1))
        batch.n_tokens = i
        return rows

    def _on_token(self, seq: Sequence, token: int) -> None:
        if seq.status is Status.PREFILL:
            seq.status = Status.DECODE
        seq.n_generated += 1
        seq.last_token = token
        seq.generated.append(token)
        model = self.model
        if model.is_eog(token):
            seq.n_generated -= 1  # the end-of-turn marker is not part of the answer
            self._finish(seq, "eos", None)
            return
        self._tokens_generated += 1
        text, stop = seq.decode_bytes(model.piece(token))
        if text:
            self._outbox.append((seq, TextChunk(text, 1)))
        if stop is not None:
            self._finish(seq, "stop", stop, flush=False)
        elif seq.n_generated >= seq.request.max_tokens:
            self._finish(seq, "length", None)
        elif seq.position + 1 >= self.n_ctx_per_seq:
            self._finish(seq, "length", None)

    def _finish(self, seq: Sequence, reason: str, stop: str | None, flush: bool = True) -> None:
        if flush:
            tail = seq.flush_text()
            if tail:
                self._outbox.append((seq, TextChunk(tail, 0)))
        self._release(seq)
        self._outbox.append(
            (
                seq,
                Finished(
                    reason,  # type: ignore[arg-type]
                    seq.n_prompt,
                    seq.n_generated,
                    stop,
                    cached_tokens=seq.n_reused,
                    stored_tokens=seq.n_stored,
                ),
            )
        )

    def _deliver(self) -> None:
        if not self._outbox:
            return
        out, self._outbox = self._outbox, []
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for seq, event in out:
            if seq.cancelled:
                continue
            by_loop.setdefault(seq.loop, []).append((seq, event))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_dispatch, items)
            except RuntimeError:
                pass  # that event loop is closed; its consumers are gone


class _Generation:
    """The consumer's view of one sequence: an async iterator of engine events.

    However the consumer stops early — aclose(), cancellation while waiting (client
    disconnect), or dropping an iterator it never started — the sequence is cancelled
    and its slot freed at the engine's next step.
    """

    def __init__(
        self,
        inbox: queue.SimpleQueue,
        seq: Sequence,
        events: asyncio.Queue[EngineEvent | Exception],
    ) -> None:
        self._inbox = inbox
        self._seq = seq
        self._events = events
        self._done = False

    def __aiter__(self) -> _Generation:
        return self

    async def __anext__(self) -> EngineEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            event = await self._events.get()
        except BaseException:
            self._cancel()
            raise
        if isinstance(event, Exception):
            self._done = True
            raise event
        if isinstance(event, Finished):
            self._done = True
        return event

    async def aclose(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if not self._done:
            self._done = True
            self._seq.cancelled = True
            self._inbox.put(("cancel", self._seq))

    def __del__(self) -> None:
        self._cancel()


def _dispatch(items: list[tuple[Sequence, EngineEvent | Exception]]) -> None:
    for seq, event in items:
        seq.emit(event)


def wait_idle(engine: LlamaCppEngine, timeout: float = 10.0) -> bool:
    """Test helper: wait until the engine holds no sequences."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = engine.stats()
        if s.running == 0 and s.waiting == 0:
            return True
        time.sleep(0.01)
    return False
