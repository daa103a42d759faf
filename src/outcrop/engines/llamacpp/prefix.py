"""Prefix reuse for the batching engine: KV that is already computed is not computed again.

Three places can hold a request's prefix, cheapest first (measured, docs/benchmarks.md):

1. **A free slot** (llama-server's slot affinity): a finished sequence's KV stays in its
   slot, with the exact tokens it encodes. A new request takes the free slot sharing
   the longest prefix, drops the rest of it (``seq_rm``) and prefills only its tail.
   Costs nothing.
2. **A running slot**: another request that holds the prefix right now (8 clients with
   one system prompt). Its KV is copied into the new slot (``llama_memory_seq_cp``;
   with per-sequence caches llama.cpp copies the whole stream buffer at the next decode).
3. **The host prompt cache** (``PromptCache``): saved states
   (``llama_state_seq_get_data``), written when a slot holding something worth keeping
   is handed to an unrelated request, and at explicit cache points (Bedrock
   ``cachePoint``). Restored with ``llama_state_seq_set_data``.

The KV content of every slot is tracked token by token: only tokens that went through
a successful decode are recorded, so a cancelled request leaves an exact, shorter
prefix behind, and a failed decode clears its slots. The last prompt token is always
computed, since its logits pick the first output token.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path

from outcrop.engines.llamacpp.model import LlamaModel
from outcrop.engines.llamacpp.scheduler import StepEntry
from outcrop.engines.llamacpp.sequence import Sequence, Status
from outcrop.engines.prompt_cache import CachedPrefix, PromptCache, common_prefix

log = logging.getLogger("outcrop.engine")

SPILL_MIN_TOKENS = 32
"""A slot's content shorter than this is not worth saving when the slot is reused."""
COPY_MIN_GAIN = 16
"""A copy or restore must save at least this many tokens over the best free slot."""


def weights_identity(model_id: str, path: Path) -> str:
    """Names one loaded engine: the model, its weights file (path, size, mtime) and the
    instance, so entries never pass between models, files or loads."""
    try:
        st = Path(path).stat()
        weights = f"{Path(path).resolve()}:{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        weights = str(path)
    return f"{model_id}|{weights}|{uuid.uuid4().hex}"


