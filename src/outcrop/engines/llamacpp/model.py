"""A GGUF model and its llama.cpp context, through llama-cpp-python's low-level API.

Tensors in, logits out: this module knows nothing about requests or scheduling.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import llama_cpp as ll
import numpy as np

_backend_lock = threading.Lock()
_backend_ready = False
# ctypes frees a callback's trampoline when the Python object dies; llama.cpp would then
# call freed memory (engine-notes pitfall 1). Keep it alive for the process lifetime.
_LOG_CALLBACK = None


_log_verbose = False

# Stopping a decode in flight: llama.cpp's compute thread polls an abort callback after
# every graph node. A Python callback would take the GIL hundreds of times per step (and
# wait for the event loop's thread each time), so the callback is libc's strlen over a
# two-byte flag: an empty string reads as false, "x" as true (a size_t of 0 or 1 in the
# return register; the caller reads its low byte as the bool).
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)
_ABORT_IF_SET = ll.ggml_abort_callback(ctypes.cast(_LIBC.strlen, ctypes.c_void_p).value)

DECODE_ABORTED = 2
"""llama_decode's status when the abort flag stopped it; the ubatch in flight is
removed from the KV cache, ubatches before it stay."""


def _u8(buf: np.ndarray):
    return buf.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))


def _init_backend(verbose: bool = False) -> None:
    """Once per process; any caller may turn llama.cpp's log on (it stays on)."""
    global _backend_ready, _LOG_CALLBACK, _log_verbose
    with _backend_lock:
        _log_verbose = _log_verbose or verbose
        if _backend_ready:
            return

        @ll.llama_log_callback
        def _log(level, text, user_data):  # noqa: ANN001
            if _log_verbose:
                print(text.decode("utf-8", "replace"), end="", flush=True)

        _LOG_CALLBACK = _log
        ll.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
        ll.llama_backend_init()
        _backend_ready = True


@dataclass
class ContextConfig:
    n_seq_max: int = 32
    n_ctx_per_seq: int = 2048
    n_batch: int = 512
    n_threads: int | None = None
    n_gpu_layers: int = 0
    log: bool = False
    logits_budget_bytes: int | None = None
    """Cap ``n_batch`` so one batch's logits for every position fit (evaluation decodes
    ask for all of them; Gemma's 262k-word vocabulary makes each row 1 MiB)."""


