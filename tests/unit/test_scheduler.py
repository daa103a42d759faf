"""Continuous-batching scheduler: slots, prefill budget, ordering (no model needed)."""

from __future__ import annotations

from outcrop.engines.base import GenerationRequest
from outcrop.engines.llamacpp.scheduler import (
    BACKGROUND_STARVE_STEPS,
    INTERACTIVE_GRACE_STEPS,
    Scheduler,
)
from outcrop.engines.llamacpp.sequence import Sequence, Status


def seq(n_prompt: int, max_tokens: int = 8) -> Sequence:
    return Sequence(
        GenerationRequest(list(range(1, n_prompt + 1)), max_tokens), emit=lambda e: None
    )


def start_decoding(s: Sequence, token: int = 7) -> None:
    s.n_prefilled = s.n_prompt
    s.status = Status.DECODE
    s.n_generated = 1
    s.last_token = token


def test_admits_up_to_slot_count_and_queues_the_rest():
    sched = Scheduler(n_slots=2, max_step_tokens=512, prefill_chunk=64)
    a, b, c = seq(5), seq(5), seq(5)
    for s in (a, b, c):
        sched.add(s)
    entries = sched.schedule()
    assert {e.seq for e in entries} == {a, b}
    assert list(sched.waiting) == [c]
    assert sorted(s.slot for s in (a, b)) == [0, 1]


def test_whole_short_prompts_prefill_in_one_step_with_logits_on_last_token():
    sched = Scheduler(n_slots=4, max_step_tokens=512, prefill_chunk=64)
    a = seq(10)
    sched.add(a)
    (entry,) = sched.schedule()
    assert entry.tokens == a.request.prompt_tokens and entry.start_pos == 0
    assert entry.wants_logits


def test_long_prompt_is_chunked_while_others_decode():
    sched = Scheduler(n_slots=4, max_step_tokens=512, prefill_chunk=64)
    running = seq(4)
    sched.add(running)
    sched.schedule()
    start_decoding(running)
    long = seq(300)
    sched.add(long)
    entries = sched.schedule()
    by_seq = {e.seq: e for e in entries}
    assert by_seq[running].tokens == [7] and by_seq[running].start_pos == 4
    assert len(by_seq[long].tokens) == 64 and not by_seq[long].wants_logits
    long.n_prefilled += 64
    entries = sched.schedule()
    assert {e.seq: e for e in entries}[long].start_pos == 64


def test_prefill_takes_whole_step_when_nobody_decodes():
    sched = Scheduler(n_slots=4, max_step_tokens=128, prefill_chunk=16)
    long = seq(300)
    sched.add(long)
    (entry,) = sched.schedule()
    assert len(entry.tokens) == 128


def test_batch_is_ordered_by_slot():
    sched = Scheduler(n_slots=8, max_step_tokens=512, prefill_chunk=64)
    seqs = [seq(3) for _ in range(5)]
    for s in seqs:
        sched.add(s)
    sched.schedule()
    for s in seqs:
        start_decoding(s)
    sched.finish(seqs[1])
    late = seq(3)
    sched.add(late)
    slots = [e.seq.slot for e in sched.schedule()]
    assert slots == sorted(slots)


def test_finish_frees_the_slot_for_the_next_waiting_sequence():
    sched = Scheduler(n_slots=1, max_step_tokens=512, prefill_chunk=64)
    a, b = seq(3), seq(3)
    sched.add(a)
    sched.add(b)
    sched.schedule()
    sched.finish(a)
    assert a.status is Status.FINISHED
    (entry,) = sched.schedule()
    assert entry.seq is b and b.slot == 0


def test_burst_of_short_prompts_is_prefilled_together_while_others_decode():
    sched = Scheduler(n_slots=16, max_step_tokens=512, prefill_chunk=64)
    running = seq(4)
    sched.add(running)
    sched.schedule()
    start_decoding(running)
    burst = [seq(40) for _ in range(10)]
    for s in burst:
        sched.add(s)
    entries = sched.schedule()
    prefilled = {e.seq for e in entries if e.seq is not running}
    assert prefilled == set(burst)  # 400 tokens: all fit in one step
    assert all(e.wants_logits for e in entries)


def test_two_long_prompts_share_one_chunk_budget_while_others_decode():
    sched = Scheduler(n_slots=4, max_step_tokens=512, prefill_chunk=64)
    running = seq(4)
    sched.add(running)
    sched.schedule()
    start_decoding(running)
    a, b = seq(300), seq(300)
    sched.add(a)
    sched.add(b)
    entries = {e.seq: e for e in sched.schedule()}
    assert len(entries[a].tokens) == 64 and b not in entries


def bg(n_prompt: int) -> Sequence:
    return Sequence(
        GenerationRequest(list(range(1, n_prompt + 1)), 8, background=True), emit=lambda e: None
    )


