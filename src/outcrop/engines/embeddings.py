"""sentence-transformers engine: one loaded embedding model, concurrent requests batched.

Requests are tokenized (and truncated) by the caller, then queued. One worker thread takes
the first waiting request, gathers whatever else arrives within ``batch_wait_ms`` (up to
``max_batch`` texts), and runs the texts through the model together, shortest first, in
forward passes of at most ``max_batch`` texts. Each caller's rows go back to its event loop
with ``call_soon_threadsafe``.

The model's own Normalize module is skipped: callers get the raw pooled vectors and decide
on normalization themselves (``normalize=False`` must mean something).
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.engines.base import EmbeddingEngine, EmbeddingOutput, EmbeddingStats, Truncate
from outcrop.errors import ModelError, ThrottlingError, ValidationError

log = logging.getLogger("outcrop.engines.embeddings")


@dataclass
class EmbeddingConfig:
    max_batch: int = 32
    """Texts per forward pass, and the size at which a forming batch stops waiting."""
    max_queue: int = 64
    """Requests that may wait; one more is answered with ThrottlingError."""
    batch_wait_ms: float = 3.0
    """How long a forming batch waits for company (a single text takes ~15 ms). Only
    while requests are arriving together: after a batch of one, the next batch takes just
    what is already waiting, so a lone request pays no wait."""
    n_threads: int = 1
    """torch intra-op threads. One by default: torch's threads spin, and with another busy
    process (or our own llama.cpp threads) on a 2-core machine two threads run 10-20x
    slower than one (see engine-notes). ``torch.set_num_threads`` is process-wide."""


@dataclass
class _Job:
    ids: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[np.ndarray]
    cancelled: bool = False


@dataclass
class _Counters:
    running: int = 0
    requests: int = 0
    texts: int = 0
    batches: int = 0
    tokens: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class SentenceTransformerEngine(EmbeddingEngine):
    def __init__(self, model_id: str, path: Path | str, config: EmbeddingConfig | None = None):
        os.environ["HF_HUB_OFFLINE"] = "1"  # before the import: never reach for the Hub
        import torch
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize

        self.config = config or EmbeddingConfig()
        torch.set_num_threads(self.config.n_threads)
        self._torch = torch
        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        model.eval()
        self._modules = [m for m in model if not isinstance(m, Normalize)]
        self._tokenizer = model.tokenizer
        # A fast tokenizer is not safe to call from several threads at once ("Already
        # borrowed"): requests tokenize in asyncio's thread pool, the worker pads.
        self._tokenizer_lock = threading.Lock()
        self.model_id = model_id
        self.dimensions = int(model.get_embedding_dimension())
        self.max_tokens = int(model.max_seq_length)
        self._prefix, self._suffix = self._special_tokens()

        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._counters = _Counters()
        self._busy = False
        self._worker = threading.Thread(target=self._run, name=f"embed-{model_id}", daemon=True)
        self._worker.start()

    # -- tokens -------------------------------------------------------------------------
    def _special_tokens(self) -> tuple[list[int], list[int]]:
        """The ids the tokenizer puts before and after a text (``[CLS]`` / ``[SEP]``)."""
        plain = self._tokenizer("a", add_special_tokens=False)["input_ids"]
        full = self._tokenizer("a")["input_ids"]
        for i in range(len(full) - len(plain) + 1):
            if full[i : i + len(plain)] == plain:
                return full[:i], full[i + len(plain) :]
        raise ValueError(f"{self.model_id}: cannot locate the text among its special tokens")

    def _content_ids(self, texts: Sequence[str]) -> list[list[int]]:
        with self._tokenizer_lock:
            encoded = self._tokenizer(list(texts), add_special_tokens=False, verbose=False)
        return encoded["input_ids"]

    def count_tokens(self, text: str) -> int:
        return len(self._content_ids([text])[0]) + len(self._prefix) + len(self._suffix)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        with self._tokenizer_lock:
            encoded = self._tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
        return [(int(s), int(e)) for s, e in encoded["offset_mapping"]]

    def _prepare(self, texts: Sequence[str], truncate: Truncate) -> list[list[int]]:
        room = self.max_tokens - len(self._prefix) - len(self._suffix)
        out = []
        for i, ids in enumerate(self._content_ids(texts)):
            if len(ids) > room:
                if truncate == "END":
                    ids = ids[:room]
                elif truncate == "START":
                    ids = ids[len(ids) - room :]
                else:
                    where = f" (text {i})" if len(texts) > 1 else ""
                    raise ValidationError(
                        f"Too many input tokens{where}. Max input tokens: {self.max_tokens}, "
                        f"request input token count: {len(ids) + self.max_tokens - room}. "
                        "Shorten the text or allow truncation."
                    )
            out.append(self._prefix + ids + self._suffix)
        return out

    # -- requests -----------------------------------------------------------------------
    async def embed(self, texts: Sequence[str], *, truncate: Truncate = "NONE") -> EmbeddingOutput:
        if not texts:
            return EmbeddingOutput(np.zeros((0, self.dimensions), np.float32), [])
        ids = await asyncio.to_thread(self._prepare, texts, truncate)
        if self._queue.qsize() >= self.config.max_queue:
            raise ThrottlingError(
                f"Too many requests are waiting for {self.model_id}; retry shortly."
            )
        loop = asyncio.get_running_loop()
        job = _Job(ids, loop, loop.create_future())
        self._queue.put(job)
        try:
            vectors = await job.future
        finally:
            job.cancelled = True  # a caller that went away: the worker skips it if it can
        return EmbeddingOutput(vectors, [len(x) for x in ids])

    def stats(self) -> EmbeddingStats:
        c = self._counters
        return EmbeddingStats(
            running=c.running,
            waiting=self._queue.qsize(),
            max_queue=self.config.max_queue,
            max_batch=self.config.max_batch,
            requests=c.requests,
            texts=c.texts,
            batches=c.batches,
            tokens=c.tokens,
        )

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=10)

    # -- worker -------------------------------------------------------------------------
    def _gather(self, first: _Job) -> tuple[list[_Job], bool]:
        """``first`` plus what arrives within the batch window; True once told to stop."""
        jobs, n = [first], len(first.ids)
        window = self.config.batch_wait_ms / 1000 if self._busy else 0.0
        deadline = time.monotonic() + window
        while n < self.config.max_batch:
            left = deadline - time.monotonic()
            try:
                job = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return jobs, True
            jobs.append(job)
            n += len(job.ids)
        return jobs, False

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            if first is None:
                return
            jobs, stop = self._gather(first)
            self._busy = len(jobs) > 1
            jobs = [j for j in jobs if not j.cancelled]
            if not jobs:
                continue
            self._counters.running = len(jobs)
            try:
                vectors = self._encode([ids for job in jobs for ids in job.ids])
            except Exception as exc:  # one bad batch must not kill the worker
                log.exception("embedding batch failed")
                error = ModelError(f"The model failed to embed the input: {exc}")
                for job in jobs:
                    _post(job, _fail, error)
                continue
            finally:
                self._counters.running = 0
            with self._counters.lock:
                self._counters.requests += len(jobs)
            start = 0
            for job in jobs:
                rows = vectors[start : start + len(job.ids)]
                start += len(job.ids)
                _post(job, _deliver, rows)

    def _encode(self, sequences: list[list[int]]) -> np.ndarray:
        """Raw pooled embeddings, shortest texts first in passes of ``max_batch``."""
        torch = self._torch
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        out = np.empty((len(sequences), self.dimensions), np.float32)
        step = self.config.max_batch
        for lo in range(0, len(order), step):
            part = order[lo : lo + step]
            with self._tokenizer_lock:
                features: Any = self._tokenizer.pad(
                    {"input_ids": [sequences[i] for i in part]}, return_tensors="pt"
                )
            with torch.inference_mode():
                for module in self._modules:
                    features = module(features)
            out[part] = features["sentence_embedding"].float().numpy()
            with self._counters.lock:
                self._counters.batches += 1
                self._counters.texts += len(part)
                self._counters.tokens += sum(len(sequences[i]) for i in part)
        return out


def _post(job: _Job, fn: Any, value: Any) -> None:
    """Hand ``value`` to the job's event loop (gone if its caller's loop has closed)."""
    try:
        job.loop.call_soon_threadsafe(fn, job.future, value)
    except RuntimeError:
        pass


def _deliver(future: asyncio.Future[np.ndarray], rows: np.ndarray) -> None:
    if not future.done():
        future.set_result(rows)


def _fail(future: asyncio.Future[np.ndarray], error: Exception) -> None:
    if not future.done():
        future.set_exception(error)
