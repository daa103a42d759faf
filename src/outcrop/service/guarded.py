"""A guardrail around one model call: Converse's ``guardrailConfig`` and InvokeModel's
``X-Amzn-Bedrock-Guardrail*`` headers.

The input is checked before the request reaches the engine: a blocked input is answered
with the guardrail's ``blockedInputMessaging`` and no token is generated; masked input
is what the model reads. The output is checked once (non-streaming) or chunk by chunk
(streaming): in ``sync`` mode a chunk reaches the client only after it passed (masked if
it must be), so a blocked span is never released; in ``async`` mode chunks go out at
once and the stream stops at the first chunk that intervenes (no masking, as on Bedrock).
A chunk ends at a sentence end once it holds ``CHUNK_CHARS`` characters, or at the end
of the answer.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from outcrop.errors import ValidationError
from outcrop.guardrails.evaluate import Block, Guardrail
from outcrop.guardrails.findings import Assessment
from outcrop.service import guardrail_wire as wire
from outcrop.service.guardrail_config import enum
from outcrop.service.guardrails import GuardrailService
from outcrop.service.types import ChatRequest, ChatResult, StreamEnd, StreamEvent, TextDelta, Usage

CHUNK_CHARS = 120
INTERVENED = "guardrail_intervened"
_QUALIFIERS = ("grounding_source", "query", "guard_content")
_SENTENCE_END = re.compile(r"[.!?\n][\"')\]]*\s")


@dataclass
class GuardSession:
    """One guarded call: the guardrail, how to trace, and what was assessed so far."""

    service: GuardrailService
    guardrail: Guardrail
    trace: str = "disabled"  # Converse spelling: enabled | disabled | enabled_full
    mode: str = "sync"
    input: Assessment | None = None
    outputs: list[Assessment] = field(default_factory=list)
    model_output: str | None = None

    @property
    def full(self) -> bool:
        return self.trace == "enabled_full"

    async def check_input(self, blocks: list[Block]) -> Assessment:
        self.input = await self.service.check(self.guardrail, blocks, "INPUT", full=self.full)
        return self.input

    async def check_output(self, text: str) -> Assessment:
        a = await self.service.check(self.guardrail, [Block(text)], "OUTPUT", full=self.full)
        self.outputs.append(a)
        return a

    @property
    def intervened(self) -> bool:
        return any(a.intervened for a in [self.input, *self.outputs] if a is not None)

    def converse_trace(self) -> dict[str, Any] | None:
        if self.trace == "disabled":
            return None
        return wire.converse_trace(
            self.guardrail, self.input, self.outputs, self.model_output, full=self.full
        )

    def invoke_trace(self) -> dict[str, Any] | None:
        if self.trace == "disabled":
            return None
        return wire.invoke_trace(self.guardrail, self.input, self.outputs)

    async def screen(self, request: ChatRequest, blocks: list[Block]) -> bool:
        """Check the input; True when it is blocked, else the request is masked in place."""
        verdict = await self.check_input(blocks)
        if verdict.blocked:
            return True
        mask_request(request, verdict)
        return False

    def invoke_keys(self) -> dict[str, Any]:
        """What InvokeModel bodies carry about the guardrail: its action, and the trace."""
        keys: dict[str, Any] = {
            "amazon-bedrock-guardrailAction": "INTERVENED" if self.intervened else "NONE"
        }
        trace = self.invoke_trace()
        if trace is not None:
            keys["amazon-bedrock-trace"] = trace
        return keys

    def blocked_input_result(self) -> ChatResult:
        return ChatResult(self.guardrail.blocked_input_messaging, INTERVENED, Usage(0, 0))  # type: ignore[arg-type]

    async def guard_result(self, result: ChatResult) -> ChatResult:
        """A finished answer, checked: blocked -> the blocked message, masked -> masked."""
        if not result.text:
            return result
        a = await self.check_output(result.text)
        if not a.intervened:
            return result
        self.model_output = result.text
        text = self.guardrail.blocked_outputs_messaging if a.blocked else a.outputs[0]
        return replace(result, text=text, stop_reason=INTERVENED)  # type: ignore[arg-type]

    async def guard_stream(
        self,
        events: AsyncIterator[StreamEvent],
        cancel: Callable[[], Awaitable[None]] | None = None,
        input_tokens: int = 0,
    ) -> AsyncIterator[StreamEvent]:
        """The model's stream with the output policy applied chunk by chunk.

        ``cancel`` stops the generation when a chunk intervenes (the engine frees the slot
        at its next step); the closing event then counts ``input_tokens`` and no output.
        """
        pending = ""
        released: list[str] = []
        stopped = False
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    pending += event.text
                    cut = _chunk_end(pending)
                    if self.mode == "async":
                        yield event
                    if cut is None:
                        continue
                    chunk, pending = pending[:cut], pending[cut:]
                    out = await self._chunk(chunk, released)
                    if out is None:
                        stopped = True
                        break
                    if self.mode == "sync":
                        yield TextDelta(out)
                    continue
                result = event.result
                if pending:
                    out = await self._chunk(pending, released)
                    if out is None:
                        stopped = True
                        break
                    if self.mode == "sync":
                        yield TextDelta(out)
                if self.intervened:
                    result = replace(result, stop_reason=INTERVENED)  # type: ignore[arg-type]
                yield StreamEnd(result)
                return
        finally:
            if stopped:
                if hasattr(events, "aclose"):
                    await events.aclose()
                if cancel is not None:
                    await cancel()
        if stopped:
            if self.mode == "sync":
                yield TextDelta(self.guardrail.blocked_outputs_messaging)
            yield StreamEnd(ChatResult("", INTERVENED, Usage(input_tokens, 0)))  # type: ignore[arg-type]

    async def _chunk(self, chunk: str, released: list[str]) -> str | None:
        """The text to release for ``chunk``; None when it is blocked (or, async, masked)."""
        if not chunk.strip():
            return chunk
        a = await self.check_output(chunk)
        if not a.intervened:
            released.append(chunk)
            return chunk
        self.model_output = "".join(released) + chunk
        if a.blocked or self.mode == "async":
            return None
        lead = chunk[: len(chunk) - len(chunk.lstrip())]
        trail = chunk[len(chunk.rstrip()) :]
        masked = lead + a.outputs[0].strip() + trail if a.outputs else chunk
        released.append(masked)
        return masked


def _chunk_end(text: str) -> int | None:
    if len(text) < CHUNK_CHARS:
        return None
    last = None
    for m in _SENTENCE_END.finditer(text, CHUNK_CHARS // 2):
        last = m.end()
    return last


# --------------------------------------------------------------------------- requests


def converse_guard_config(
    body: dict[str, Any], *, stream: bool
) -> tuple[str, str, str, str] | None:
    """``(identifier, version, trace, mode)`` of a Converse body's ``guardrailConfig``."""
    config = body.get("guardrailConfig")
    if config is None:
        return None
    if not isinstance(config, dict):
        raise ValidationError("guardrailConfig must be an object.")
    identifier = config.get("guardrailIdentifier") or ""
    version = config.get("guardrailVersion") or ""
    if not identifier and not version:
        return None  # the model's patterns allow "", and an empty config guards nothing
    if not identifier or not version:
        raise ValidationError(
            "guardrailConfig needs both guardrailIdentifier and guardrailVersion."
        )
    trace = enum(
        config,
        "trace",
        "guardrailConfig.trace",
        ("enabled", "disabled", "enabled_full"),
        "disabled",
    )
    mode = "sync"
    if stream:
        mode = enum(config, "streamProcessingMode", "guardrailConfig.streamProcessingMode", ("sync", "async"), "sync") or "sync"  # fmt: skip
    return identifier, version, trace or "disabled", mode