def test_interactive_requests_take_free_slots_before_background_ones():
    sched = Scheduler(n_slots=2, max_step_tokens=512, prefill_chunk=64)
    b1, b2 = bg(5), bg(5)
    sched.add(b1)
    sched.add(b2)
    i1 = seq(5)
    sched.add(i1)
    sched.schedule()
    assert i1 in sched.running and list(sched.waiting_background) == [b2]


def test_background_sequences_yield_slots_to_waiting_interactive_ones_and_resume():
    sched = Scheduler(n_slots=2, max_step_tokens=512, prefill_chunk=64)
    b1, b2 = bg(5), bg(5)
    sched.add(b1)
    sched.add(b2)
    sched.schedule()
    for b in (b1, b2):
        start_decoding(b)
        b.generated = [7]
    i1 = seq(4)
    sched.add(i1)
    b2_slot = b2.slot
    assert sched.preempt() == [(b2, b2_slot)]  # the most recently admitted yields
    entries = sched.schedule()
    assert i1 in sched.running and b2 in sched.waiting_background
    assert b2.status is Status.WAITING and b2.preemptions == 1
    # the preempted sequence re-prefills its prompt and what it generated so far
    assert b2.prefill_tokens == [1, 2, 3, 4, 5, 7]
    assert {e.seq for e in entries} == {b1, i1}
    sched.finish(i1)
    fed: list[int] = []
    done = False
    while not done:  # one token a step while the interactive grace lasts
        (entry,) = [e for e in sched.schedule() if e.seq is b2]
        fed += entry.tokens
        b2.n_prefilled += len(entry.tokens)
        done = entry.wants_logits
    assert fed == [1, 2, 3, 4, 5, 7]


def test_no_preemption_while_slots_are_free_or_nothing_interactive_waits():
    sched = Scheduler(n_slots=3, max_step_tokens=512, prefill_chunk=64)
    b1 = bg(5)
    sched.add(b1)
    sched.schedule()
    assert sched.preempt() == []
    sched.add(seq(3))
    assert sched.preempt() == []  # a free slot is there for it


def test_interactive_prompts_get_the_prefill_budget_before_background_ones():
    sched = Scheduler(n_slots=4, max_step_tokens=100, prefill_chunk=64)
    decoding = seq(4)
    sched.add(decoding)
    sched.schedule()
    start_decoding(decoding)
    b = bg(300)
    sched.add(b)
    sched.schedule()  # b is admitted first and starts its prefill
    assert b.status is Status.PREFILL
    b.n_prefilled = 64
    i = seq(300)
    sched.add(i)
    entries = {e.seq: e for e in sched.schedule()}
    # the chunk went to i; b feeds one token, as a decode would
    assert len(entries[i].tokens) == 64 and len(entries[b].tokens) == 1


def test_background_work_is_capped_while_interactive_work_runs_and_uncapped_when_idle():
    sched = Scheduler(n_slots=8, max_step_tokens=512, prefill_chunk=64, background_share=0.25)
    backs = [bg(5) for _ in range(8)]
    for b in backs:
        sched.add(b)
    sched.schedule()
    assert len(sched.running) == 8  # idle: background may use every slot
    for b in backs:
        start_decoding(b)
        b.generated = [7]
    i = seq(4)
    sched.add(i)
    victims = sched.preempt()
    assert len(victims) == 6  # down to the cap of 2 (25% of 8)
    sched.schedule()
    assert sum(1 for s in sched.running if s.background) == 2 and i in sched.running
    sched.finish(i)
    for _ in range(INTERACTIVE_GRACE_STEPS - 1):
        sched.schedule()  # the next interactive request may come right away
        assert sum(1 for s in sched.running if s.background) == 2
    sched.schedule()  # interactive work gone for a while: background takes every slot
    assert sum(1 for s in sched.running if s.background) == 8


def test_background_prompts_feed_one_token_a_step_while_interactive_work_runs():
    sched = Scheduler(n_slots=8, max_step_tokens=512, prefill_chunk=64, background_share=1.0)
    i = seq(4)
    sched.add(i)
    sched.schedule()
    start_decoding(i)
    backs = [bg(40) for _ in range(4)]
    for b in backs:
        sched.add(b)
    entries = sched.schedule()
    # 160 prompt tokens would fit the step, but a step an interactive client waits on
    # carries one token per background sequence (a longer chunk is a second ubatch).
    assert [len(e.tokens) for e in entries if e.seq.background] == [1]
    assert {e.seq for e in entries if not e.seq.background} == {i}


def _decoding(sched: Scheduler, n: int) -> list[Sequence]:
    seqs = [seq(4) for _ in range(n)]
    for s in seqs:
        sched.add(s)
    sched.schedule()
    for s in seqs:
        start_decoding(s)
    return seqs


