"""What a runtime call means: resolve the model, build the prompt, run the engine.

Converse, InvokeModel and their streaming variants all come through here with a
neutral ChatRequest; the wire layers only translate.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from outcrop.engines.base import (
    CachePoint,
    EngineEvent,
    Finished,
    GenerationLost,
    GenerationRequest,
    TextChunk,
    TextEngine,
)
from outcrop.errors import ValidationError
from outcrop.metering import Metrics
from outcrop.models.catalog import ModelCard
from outcrop.models.manager import ModelManager
from outcrop.models.resolve import ModelResolver, ResolvedModel
from outcrop.service.cache_points import (
    cache_usage,
    engine_points,
    strip_markers,
    token_positions,
)
from outcrop.service.prompt import Prompt, build_prompt
from outcrop.service.tools import ToolPlan, parse_tool_call, plan_output, plan_tools
from outcrop.service.types import ChatRequest, ChatResult, StreamEnd, StreamEvent, TextDelta, Usage

DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.95
_RESTARTS = 2  # unary generations restarted after their engine was lost
_REASONS = {"eos": "end_turn", "length": "max_tokens", "stop": "stop_sequence"}


@dataclass
class Prepared:
    """A validated request, tokenized and admitted to its engine's queue."""

    card: ModelCard
    engine: TextEngine
    events: AsyncIterator[EngineEvent]
    input_tokens: int
    implicit_stops: list[str]
    started: float
    tool_plan: ToolPlan | None = None
    cache_points: list[CachePoint] | None = None
    """The request's explicit cache points (None: it set none)."""


