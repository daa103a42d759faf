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
keeps at most its share of the slots and adds at most that share to each step's tokens
(one token per background sequence, on slots beside the interactive ones, at least one a
step): on a CPU a step's time grows with its tokens and ubatches, and an arriving
interactive request waits for the step in flight, so that step must stay short. A step of background work alone may be stopped
mid-way by an arriving interactive request (the engine's abort).

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

BACKGROUND_STARVE_STEPS = 8
"""A background sequence beside no interactive one still gets a token this often."""

Placer = Callable[[Sequence, list[int]], int]
"""Picks (and removes) a free slot for a sequence, and may set its ``n_prefilled`` to
a prefix it found already computed (prefix reuse)."""


def _decode(seq: Sequence) -> StepEntry:
    """A decoding sequence's entry: its last sampled token, logits wanted."""
    return StepEntry(seq, [seq.last_token], seq.position, True)


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
        self.background_share = background_share
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
        self._step_index = 0

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
        # Never an interactive request behind a background prompt: that one trickles in a
        # token a step while interactive work runs.
        return any(
            other.status is Status.PREFILL
            and (seq.background or not other.background)
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
        self._step_index += 1
        entries: list[StepEntry] = []
        budget = self.max_step_tokens
        if self.interactive_recent():
            interactive = [s for s in self.running if not s.background]
            budget = self._fill(entries, interactive, budget)
            # Background work adds at most its share to the step's tokens (one token at
            # least, so a batch always moves): on a CPU a step's time grows with its
            # tokens, and every interactive stream waits for the whole step.
            n_interactive = sum(len(e.tokens) for e in entries)
            allowance = (
                max(1, int(self.background_share * n_interactive))
                if n_interactive
                else self.background_cap
            )
            self._trickle(entries, min(allowance, budget))
        else:
            self._fill(entries, self.running, budget)
        # Per-sequence KV caches want the batch ordered by sequence id (engine-notes
        # pitfall 2: about 2x slower otherwise).
        entries.sort(key=lambda e: e.seq.slot)
        return entries

    def _fill(self, entries: list[StepEntry], seqs: list[Sequence], budget: int) -> int:
        """A decode token for each of ``seqs`` decoding, then prompt chunks within the
        step's token budget; returns the budget left."""
        n_decode = 0
        for seq in seqs:
            if seq.status is Status.DECODE:
                entries.append(_decode(seq))
                n_decode += 1
        # Short prompts (at most one chunk left) may fill the whole step: they finish
        # prefill now and their first token comes a step sooner (a burst of new
        # clients all start together). Long prompts only get ``prefill_chunk`` per step
        # while others decode, so running streams never stall behind them.
        budget -= n_decode
        long_budget = self.prefill_chunk if n_decode else budget
        for seq in seqs:
            if budget <= 0:
                break
            if seq.status is not Status.PREFILL:
                continue
            remaining = seq.n_prefill - seq.n_prefilled
            if remaining <= self.prefill_chunk:
                take = min(remaining, budget)
            else:
                take = min(remaining, budget, long_budget)
                long_budget -= take
            take = self._prefill(entries, seq, take)
            budget -= take
        return budget

    def _trickle(self, entries: list[StepEntry], allowance: int) -> None:
        """One token each (decode or prefill) for background sequences beside the step's
        interactive ones, up to ``allowance``.

        With per-sequence KV caches llama.cpp puts only a run of consecutive sequence ids,
        one token each, in one ubatch, and every further ubatch is another pass over the
        weights that each interactive stream waits for. So: background sequences in the
        gaps of the interactive run first (they join two ubatches into one), then those
        extending it at either end; never a chunk. One left aside that long is fed anyway,
        so every batch record moves.
        """
        background = {s.slot: s for s in self.running if s.background}
        if not background:
            return
        chosen: list[Sequence] = []
        taken = sorted(e.seq.slot for e in entries)
        if taken:
            lo, hi = taken[0], taken[-1]
            chosen = [background[slot] for slot in range(lo + 1, hi) if slot in background]
            while len(chosen) < allowance and (hi + 1 in background or lo - 1 in background):
                if hi + 1 in background:
                    hi += 1
                    chosen.append(background[hi])
                if lo - 1 in background and len(chosen) < allowance:
                    lo -= 1
                    chosen.append(background[lo])
        else:
            chosen = [background[slot] for slot in sorted(background)[:allowance]]
        if not chosen:
            oldest = min(background.values(), key=lambda s: s.fed_at)
            if self._step_index - oldest.fed_at >= BACKGROUND_STARVE_STEPS:
                chosen = [oldest]
        for seq in chosen:
            if seq.status is Status.DECODE:
                entries.append(_decode(seq))
            elif self._prefill(entries, seq, 1) == 0:
                continue
            seq.fed_at = self._step_index

    def _prefill(self, entries: list[StepEntry], seq: Sequence, take: int) -> int:
        """A prompt chunk of up to ``take`` tokens for ``seq``; returns its length."""
        start = seq.n_prefilled
        take = min(take, seq.n_prefill - start)
        # A chunk ends at the next cache point, so the KV then holds exactly that
        # prefix and the engine can save it.
        for point in seq.store_points:
            if start < point < start + take:
                take = point - start
                break
        if take <= 0:
            return 0
        chunk = seq.prefill_tokens[start : start + take]
        entries.append(StepEntry(seq, chunk, start, start + take == seq.n_prefill))
        return take

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