def converse_input_blocks(body: dict[str, Any]) -> list[Block]:
    """What the input check reads: the ``guardContent`` blocks if any, else every text block
    of every message (the system prompt only through guardContent, as on Bedrock)."""
    tagged: list[Block] = []
    plain: list[Block] = []
    for part in body.get("system") or []:
        if isinstance(part, dict) and isinstance(part.get("guardContent"), dict):
            tagged.append(_guard_block(part["guardContent"]))
    for message in body.get("messages") or []:
        for part in message.get("content") or [] if isinstance(message, dict) else []:
            if not isinstance(part, dict):
                continue
            if isinstance(part.get("guardContent"), dict):
                tagged.append(_guard_block(part["guardContent"]))
            elif isinstance(part.get("text"), str):
                plain.append(Block(part["text"]))
    return tagged or plain


def _guard_block(guard: dict[str, Any]) -> Block:
    text = guard.get("text") if isinstance(guard.get("text"), dict) else {}
    qualifiers = [q for q in text.get("qualifiers") or [] if q in _QUALIFIERS]
    # guardContent is what the caller asked to guard: it is guard_content-tagged input.
    return Block(str(text.get("text") or ""), frozenset({*qualifiers, "guard_content"}))


def mask_request(request: ChatRequest, a: Assessment) -> None:
    """Replace the anonymized matches of the input check in the prompt the model reads."""
    swaps = [(f.match, "{" + f.type + "}") for f in a.pii if f.action == "ANONYMIZED"]
    swaps += [(r.match, "{" + r.name + "}") for r in a.regexes if r.action == "ANONYMIZED"]
    if not swaps:
        return

    def swap(text: str) -> str:
        for old, new in sorted(swaps, key=lambda s: -len(s[0])):
            text = text.replace(old, new)
        return text

    for message in request.messages:
        message.text = swap(message.text)
    if request.system:
        request.system = swap(request.system)
    if request.prompt:
        request.prompt = swap(request.prompt)