def _fed(entries) -> list[int]:
    return [e.seq.slot for e in entries if e.seq.background]


def test_background_tokens_stay_within_their_share_beside_the_interactive_run():
    sched = Scheduler(n_slots=16, max_step_tokens=512, prefill_chunk=64, background_share=0.25)
    _decoding(sched, 8)  # slots 0-7
    for _ in range(4):  # the cap: 16 slots x 0.25, slots 8-11
        sched.add(bg(40))
    entries = sched.schedule()
    # 8 interactive decode tokens: background may add 0.25 x 8 = 2, one token each, on the
    # slots that continue the run (one ubatch: llama.cpp takes consecutive ids only)
    assert _fed(entries) == [8, 9]
    assert all(len(e.tokens) == 1 for e in entries)


def test_a_background_sequence_in_a_gap_of_the_interactive_run_is_fed():
    sched = Scheduler(n_slots=16, max_step_tokens=512, prefill_chunk=64, background_share=0.25)
    inter = _decoding(sched, 5)  # slots 0-4
    sched.finish(inter[2])
    sched.add(bg(40))  # takes slot 2, the gap
    sched.add(bg(40))  # slot 5, beside the run
    # 4 interactive tokens allow one background token: the gap's, which turns two
    # ubatches into one
    assert _fed(sched.schedule()) == [2]


def test_a_background_sequence_beside_no_interactive_one_still_moves():
    sched = Scheduler(n_slots=8, max_step_tokens=512, prefill_chunk=64, background_share=0.25)
    _decoding(sched, 1)  # slot 0
    b1, b3 = bg(5), bg(30)
    sched.add(b1)  # slot 1
    sched.add(b3)  # slot 2
    sched.schedule()
    sched.finish(b1)  # slot 1 free: b3 is beside nothing interactive
    fed = 0
    for _ in range(2 * BACKGROUND_STARVE_STEPS):
        entries = sched.schedule()
        fed += _fed(entries).count(2)
        for e in entries:
            if e.seq is b3:
                b3.n_prefilled += 1
    assert fed == 2


def test_idle_background_prefill_fills_the_step():
    sched = Scheduler(n_slots=8, max_step_tokens=512, prefill_chunk=64)
    backs = [bg(40) for _ in range(4)]
    for b in backs:
        sched.add(b)
    entries = sched.schedule()
    assert sum(len(e.tokens) for e in entries) == 160


def shared(n_prompt: int, tail: int = 0) -> Sequence:
    """A prompt of ``n_prompt`` tokens that all such prompts share, plus a distinct tail."""
    tokens = list(range(1, n_prompt + 1)) + [1000 + tail] * bool(tail)
    return Sequence(GenerationRequest(tokens, 8), emit=lambda e: None)


def test_a_burst_with_one_prefix_computes_it_once_and_the_rest_wait_to_copy_it():
    def place(seq: Sequence, free: list[int]) -> int:
        # prefix reuse as the engine does it: copy a running slot's computed prefix
        if any(o.status is Status.DECODE and o.n_prompt >= 40 for o in sched.running):
            seq.n_prefilled = seq.n_reused = 40
        return free.pop()

    sched = Scheduler(
        n_slots=8, max_step_tokens=512, prefill_chunk=64, place=place, share_min_tokens=16
    )
    burst = [shared(40, tail=i) for i in range(4)]
    for s in burst:
        sched.add(s)
    entries = sched.schedule()
    assert [e.seq for e in entries] == [burst[0]]  # one computes the shared 40 tokens
    assert list(sched.waiting) == burst[1:]  # the rest wait one step, in order
    start_decoding(burst[0])  # its prefix is now in its slot: the others can copy it
    entries = sched.schedule()
    assert not sched.waiting and all(s in sched.running for s in burst)
    # each computes only its own tail
    assert sorted(len(e.tokens) for e in entries) == [1, 1, 1, 1]


def test_distinct_prompts_and_short_overlaps_do_not_wait():
    sched = Scheduler(n_slots=8, max_step_tokens=512, prefill_chunk=64, share_min_tokens=16)
    a = shared(40)
    b = Sequence(GenerationRequest(list(range(500, 540)), 8), emit=lambda e: None)
    # shares 20 of 60 tokens: less than half its prompt, not worth a step
    c = Sequence(
        GenerationRequest(list(range(1, 21)) + list(range(700, 740)), 8), emit=lambda e: None
    )
    for s in (a, b, c):
        sched.add(s)
    sched.schedule()
    assert not sched.waiting


def test_without_prefix_reuse_nothing_waits_for_a_shared_prefix():
    sched = Scheduler(n_slots=8, max_step_tokens=512, prefill_chunk=64)
    burst = [shared(40, tail=i) for i in range(4)]
    for s in burst:
        sched.add(s)
    sched.schedule()
    assert not sched.waiting