class RuntimeService:
    def __init__(
        self, resolver: ModelResolver, manager: ModelManager, metrics: Metrics | None = None
    ) -> None:
        self.resolver = resolver
        self.manager = manager
        self.metrics = metrics

    def resolve(self, model_id: str) -> ResolvedModel:
        """Once per request, at its edge; pass the result on instead of the string."""
        return self.resolver.resolve(model_id)

    async def _engine_for(self, model: str | ResolvedModel) -> tuple[ModelCard, TextEngine]:
        resolved = model if isinstance(model, ResolvedModel) else self.resolver.resolve(model)
        card = resolved.card
        if card.engine != "llamacpp":
            raise ValidationError(
                f"Model {card.model_id} produces {', '.join(card.output_modalities)}, "
                "not text; this operation needs a text generation model."
            )
        return card, await self.manager.engine(card)

    def _tokens(
        self, card: ModelCard, engine: TextEngine, request: ChatRequest, extra_system: str = ""
    ) -> tuple[Prompt, list[int], list[CachePoint] | None]:
        """The prompt, its tokens, and where the request's cache points fall in them."""
        if request.prompt is None:
            system = request.system if request.system is not None else card.default_system
            if extra_system:
                system = f"{system}\n\n{extra_system}" if system else extra_system
            if system != request.system:
                request = replace(request, system=system)
        prompt = build_prompt(
            request,
            engine.chat_template(),
            engine.bos_text,
            engine.eos_text,
            completion_only=card.chat_template == "completion",
        )
        if not request.cache.ttls:
            return prompt, engine.tokenize(prompt.text, add_special=prompt.add_special), None
        text, offsets = strip_markers(prompt.text)
        prompt = replace(prompt, text=text)
        tokens = engine.tokenize(text, add_special=prompt.add_special)
        positions = token_positions(
            text, offsets, tokens, lambda t: engine.tokenize(t, add_special=prompt.add_special)
        )
        return prompt, tokens, engine_points(positions, request.cache.ttls, len(tokens))

    async def count_tokens(self, model_id: str | ResolvedModel, request: ChatRequest) -> int:
        card, engine = await self._engine_for(model_id)
        _, tokens, _ = self._tokens(card, engine, request, _extra_system(request))
        return len(tokens)

    async def prepare(
        self, model_id: str | ResolvedModel, request: ChatRequest, *, background: bool = False
    ) -> Prepared:
        """Everything that can fail with a clean HTTP error happens here, before a stream starts.

        ``background``: batch work, served in the slots interactive requests leave free.
        """
        started = time.perf_counter()
        card, engine = await self._engine_for(model_id)
        tool_plan = plan_tools(request)
        output_plan = None if tool_plan else plan_output(request)
        plan = tool_plan or output_plan
        extra = plan.system_addition if plan else ""
        prompt, tokens, points = self._tokens(card, engine, request, extra)
        s = request.sampling
        room = engine.n_ctx_per_seq - len(tokens)
        if room <= 1:
            raise ValidationError(
                f"Input is too long for requested model: the prompt has {len(tokens)} tokens "
                f"and this model serves at most {engine.n_ctx_per_seq - 1} per request."
            )
        max_tokens = s.max_tokens if s.max_tokens is not None else card.default_max_tokens
        gen = GenerationRequest(
            prompt_tokens=tokens,
            max_tokens=max(1, min(max_tokens, room - 1)),
            temperature=DEFAULT_TEMPERATURE if s.temperature is None else s.temperature,
            top_p=DEFAULT_TOP_P if s.top_p is None else s.top_p,
            top_k=s.top_k or 0,
            seed=s.seed,
            # Stop strings must not cut a forced JSON answer in half; the grammar ends it.
            stop=[]
            if output_plan is not None or (tool_plan is not None and tool_plan.forced)
            else list(s.stop) + [x for x in prompt.implicit_stops if x not in s.stop],
            grammar=plan.grammar if plan else None,
            background=background,
            cache_points=points or [],
        )
        events = engine.generate(gen)
        return Prepared(
            card,
            engine,
            events,
            len(tokens),
            prompt.implicit_stops,
            started,
            tool_plan,
            points,
        )

    async def stream(self, prepared: Prepared) -> AsyncIterator[StreamEvent]:
        """Text deltas, then one StreamEnd. Leading whitespace of the answer is dropped.

        With tools, an answer that starts with "{" is a tool call: it is held back and
        arrives parsed and validated in ``StreamEnd.result.tool_calls``.
        """
        first_token_ms = 0
        started_text = False
        held: list[str] | None = None
        # Label children looked up once per stream, not per token.
        model = prepared.card.model_id
        ttft = self.metrics.ttft.labels(model) if self.metrics is not None else None
        itl = self.metrics.itl.labels(model) if self.metrics is not None else None
        last = 0.0
        async for event in prepared.events:
            if isinstance(event, TextChunk):
                text = event.text
                if itl is not None and ttft is not None:
                    now = time.perf_counter()
                    if last:
                        itl.observe(now - last)
                    else:
                        ttft.observe(now - prepared.started)
                    last = now
                if held is not None:
                    held.append(text)
                    continue
                if not started_text:
                    text = text.lstrip()
                    if not text:
                        continue
                    started_text = True
                    first_token_ms = _ms_since(prepared.started)
                    if prepared.tool_plan is not None and text.startswith("{"):
                        held = [text]
                        continue
                yield TextDelta(text)
            elif isinstance(event, Finished):
                result = self._result(event, prepared, first_token_ms)
                if self.metrics is not None:
                    self.metrics.usage(model, result.usage.input_tokens, result.usage.output_tokens)
                if held is not None:
                    self._attach_tool_call("".join(held), result, prepared)
                    if result.text:
                        yield TextDelta(result.text)
                yield StreamEnd(result)

    def _attach_tool_call(self, text: str, result: ChatResult, prepared: Prepared) -> None:
        call = parse_tool_call(text, prepared.tool_plan) if prepared.tool_plan else None
        if call is None:
            result.text = text  # cut short (maxTokens): hand back what there is
            return
        result.tool_calls = [call]
        result.text = ""
        result.stop_reason = "tool_use"

    async def complete(self, prepared: Prepared) -> ChatResult:
        for _ in range(_RESTARTS):
            try:
                return await self._complete(prepared)
            except GenerationLost as exc:
                # A remote engine lost mid-answer (scale/remote.py): nothing reached the
                # client yet, so the whole generation runs again elsewhere.
                prepared.events = exc.restart()
        return await self._complete(prepared)

    async def _complete(self, prepared: Prepared) -> ChatResult:
        parts: list[str] = []
        end: ChatResult | None = None
        async for event in self.stream(prepared):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            else:
                end = event.result
        assert end is not None
        if not end.tool_calls:
            end.text = "".join(parts).rstrip()
        return end

    def _result(self, fin: Finished, prepared: Prepared, first_ms: int) -> ChatResult:
        reason = _REASONS[fin.reason]
        stop_sequence = fin.stop_sequence
        if stop_sequence is not None and stop_sequence in prepared.implicit_stops:
            reason, stop_sequence = "end_turn", None
        cache = cache_usage(prepared.cache_points or [], fin.cached_tokens, fin.stored_tokens)
        usage = Usage(
            fin.prompt_tokens,
            fin.completion_tokens,
            cache_read_tokens=cache.read,
            cache_write_tokens=cache.write,
            cached_tokens=cache.cached,
            cache_points=prepared.cache_points is not None,
            cache_details=cache.details,
        )
        # The text arrives as deltas; complete() joins them, streams never need it here.
        return ChatResult(
            text="",
            stop_reason=reason,  # type: ignore[arg-type]
            usage=usage,
            stop_sequence=stop_sequence,
            latency_ms=_ms_since(prepared.started),
            first_token_ms=first_ms or _ms_since(prepared.started),
        )


def _extra_system(request: ChatRequest) -> str:
    plan = plan_tools(request) or plan_output(request)
    return plan.system_addition if plan else ""


def _ms_since(t0: float) -> int:
    return int((time.perf_counter() - t0) * 1000)
