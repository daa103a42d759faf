"""What the server is measured against, on the same model, threads and workload.

* ``batched_ceiling``: N sequences in lock-step through llama.cpp's batched decode, in
  process, no HTTP: the most this model can do on these cores.
* ``raw_single_stream``: one sequence through the same low-level loop.
* ``memory_bandwidth`` and ``model_tensor_bytes``: the single-stream roofline.

The loops are written out plainly (no engine, scheduler or sampler objects) so that
they stay a true ceiling; only ``LlamaModel`` is reused, for loading.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import llama_cpp as ll
import numpy as np

from outcrop.engines.llamacpp.model import ContextConfig, LlamaModel
from outcrop.models.catalog import ModelCard
from outcrop.service.converse import parse_converse
from outcrop.service.prompt import build_prompt

N_BATCH = 512


@dataclass
class DecodeRun:
    sequences: int
    generated: int
    wall_s: float
    prefill_tokens: int
    prefill_s: float
    decode_rate: float | None = None  # one stream: tokens/s after the first token

    @property
    def tokens_per_s(self) -> float:
        return self.generated / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prefill_tokens / self.prefill_s if self.prefill_s > 0 else 0.0


def prompt_tokens(model: LlamaModel, card: ModelCard, body: dict[str, Any]) -> list[int]:
    """The exact tokens the server feeds the engine for this Converse body."""
    request = parse_converse(body)
    if request.system is None and request.prompt is None and card.default_system:
        request = replace(request, system=card.default_system)
    prompt = build_prompt(
        request,
        model.chat_template(),
        model.token_text(model.bos_token),
        model.token_text(model.eos_token),
        completion_only=card.chat_template == "completion",
    )
    return model.tokenize(prompt.text, add_special=prompt.add_special)


def load_model(path: Path, n_seqs: int, n_ctx_per_seq: int, threads: int) -> LlamaModel:
    return LlamaModel(
        path,
        ContextConfig(
            n_seq_max=n_seqs, n_ctx_per_seq=n_ctx_per_seq, n_batch=N_BATCH, n_threads=threads
        ),
    )


def model_tensor_bytes(model: LlamaModel) -> int:
    """Bytes of all weight tensors: what one decode step reads from memory at least."""
    return int(ll.llama_model_size(model.model))


class _Greedy:
    def __init__(self) -> None:
        params = ll.llama_sampler_chain_default_params()
        params.no_perf = True
        self.chain = ll.llama_sampler_chain_init(params)
        ll.llama_sampler_chain_add(self.chain, ll.llama_sampler_init_greedy())

    def sample(self, ctx: Any, row: int) -> int:
        return ll.llama_sampler_sample(self.chain, ctx, row)

    def free(self) -> None:
        ll.llama_sampler_free(self.chain)


def _prefill(
    model: LlamaModel, batch: Any, sampler: _Greedy, prompts: list[list[int]]
) -> list[int]:
    """Prefill every sequence (seq id = index) in batches of N_BATCH; the first tokens."""
    work = [(s, p, t) for s, prompt in enumerate(prompts) for p, t in enumerate(prompt)]
    first = [-1] * len(prompts)
    for start in range(0, len(work), N_BATCH):
        chunk = work[start : start + N_BATCH]
        for i, (s, p, t) in enumerate(chunk):
            batch.token[i] = t
            batch.pos[i] = p
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = s
            batch.logits[i] = p == len(prompts[s]) - 1
        batch.n_tokens = len(chunk)
        if model.decode(batch) != 0:
            raise RuntimeError("llama_decode failed during prefill")
        for i, (s, p, _) in enumerate(chunk):
            if p == len(prompts[s]) - 1:
                first[s] = sampler.sample(model.ctx, i)
    return first


def _lockstep(
    model: LlamaModel, batch: Any, sampler: _Greedy, prompts: list[list[int]], max_tokens: int
) -> tuple[int, list[float]]:
    """Decode until each sequence hits end-of-generation or max_tokens; (tokens, step times)."""
    last = _prefill(model, batch, sampler, prompts)
    pos = [len(p) for p in prompts]
    count = [0] * len(prompts)
    alive = []
    for s, t in enumerate(last):
        if not model.is_eog(t):
            count[s] = 1
            if max_tokens > 1:
                alive.append(s)
    times = [time.perf_counter()]
    while alive:
        for i, s in enumerate(alive):  # ascending seq ids: engine-notes pitfall 2
            batch.token[i] = last[s]
            batch.pos[i] = pos[s]
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = s
            batch.logits[i] = 1
        batch.n_tokens = len(alive)
        if model.decode(batch) != 0:
            raise RuntimeError("llama_decode failed")
        still = []
        for i, s in enumerate(alive):
            t = sampler.sample(model.ctx, i)
            pos[s] += 1
            last[s] = t
            if model.is_eog(t):
                continue
            count[s] += 1
            if count[s] < max_tokens:
                still.append(s)
        alive = still
        times.append(time.perf_counter())
    return sum(count), times


def batched_ceiling(
    path: Path,
    card: ModelCard,
    body: dict[str, Any] | list[dict[str, Any]],
    *,
    n_seqs: int,
    n_requests: int,
    max_tokens: int,
    n_ctx_per_seq: int,
    threads: int,
) -> DecodeRun:
    """(a) ``n_requests`` in waves of ``n_seqs`` sequences decoded together, no HTTP.

    ``body`` is one request body for all, or one per request (cycled): distinct prompts
    are what a batch of documents looks like, and nothing is shared between them here.
    """
    bodies = body if isinstance(body, list) else [body]
    model = load_model(path, n_seqs, n_ctx_per_seq, threads)
    batch = ll.llama_batch_init(N_BATCH, 0, 1)
    sampler = _Greedy()
    try:
        prompts = [prompt_tokens(model, card, b) for b in bodies]
        generated = prefill_tokens = 0
        prefill_s = 0.0
        t0 = time.perf_counter()
        done = 0
        while done < n_requests:
            wave = [
                prompts[(done + i) % len(prompts)] for i in range(min(n_seqs, n_requests - done))
            ]
            done += len(wave)
            for s in range(n_seqs):
                model.clear_sequence(s)
            w0 = time.perf_counter()
            n, times = _lockstep(model, batch, sampler, wave, max_tokens)
            prefill_s += times[0] - w0
            prefill_tokens += sum(len(p) for p in wave)
            generated += n
        wall = time.perf_counter() - t0
        return DecodeRun(n_seqs, generated, wall, prefill_tokens, prefill_s)
    finally:
        sampler.free()
        ll.llama_batch_free(batch)
        model.close()


class RawSingleStream:
    """(c) one sequence through the low-level loop; ``run()`` may be called repeatedly.

    ``with RawSingleStream(...) as raw: raw.run()`` -- interleave runs with the API's
    single-stream runs so that both see the same machine.
    """

    def __init__(
        self,
        path: Path,
        card: ModelCard,
        body: dict[str, Any],
        *,
        max_tokens: int,
        n_ctx_per_seq: int,
        threads: int,
    ) -> None:
        self.model = load_model(path, 1, n_ctx_per_seq, threads)
        self.batch = ll.llama_batch_init(N_BATCH, 0, 1)
        self.sampler = _Greedy()
        self.prompt = prompt_tokens(self.model, card, body)
        self.max_tokens = max_tokens
        self.tensor_bytes = model_tensor_bytes(self.model)

    def run(self) -> DecodeRun:
        self.model.clear_sequence(0)
        t0 = time.perf_counter()
        n, times = _lockstep(self.model, self.batch, self.sampler, [self.prompt], self.max_tokens)
        t_end = time.perf_counter()
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None
        return DecodeRun(1, n, t_end - t0, len(self.prompt), times[0] - t0, rate)

    def __enter__(self) -> RawSingleStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sampler.free()
        ll.llama_batch_free(self.batch)
        self.model.close()


def memory_bandwidth(mib: int, threads: int, repeats: int = 5) -> dict[str, float]:
    """Best-of-``repeats`` numpy read (sum) and copy bandwidth in bytes/s, 1 and N threads.

    ``read`` counts the bytes read; ``copy`` counts bytes read + written. The roofline uses
    ``read``, the larger of the single- and multi-threaded figures.
    """
    n = mib * 2**20 // 8
    a = np.ones(n)
    b = np.empty_like(a)
    np.copyto(b, a)  # touch every page before timing

    def timed(fn) -> float:
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t)
        return best

    def split(fn) -> None:
        k = max(1, threads)
        bounds = [(i * n // k, (i + 1) * n // k) for i in range(k)]
        list(pool.map(lambda r: fn(*r), bounds))

    with ThreadPoolExecutor(max(1, threads)) as pool:
        read_1 = a.nbytes / timed(lambda: a.sum())
        copy_1 = 2 * a.nbytes / timed(lambda: np.copyto(b, a))
        read_n = a.nbytes / timed(lambda: split(lambda i, j: a[i:j].sum()))
        copy_n = 2 * a.nbytes / timed(lambda: split(lambda i, j: np.copyto(b[i:j], a[i:j])))
    return {
        "read_1thread": read_1,
        "copy_1thread": copy_1,
        f"read_{threads}threads": read_n,
        f"copy_{threads}threads": copy_n,
        "read": max(read_1, read_n),
    }
