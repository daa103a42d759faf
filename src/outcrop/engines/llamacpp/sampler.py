"""Per-request sampler chains, run by llama.cpp on the logits row of each sequence."""

from __future__ import annotations

import secrets

import llama_cpp as ll

from outcrop.engines.base import GenerationRequest


class GrammarError(ValueError):
    """llama.cpp could not parse a grammar."""


class Sampler:
    """[grammar ->] top-k -> top-p -> temperature -> seeded draw; greedy at temperature 0."""

    def __init__(self, request: GenerationRequest, vocab: ll.llama_vocab_p) -> None:
        params = ll.llama_sampler_chain_default_params()
        params.no_perf = True
        self._chain = ll.llama_sampler_chain_init(params)
        add = ll.llama_sampler_chain_add
        if request.grammar:
            # First in the chain: every later stage only sees tokens the grammar allows.
            grammar = ll.llama_sampler_init_grammar(vocab, request.grammar.encode(), b"root")
            if not grammar:
                self.free()
                raise GrammarError("llama.cpp rejected the generated grammar")
            add(self._chain, grammar)
        if request.temperature <= 0.0:
            add(self._chain, ll.llama_sampler_init_greedy())
            return
        if request.top_k and request.top_k > 0:
            add(self._chain, ll.llama_sampler_init_top_k(int(request.top_k)))
        if request.top_p is not None and request.top_p < 1.0:
            add(self._chain, ll.llama_sampler_init_top_p(float(request.top_p), 1))
        add(self._chain, ll.llama_sampler_init_temp(float(request.temperature)))
        seed = request.seed if request.seed is not None else secrets.randbits(31)
        add(self._chain, ll.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: ll.llama_context_p, batch_index: int) -> int:
        """Sample from the logits of batch row ``batch_index`` (also accepts the token)."""
        return ll.llama_sampler_sample(self._chain, ctx, batch_index)

    def free(self) -> None:
        if self._chain is not None:
            ll.llama_sampler_free(self._chain)
            self._chain = None