class LlamaModel:
    """Owns a llama_model, its vocabulary and one llama_context for batched decoding."""

    def __init__(self, path: Path, config: ContextConfig) -> None:
        _init_backend(config.log)
        self.path = Path(path)
        self.config = config
        mparams = ll.llama_model_default_params()
        mparams.n_gpu_layers = config.n_gpu_layers
        self.model = ll.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not load {self.path} (not a valid GGUF file?)")
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = ll.llama_model_n_ctx_train(self.model)

        n_ctx_per_seq = min(config.n_ctx_per_seq, self.n_ctx_train)
        n_batch = config.n_batch
        if config.logits_budget_bytes:
            n_batch = max(16, min(n_batch, config.logits_budget_bytes // (4 * self.n_vocab)))
        self.n_batch = min(n_batch, n_ctx_per_seq * config.n_seq_max)
        threads = config.n_threads or max(1, os.cpu_count() or 1)
        cparams = ll.llama_context_default_params()
        cparams.n_ctx = n_ctx_per_seq * config.n_seq_max
        cparams.n_batch = self.n_batch
        cparams.n_ubatch = self.n_batch
        cparams.n_seq_max = config.n_seq_max
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        # Per-sequence KV caches: faster with many sequences and batch-composition
        # independent greedy output (engine-notes pitfalls 2 and 5).
        cparams.kv_unified = False
        cparams.no_perf = True
        self.ctx = ll.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            ll.llama_model_free(self.model)
            raise RuntimeError(f"llama.cpp could not create a context for {self.path}")
        self.n_ctx_per_seq = ll.llama_n_ctx_seq(self.ctx)
        self.memory = ll.llama_get_memory(self.ctx)
        # Sliding-window layers keep only the last n_swa positions: a prefix is reusable
        # only while the window it needs is still held (see usable_prefix).
        self.n_swa = max(0, ll.llama_model_n_swa(self.model))
        self.n_threads = threads
        self._abort_flag = ctypes.create_string_buffer(2)
        ll.llama_set_abort_callback(
            self.ctx, _ABORT_IF_SET, ctypes.cast(self._abort_flag, ctypes.c_void_p)
        )
        self._piece_cache: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)

    # -- vocabulary -------------------------------------------------------------------
    def tokenize(
        self, text: str, *, add_special: bool = True, parse_special: bool = True
    ) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 16
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self.vocab, data, len(data), buf, cap, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render as nothing)."""
        cached = self._piece_cache.get(token)
        if cached is not None:
            return cached
        n = ll.llama_token_to_piece(self.vocab, token, self._piece_buf, 256, 0, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self.vocab, token, big, -n, 0, False)
            out = big.raw[:n]
        else:
            out = self._piece_buf.raw[:n]
        self._piece_cache[token] = out
        return out

    def token_text(self, token: int) -> str:
        """A special token's literal text (e.g. ``<|im_end|>``), for templates."""
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(256)
        n = ll.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", "replace")

    def is_eog(self, token: int) -> bool:
        return bool(ll.llama_vocab_is_eog(self.vocab, token))

    @property
    def bos_token(self) -> int:
        return ll.llama_vocab_bos(self.vocab)

    @property
    def eos_token(self) -> int:
        return ll.llama_vocab_eos(self.vocab)

    @property
    def adds_bos(self) -> bool:
        return bool(ll.llama_vocab_get_add_bos(self.vocab))

    def chat_template(self) -> str | None:
        raw = ll.llama_model_chat_template(self.model, None)
        return raw.decode("utf-8") if raw else None

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = ll.llama_model_meta_val_str(self.model, key.encode(), buf, 4096)
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    # -- decoding ---------------------------------------------------------------------
    def decode(self, batch: ll.llama_batch) -> int:
        """Run one batch; llama_decode releases the GIL while it computes."""
        return ll.llama_decode(self.ctx, batch)

    def abort_decode(self, abort: bool) -> None:
        """Ask a decode in flight (any thread) to stop after its current graph node, or
        clear that request. A decode stopped so returns ``DECODE_ABORTED``."""
        self._abort_flag[0] = b"x" if abort else b"\0"

    def clear_sequence(self, seq_id: int) -> None:
        ll.llama_memory_seq_rm(self.memory, seq_id, -1, -1)

    # -- prefix reuse -----------------------------------------------------------------
    def truncate_sequence(self, seq_id: int, n_keep: int) -> None:
        """Drop a sequence's KV from position ``n_keep`` on (keep its first tokens)."""
        ll.llama_memory_seq_rm(self.memory, seq_id, n_keep, -1)

    def sequence_pos_min(self, seq_id: int) -> int:
        """Smallest position held for every layer (-1: empty)."""
        return ll.llama_memory_seq_pos_min(self.memory, seq_id)

    def usable_prefix(self, pos_min: int, n: int) -> int:
        """How much of an ``n``-token held prefix can continue generation: all of it,
        unless sliding-window layers already dropped positions the next token attends to
        (llama-server's rule, with one position of margin)."""
        if n <= 0 or self.n_swa == 0 or pos_min <= 0 or pos_min < n - self.n_swa:
            return max(n, 0)
        return 0

    @property
    def can_truncate_states(self) -> bool:
        """A saved state can be cut to any shorter prefix (no sliding window)."""
        return self.n_swa == 0

    def copy_sequence(self, src: int, dst: int) -> None:
        """Copy ``src``'s KV into the empty sequence ``dst``. With per-sequence caches this
        copies the whole stream buffer, at the start of the next decode."""
        ll.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def save_sequence(self, seq_id: int) -> tuple[np.ndarray, int]:
        """A sequence's KV state as a host buffer (llama_state_seq_get_data). numpy's
        uninitialised buffer: a zero-filled ctypes array of 33 MiB costs 30-90 ms more."""
        size = ll.llama_state_seq_get_size(self.ctx, seq_id)
        buf = np.empty(max(size, 1), dtype=np.uint8)
        n = ll.llama_state_seq_get_data(self.ctx, _u8(buf), size, seq_id)
        return buf, n

    def load_sequence(self, seq_id: int, buf: np.ndarray, size: int) -> bool:
        """Restore a saved state into ``seq_id`` (emptied first); False if refused."""
        self.clear_sequence(seq_id)
        n = ll.llama_state_seq_set_data(self.ctx, _u8(buf), size, seq_id)
        if n != size:
            self.clear_sequence(seq_id)
            return False
        return True

    def close(self) -> None:
        if getattr(self, "ctx", None):
            ll.llama_free(self.ctx)
            self.ctx = None
        if getattr(self, "model", None):
            ll.llama_model_free(self.model)
            self.model = None
