"""Measure a GGUF model's quality and speed with llama.cpp's low-level API.

Used to judge a converted weight file against the one it was made from
(:mod:`outcrop.models.formats`):

- :func:`perplexity`: of the held-out text that ships with outcrop
  (``outcrop/models/data/heldout.txt``, original expository prose written for this
  purpose). The text is tokenized once, cut into non-overlapping windows of ``window``
  tokens, each window evaluated from an empty KV cache (BOS first when the model adds
  one) with logits for every position; every token after the first of a window is
  scored (log-softmax in numpy). Windows are decoded in sub-batches so that the logits
  buffer stays small for large vocabularies (Gemma: 262,144 entries per row).
- :func:`greedy_answers`: argmax continuations of a small fixed prompt set.
- :func:`decode_probe`: single-stream decode tokens/s over a few steps.

Everything here is deterministic for a given file and thread count (greedy argmax, no
sampling), except the probe's timing.
"""

from __future__ import annotations

import ctypes
import math
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

HELDOUT_RESOURCE = "heldout.txt"
EVAL_TOKENS = 2048
"""Tokens of the held-out text that are evaluated (the file holds ~3,800 SmolLM2
tokens; 2,048 keeps an evaluation of a 135M model at a few seconds on 2 cores)."""
EVAL_WINDOW = 512
LOGITS_BUDGET_BYTES = 64 << 20
"""Cap on one sub-batch's logits (rows x vocabulary x 4 bytes)."""

GREEDY_PROMPTS: tuple[str, ...] = (
    "What is the capital of France?",
    "How many days are there in a week?",
    "Name the three primary colors.",
    "At what temperature does water boil at sea level?",
    "Write a Python function that adds two numbers.",
    "What is the opposite of hot?",
    "Translate 'Good morning' into French.",
    "Give me a short list of fruits.",
)
"""Rendered with the model's own chat template (system prompt "You are a helpful
assistant.") when the GGUF has one, else as ``Question: ...\nAnswer:``."""
GREEDY_SYSTEM = "You are a helpful assistant."
GREEDY_TOKENS = 16


def heldout_text() -> str:
    return resources.files("outcrop.models").joinpath("data", HELDOUT_RESOURCE).read_text("utf-8")


@dataclass
class Perplexity:
    value: float
    tokens: int
    """Scored tokens."""
    seconds: float


class _Evaluator:
    """One model, one context with a single sequence, for evaluation only."""

    def __init__(self, path: Path, n_ctx: int, n_batch: int, n_threads: int | None) -> None:
        import llama_cpp as ll

        from outcrop.engines.llamacpp.model import ContextConfig, LlamaModel

        self.ll = ll
        try:
            self.lm = LlamaModel(
                path,
                ContextConfig(
                    n_seq_max=1, n_ctx_per_seq=n_ctx, n_batch=n_batch, n_threads=n_threads,
                    logits_budget_bytes=LOGITS_BUDGET_BYTES,
                ),
            )  # fmt: skip
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
        self.model, self.ctx, self.vocab = self.lm.model, self.lm.ctx, self.lm.vocab
        self.n_vocab, self.n_batch = self.lm.n_vocab, self.lm.n_batch
        self.batch = ll.llama_batch_init(self.n_batch, 0, 1)
        self.bos = ll.llama_vocab_bos(self.vocab)
        self.adds_bos = bool(ll.llama_vocab_get_add_bos(self.vocab)) and self.bos >= 0

    def close(self) -> None:
        if self.batch is not None:
            self.ll.llama_batch_free(self.batch)
            self.batch = None
        self.lm.close()

    def __enter__(self) -> _Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tokenize(self, text: str, add_special: bool, parse_special: bool = False) -> list[int]:
        return self.lm.tokenize(text, add_special=add_special, parse_special=parse_special)

    def render(self, question: str) -> tuple[str, bool]:
        """(prompt text, whether it already holds the special tokens)."""
        ll = self.ll
        tmpl = ll.llama_model_chat_template(self.model, None)
        if not tmpl:
            return f"Question: {question}\nAnswer:", False
        msgs = (ll.llama_chat_message * 2)(
            ll.llama_chat_message(b"system", GREEDY_SYSTEM.encode()),
            ll.llama_chat_message(b"user", question.encode()),
        )
        buf = ctypes.create_string_buffer(4096)
        n = ll.llama_chat_apply_template(tmpl, msgs, 2, True, buf, 4096)
        if n < 0 or n > 4096:
            return f"Question: {question}\nAnswer:", False
        return buf.raw[:n].decode("utf-8", "replace"), True

    def reset(self) -> None:
        self.ll.llama_memory_clear(self.lm.memory, True)

    def decode(self, tokens: list[int], start_pos: int, all_logits: bool) -> np.ndarray:
        """Decode *tokens* at positions start_pos.. (len <= n_batch); the logits rows
        (all positions, or only the last) as a float32 copy."""
        b = self.batch
        n = len(tokens)
        for i, tok in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = start_pos + i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1 if (all_logits or i == n - 1) else 0
        b.n_tokens = n
        rc = self.ll.llama_decode(self.ctx, b)
        if rc != 0:
            raise RuntimeError(f"llama_decode failed ({rc})")
        rows = n if all_logits else 1
        ptr = self.ll.llama_get_logits(self.ctx)
        return np.ctypeslib.as_array(ptr, shape=(rows, self.n_vocab)).copy()


def _log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log p(target) per row, computed stably in float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return x[np.arange(len(targets)), targets] - lse


