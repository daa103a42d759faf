"""Continuous batching: who gets a slot, and which tokens go into the next step.

Every step decodes one token for each running sequence, and fills what is left of the
step's token budget with prompt chunks of sequences still prefilling. Sequences join
and leave between steps. Long prompts are cut into small chunks while others decode,
which keeps their inter-token latency even; short prompts and an idle engine get the
whole step, which keeps time-to-first-token low.

Two classes: interactive requests always take a free slot first; background ones (batch
records) get the slots left over, and give theirs back at the next step boundary when
interactive requests wait (:meth:`Scheduler.preempt`). While interactive work is about
(running, waiting, or seen within the last ``INTERACTIVE_GRACE_STEPS``), background work
keeps at most its share of the slots, and as many tokens per step (decode and prefill
together, round robin): on a CPU a step's time grows with its tokens, and an arriving
interactive request waits for the step in flight, so that step must stay short.

With prefix reuse on, a waiting sequence whose prompt starts like one another sequence
is computing right now waits for it, then copies that prefix instead of computing it
again: a burst of requests with one system prompt computes it once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from outcrop.engines.llamacpp.sequence import Sequence, Status


@dataclass
class StepEntry:
    seq: Sequence
    tokens: list[int]
    start_pos: int
    wants_logits: bool


INTERACTIVE_GRACE_STEPS = 16
"""Steps after the last interactive sequence during which background work stays capped:
clients that send their next request right after the last one ended find short steps, and
background sequences are not admitted only to be pre-empted a moment later."""

Placer = Callable[[Sequence, list[int]], int]
"""Picks (and removes) a free slot for a sequence, and may set its ``n_prefilled`` to
a prefix it found already computed (prefix reuse)."""


class Scheduler:
    def __init__(
        self,
        n_slots: int,
        max_step_tokens: int,
        prefill_chunk: int,
        background_share: float = 1.0,
        place: Placer | None = None,
        share_min_tokens: int | None = None,
    ) -> None:
        self.n_slots = n_slots
        # Background sequences a step may carry while interactive ones run: each one makes
        # every step longer, so interactive time-to-first-token pays for them.
        self.background_cap = max(1, int(n_slots * background_share))
        self.waiting: deque[Sequence] = deque()
        self.waiting_background: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.free_slots: list[int] = list(range(n_slots - 1, -1, -1))
        self.max_step_tokens = max_step_tokens
        self.prefill_chunk = prefill_chunk
        self.place = place
        self.share_min_tokens = share_min_tokens
        """A shared prefix worth waiting for (None: no prefix reuse, never wait)."""
        self._steps_without_interactive = INTERACTIVE_GRACE_STEPS

    def add(self, seq: Sequence) -> None:
        (self.waiting_background if seq.background else self.waiting).append(seq)

    def has_work(self) -> bool:
        return bool(self.waiting or self.waiting_background or self.running)

    def _interactive_active(self) -> bool:
        return bool(self.waiting) or any(not s.background for s in self.running)

    def interactive_recent(self) -> bool:
        """Interactive work runs, waits, or ran within the last few steps."""
        return (
            self._interactive_active() or self._steps_without_interactive < INTERACTIVE_GRACE_STEPS
        )

    def _background_room(self) -> int:
        """How many more background sequences may run now."""
        n_bg = sum(1 for s in self.running if s.background)
        if not self.interactive_recent():
            return self.n_slots - n_bg
        return self.background_cap - n_bg

    def preempt(self) -> list[tuple[Sequence, int]]:
        """Background sequences that yield their slots to interactive ones.

        Enough to give every waiting interactive sequence a slot, and to bring background
        work down to its cap while interactive work runs. The most recently admitted go
        first (least work lost); they wait at the head of the background queue. Returns
        (sequence, slot) so the engine clears that KV.
        """
        need = max(len(self.waiting) - len(self.free_slots), -self._background_room(), 0)
        victims: list[tuple[Sequence, int]] = []
        if need <= 0:
            return victims
        for seq in reversed([s for s in self.running if s.background]):
            if len(victims) == need:
                break
            slot = seq.slot
            self.running.remove(seq)
            self.free_slots.append(slot)
            seq.preempt()
            self.waiting_background.appendleft(seq)
            victims.append((seq, slot))
        return victims

    def _prefix_in_progress(self, seq: Sequence) -> bool:
        """Another sequence computes (most of) this one's prompt this step: copying it
        next step costs a memory copy instead of the prefill."""
        if self.share_min_tokens is None:
            return False
        tokens = seq.prefill_tokens
        need = max(self.share_min_tokens, len(tokens) // 2)
        if len(tokens) <= need:
            return False
        head = tokens[:need]
        return any(
            other.status is Status.PREFILL
            and other.n_prefilled < need
            and other.prefill_tokens[:need] == head
            for other in self.running
        )

    def _admit(self) -> None:
        for queue in (self.waiting, self.waiting_background):
            held: list[Sequence] = []
            while queue and self.free_slots:
                if queue is self.waiting_background and self._background_room() <= 0:
                    break
                seq = queue.popleft()
                if self._prefix_in_progress(seq):
                    held.append(seq)
                    continue
                seq.slot = self.place(seq, self.free_slots) if self.place else self.free_slots.pop()
                seq.status = Status.PREFILL
                self.running.append(seq)
            queue.extendleft(reversed(held))

    def schedule(self) -> list[StepEntry]:
        if self._interactive_active():
            self._steps_without_interactive = 0
        else:
            self._steps_without_interactive += 1
        self._admit()
        # While interactive work is about, each background sequence feeds one token per
        # step, prefilling or decoding: on a CPU a step's time grows with its tokens, and
        # every interactive stream waits for the whole step.
        capped = self.interactive_recent()
        entries: list[StepEntry] = []
        n_decode = 0
        for seq in self.running:
            if seq.status is Status.DECODE:
                entries.append(StepEntry(seq, [seq.last_token], seq.position, True))
                n_decode += 1
        # Short prompts (at most one chunk left) may fill the whole step: they finish
        # prefill now and their first token comes a step sooner (a burst of new
        # clients all start together). Long prompts only get ``prefill_chunk`` per step
        # while others decode, so running streams never stall behind them.
        budget = self.max_step_tokens - n_decode
        long_budget = self.prefill_chunk if n_decode else budget
        # Interactive prompts get the prefill budget before background ones.
        for seq in sorted(self.running, key=lambda s: s.background):
            if budget <= 0:
                break
            if seq.status is not Status.PREFILL:
                continue
            start = seq.n_prefilled
            remaining = seq.n_prefill - start
            if seq.background and capped:
                # One token, like a decode: with per-sequence KV caches a longer chunk
                # makes llama.cpp split the step into a second ubatch, a second pass over
                # the weights that every interactive stream waits for.
                take = min(remaining, 1, budget)
            elif remaining <= self.prefill_chunk:
                take = min(remaining, budget)
            else:
                take = min(remaining, budget, long_budget)
                long_budget -= take
            # A chunk ends at the next cache point, so the KV then holds exactly that
            # prefix and the engine can save it.
            for point in seq.store_points:
                if start < point < start + take:
                    take = point - start
                    break
            if take <= 0:
                continue
            chunk = seq.prefill_tokens[start : start + take]
            entries.append(StepEntry(seq, chunk, start, start + take == seq.n_prefill))
            budget -= take
        # Per-sequence KV caches want the batch ordered by sequence id (engine-notes
        # pitfall 2: about 2x slower otherwise).
        entries.sort(key=lambda e: e.seq.slot)
        return entries

    def finish(self, seq: Sequence) -> None:
        """Release a sequence's slot (finished, failed or cancelled)."""
        seq.status = Status.FINISHED
        if seq in self.running:
            self.running.remove(seq)
            self.free_slots.append(seq.slot)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        elif seq in self.waiting_background:
            self.waiting_background.remove(seq)