# --------------------------------------------------------------------------- InvokeModel

INVOKE_CONFIG_KEY = "amazon-bedrock-guardrailConfig"
_TAG = "amazon-bedrock-guardrails-guardContent_"


def invoke_guard_headers(
    headers: Any, body: dict[str, Any]
) -> tuple[str, str, str, str, str | None] | None:
    """``(identifier, version, trace, mode, tag suffix)`` from InvokeModel's headers and body.

    Removes ``amazon-bedrock-guardrailConfig`` from ``body`` (the model never sees it).
    """
    config = body.pop(INVOKE_CONFIG_KEY, None)
    identifier = headers.get("x-amzn-bedrock-guardrailidentifier")
    version = headers.get("x-amzn-bedrock-guardrailversion")
    if not identifier:
        if config is not None:
            raise ValidationError(
                f"{INVOKE_CONFIG_KEY} is set in the body but no X-Amzn-Bedrock-GuardrailIdentifier header."
            )
        return None
    if not version:
        raise ValidationError(
            "X-Amzn-Bedrock-GuardrailIdentifier needs X-Amzn-Bedrock-GuardrailVersion."
        )
    trace = (headers.get("x-amzn-bedrock-trace") or "DISABLED").upper()
    if trace not in ("ENABLED", "DISABLED", "ENABLED_FULL"):
        raise ValidationError(
            f"Value '{trace}' at 'trace' failed to satisfy constraint: Member must satisfy "
            "enum value set: [ENABLED, DISABLED, ENABLED_FULL]"
        )
    suffix, mode = None, "sync"
    if config is not None:
        if not isinstance(config, dict):
            raise ValidationError(f"{INVOKE_CONFIG_KEY} must be an object.")
        suffix = config.get("tagSuffix")
        chosen = config.get("streamProcessingMode") or "SYNCHRONOUS"
        if chosen not in ("SYNCHRONOUS", "ASYNCHRONOUS"):
            raise ValidationError(
                f"{INVOKE_CONFIG_KEY}.streamProcessingMode must be SYNCHRONOUS or ASYNCHRONOUS."
            )
        mode = "sync" if chosen == "SYNCHRONOUS" else "async"
    return identifier, version, trace.lower(), mode, suffix


def invoke_input_blocks(request: ChatRequest, suffix: str | None) -> list[Block]:
    """The texts the input check reads; with a tag suffix only the tagged spans (whose tags
    are then removed from what the model reads)."""
    texts = [m.text for m in request.messages if m.role == "user"]
    texts += [t for t in (request.system, request.prompt) if t]
    if not suffix:
        return [Block(t) for t in texts if t]
    tag = re.compile(rf"<{_TAG}{re.escape(suffix)}>(.*?)</{_TAG}{re.escape(suffix)}>", re.DOTALL)
    blocks = [
        Block(m.group(1), frozenset({"guard_content"})) for t in texts for m in tag.finditer(t)
    ]

    def untag(text: str) -> str:
        return tag.sub(lambda m: m.group(1), text)

    for message in request.messages:
        message.text = untag(message.text)
    if request.system:
        request.system = untag(request.system)
    if request.prompt:
        request.prompt = untag(request.prompt)
    return blocks