def perplexity(
    path: Path,
    text: str | None = None,
    *,
    max_tokens: int = EVAL_TOKENS,
    window: int = EVAL_WINDOW,
    n_threads: int | None = None,
) -> Perplexity:
    """Perplexity of *path* on *text* (default: the shipped held-out text)."""
    t0 = time.perf_counter()
    text = heldout_text() if text is None else text
    with _Evaluator(path, n_ctx=window, n_batch=window, n_threads=n_threads) as ev:
        tokens = ev.tokenize(text, add_special=False)[:max_tokens]
        body = window - 1 if ev.adds_bos else window
        nll = 0.0
        scored = 0
        for start in range(0, len(tokens), body):
            chunk = tokens[start : start + body]
            if len(chunk) < 2:
                break
            seq = ([ev.bos] if ev.adds_bos else []) + chunk
            ev.reset()
            rows: list[np.ndarray] = []
            for off in range(0, len(seq), ev.n_batch):
                rows.append(ev.decode(seq[off : off + ev.n_batch], off, all_logits=True))
            logits = np.concatenate(rows)
            # row i predicts seq[i + 1]: with a BOS, a window's first text token is
            # scored too; without one it is only context
            targets = np.asarray(seq[1:], dtype=np.int64)
            lp = _log_softmax_at(logits[: len(seq) - 1], targets)
            nll -= float(lp.sum())
            scored += len(targets)
    if scored == 0:
        raise ValueError("held-out text too short to evaluate")
    return Perplexity(math.exp(nll / scored), scored, time.perf_counter() - t0)


def greedy_answers(
    path: Path,
    prompts: tuple[str, ...] = GREEDY_PROMPTS,
    *,
    max_new: int = GREEDY_TOKENS,
    n_threads: int | None = None,
) -> list[list[int]]:
    """Greedy (argmax) continuation token ids for each prompt, stopping at end-of-generation."""
    out: list[list[int]] = []
    with _Evaluator(path, n_ctx=256, n_batch=64, n_threads=n_threads) as ev:
        for question in prompts:
            ev.reset()
            prompt, templated = ev.render(question)
            toks = ev.tokenize(prompt, add_special=True, parse_special=templated)
            pos = 0
            logits = None
            for off in range(0, len(toks), ev.n_batch):
                part = toks[off : off + ev.n_batch]
                logits = ev.decode(part, pos, all_logits=False)
                pos += len(part)
            answer: list[int] = []
            for _ in range(max_new):
                tok = int(np.argmax(logits[0]))
                if ev.ll.llama_vocab_is_eog(ev.vocab, tok):
                    break
                answer.append(tok)
                logits = ev.decode([tok], pos, all_logits=False)
                pos += 1
            out.append(answer)
    return out


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    """Share of prompts whose greedy answers are identical."""
    if not a:
        return 1.0
    return sum(1 for x, y in zip(a, b, strict=True) if x == y) / len(a)


def prefix_share(a: list[list[int]], b: list[list[int]]) -> float:
    """Mean share of answer tokens before the first difference (1.0: all identical)."""
    if not a:
        return 1.0
    shares = []
    for x, y in zip(a, b, strict=True):
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        shares.append(n / max(len(x), len(y)) if (x or y) else 1.0)
    return sum(shares) / len(shares)


def decode_probe(
    path: Path, *, steps: int = 24, n_threads: int | None = None, repeats: int = 2
) -> float:
    """Single-stream decode tokens/s: a short prompt, then *steps* one-token decodes
    (best of *repeats* runs, to damp noise from other processes)."""
    best = 0.0
    with _Evaluator(path, n_ctx=256, n_batch=64, n_threads=n_threads) as ev:
        toks = ev.tokenize("The history of the river valley begins", add_special=True)
        for _ in range(repeats):
            ev.reset()
            logits = ev.decode(toks, 0, all_logits=False)
            pos = len(toks)
            tok = int(np.argmax(logits[0]))
            t0 = time.perf_counter()
            for _ in range(steps):
                ev.decode([tok], pos, all_logits=False)
                pos += 1
            dt = time.perf_counter() - t0
            best = max(best, steps / dt)
    return best


def batch_probe(
    path: Path, *, n_seq: int = 32, steps: int = 8, n_threads: int | None = None
) -> float:
    """Lock-step decode tokens/s of *n_seq* sequences (per-sequence KV caches, as the
    engine runs them): what batched serving gains from a format."""
    import llama_cpp as ll

    from outcrop.engines.llamacpp.model import ContextConfig, LlamaModel

    m = LlamaModel(
        path, ContextConfig(n_seq_max=n_seq, n_ctx_per_seq=128, n_batch=512, n_threads=n_threads)
    )
    try:
        prompt = m.tokenize("The history of the river valley begins")
        batch = ll.llama_batch_init(max(n_seq * len(prompt), n_seq), 0, 1)
        try:
            k = 0
            for s in range(n_seq):
                for i, t in enumerate(prompt):
                    batch.token[k], batch.pos[k], batch.n_seq_id[k] = t, i, 1
                    batch.seq_id[k][0] = s
                    batch.logits[k] = 1 if i == len(prompt) - 1 else 0
                    k += 1
            batch.n_tokens = k
            if m.decode(batch) != 0:
                raise RuntimeError("prefill failed")
            pos = len(prompt)
            t0 = time.perf_counter()
            for _ in range(steps):
                for s in range(n_seq):
                    batch.token[s], batch.pos[s], batch.n_seq_id[s] = 100 + s, pos, 1
                    batch.seq_id[s][0] = s
                    batch.logits[s] = 1
                batch.n_tokens = n_seq
                if m.decode(batch) != 0:
                    raise RuntimeError("decode failed")
                pos += 1
            return n_seq * steps / (time.perf_counter() - t0)
        finally:
            ll.llama_batch_free(batch)
    finally:
        m.close()