class PrefixReuse:
    """Engine-thread only (no locking), except ``stats`` which only reads counters."""

    def __init__(
        self, model: LlamaModel, n_slots: int, cache: PromptCache | None, owner: str
    ) -> None:
        self.model = model
        self.cache = cache
        self.enabled = cache is not None and cache.enabled
        self.owner = owner
        self.kv: list[list[int]] = [[] for _ in range(n_slots)]
        """The tokens whose KV each slot holds, positions 0..len-1."""
        self.used = [0.0] * n_slots
        self._copied_this_step: set[int] = set()
        self.prompt_tokens = 0
        self.computed = 0
        self.hit_tokens = 0
        self.hits = 0
        self.misses = 0
        self.copies = 0
        self.restores = 0
        self.spills = 0

    # -- admission --------------------------------------------------------------------
    def place(self, seq: Sequence, free: list[int], running: list[Sequence]) -> int:
        """The slot for ``seq``, with as much of its prompt as the caches hold."""
        if not seq.preemptions:  # a resumed sequence's prompt was counted when it came
            self.prompt_tokens += len(seq.request.prompt_tokens)
        if self.enabled:
            try:
                return self._place(seq, free, running)
            except Exception:  # a cache fault must cost the reuse, never the request
                log.exception("prefix reuse failed; computing the prompt in full")
        slot = min(free)  # see _place: running sequences kept on consecutive ids
        free.remove(slot)
        self.model.clear_sequence(slot)
        self.kv[slot] = []
        seq.n_reused = seq.n_prefilled = 0
        seq.store_points = []
        return slot

    def _place(self, seq: Sequence, free: list[int], running: list[Sequence]) -> int:
        tokens = seq.prefill_tokens  # a resumed sequence: its prompt and output so far
        limit = len(tokens) - 1
        # Always the lowest free slot: with per-sequence caches llama.cpp decodes one run
        # of consecutive sequence ids per ubatch, so running sequences kept together cost
        # one pass over the weights per step and every gap costs another (measured: 15
        # scattered sequences took 132 ms a step, 8 together 48 ms). A prefix held in
        # another slot is copied here instead of used in place.
        slot = min(free)
        n = self._held(slot, tokens, limit)
        if n < min(SPILL_MIN_TOKENS, limit):
            # A few shared template tokens are not worth keeping what the slot holds
            # (a short prompt seen in full again is).
            n = 0
        free_slot, n_free = self._best_free(tokens, limit, free)
        running_slot, n_run = self._best_running(tokens, limit, running)
        entry, n_host = None, 0
        if self.cache is not None:
            entry, n_host = self.cache.lookup(
                self.owner,
                tokens[:limit],
                lambda e, common: self.model.usable_prefix(e.pos_min, min(common, limit)),
            )
        best = max(n_free if free_slot != slot else 0, n_run, n_host)
        if best >= n + COPY_MIN_GAIN:
            self._keep(slot, 0)
            if free_slot != slot and n_free == best:
                n = self._copy_from(free_slot, slot, n_free)
            elif n_run == best:
                n = self._copy_from(running_slot, slot, n_run)
            else:
                n = self._restore(entry, slot, n_host)
            self._keep(slot, n, save=False)
        else:
            self._keep(slot, n)
        if n:
            self.hits += 1
            self.hit_tokens += n
        else:
            self.misses += 1
        seq.n_reused = n
        seq.n_prefilled = n
        self._plan_stores(seq)
        self.used[slot] = time.monotonic()
        free.remove(slot)
        return slot

    def _held(self, slot: int, tokens: list[int], limit: int) -> int:
        """How much of ``tokens`` the KV in ``slot`` already holds, usable as it is."""
        n = min(common_prefix(self.kv[slot], tokens), limit)
        return self.model.usable_prefix(self.model.sequence_pos_min(slot), n) if n else 0

    def _best_free(self, tokens: list[int], limit: int, free: list[int]) -> tuple[int, int]:
        best, best_key = free[-1], (-1, False, 0.0)
        for slot in free:
            n = min(common_prefix(self.kv[slot], tokens), limit)
            if n:
                n = self.model.usable_prefix(self.model.sequence_pos_min(slot), n)
            key = (n, not self.kv[slot], -self.used[slot])
            if key > best_key:
                best, best_key = slot, key
        return best, best_key[0]

    def _best_running(
        self, tokens: list[int], limit: int, running: list[Sequence]
    ) -> tuple[int, int]:
        best, best_n = -1, 0
        for other in running:
            slot = other.slot
            if slot < 0 or slot in self._copied_this_step:
                continue  # its own KV is still a pending copy
            n = min(common_prefix(self.kv[slot], tokens), limit)
            if n > best_n:
                n = self.model.usable_prefix(self.model.sequence_pos_min(slot), n)
            if n > best_n:
                best, best_n = slot, n
        return best, best_n

    def _keep(self, slot: int, n: int, *, save: bool = True) -> None:
        """Cut ``slot`` down to its first ``n`` tokens. When that loses more than it
        keeps, the whole content goes to the host cache first (a conversation's next
        turn, say, whose slot another request is taking)."""
        held = self.kv[slot]
        lost = len(held) - n
        if save and self.cache is not None and lost >= SPILL_MIN_TOKENS and lost > n:
            if self._save(slot, held, ttl=None):
                self.spills += 1
        if n == 0:
            self.model.clear_sequence(slot)
        else:
            self.model.truncate_sequence(slot, n)
        del held[n:]

    def _copy_from(self, src: int, dst: int, n: int) -> int:
        self.model.copy_sequence(src, dst)
        self.kv[dst] = self.kv[src][:n]
        self._copied_this_step.add(dst)
        self.copies += 1
        return n

    def _restore(self, entry: CachedPrefix | None, slot: int, n: int) -> int:
        assert entry is not None and self.cache is not None
        if not self.model.load_sequence(slot, entry.data, entry.size):
            self.kv[slot] = []
            return 0
        self.cache.touch(entry)
        self.kv[slot] = list(entry.tokens)
        self.restores += 1
        return n

    def _plan_stores(self, seq: Sequence) -> None:
        """Explicit cache points past the reused prefix are saved as prefill reaches them.
        A state that can be cut shorter only needs the last one."""
        points = sorted(
            {
                p.position
                for p in seq.request.cache_points
                if seq.n_reused < p.position < seq.n_prompt
            }
        )
        if points and self.model.can_truncate_states:
            points = points[-1:]
        seq.store_points = points if self.enabled else []

    # -- after each decode ------------------------------------------------------------
    def decoded(self, entries: list[StepEntry]) -> None:
        self._copied_this_step.clear()
        for entry in entries:
            seq = entry.seq
            self.kv[seq.slot].extend(entry.tokens)
            if seq.status is Status.PREFILL:
                self.computed += len(entry.tokens)
                end = entry.start_pos + len(entry.tokens)
                if seq.store_points and seq.store_points[0] == end:
                    seq.store_points.pop(0)
                    if self._save(seq.slot, self.kv[seq.slot], ttl=self._ttl(seq, end)):
                        seq.n_stored = end

    def failed(self, slots: list[int]) -> None:
        """A decode failed: what those slots hold is unknown, so they hold nothing."""
        self._copied_this_step.clear()
        for slot in slots:
            self.model.clear_sequence(slot)
            self.kv[slot] = []

    def released(self, slot: int) -> None:
        """A sequence left its slot: keep its KV for reuse (or clear it when off)."""
        if not self.enabled:
            self.model.clear_sequence(slot)
            self.kv[slot] = []
        self.used[slot] = time.monotonic()

    @staticmethod
    def _ttl(seq: Sequence, position: int) -> float | None:
        ttls = [p.ttl for p in seq.request.cache_points if p.position >= position]
        known = [t for t in ttls if t is not None]
        return max(known) if known else None

    def _save(self, slot: int, tokens: list[int], ttl: float | None) -> bool:
        assert self.cache is not None
        truncatable = self.model.can_truncate_states
        if self.cache.contains(self.owner, tokens, truncatable=truncatable):
            return False
        buf, size = self.model.save_sequence(slot)
        if size <= 0:
            return False
        return self.cache.put(
            self.owner,
            list(tokens),
            buf,
            size,
            pos_min=max(0, self.model.sequence_pos_min(slot)),
            ttl=ttl,
            truncatable=truncatable,
        )

    def close(self) -> None:
        if self.cache is not None:
            self.cache.drop(self.owner)
