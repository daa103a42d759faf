"""Amazon Titan Text: ``{inputText, textGenerationConfig}`` → ``results[].outputText``."""

from __future__ import annotations

import re
from typing import Any

from outcrop.service.dialects.base import Dialect, InvokeContext
from outcrop.service.fields import Obj, read_sampling
from outcrop.service.types import ChatRequest, ChatResult, Message, SamplingParams

COMPLETION_REASONS = {
    "end_turn": "FINISHED",
    "tool_use": "FINISHED",
    "max_tokens": "LENGTH",
    "stop_sequence": "STOP_CRITERIA_MET",
}
_TURN = re.compile(r"^(User|Bot):", re.M)


def parse_user_bot(text: str) -> tuple[str | None, list[Message]]:
    """Titan's documented conversational form ``User: ...\\nBot: ...`` → turns.

    Text before the first turn is an instruction (system); a trailing empty ``Bot:`` is
    the generation cue. Without a ``User:`` turn the whole text is one instruction.
    """
    parts = _TURN.split(text)
    if "User" not in parts[1::2]:
        return None, [Message(role="user", text=text.strip())]
    system = parts[0].strip() or None
    messages = [
        Message(role="user" if who == "User" else "assistant", text=said.strip())
        for who, said in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if messages and messages[-1].role == "assistant" and not messages[-1].text:
        messages.pop()
    return system, messages


class TitanDialect(Dialect):
    name = "amazon-titan"

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        root = Obj.of(body)
        text = root.string("inputText", required=True, non_empty=True) or ""
        config = root.obj("textGenerationConfig")
        sampling = (
            read_sampling(config, max_tokens="maxTokenCount", top_p="topP", stop="stopSequences")
            if config
            else SamplingParams()
        )
        sampling.max_tokens = sampling.max_tokens or 512
        system, messages = parse_user_bot(text)
        return ChatRequest(messages=messages, system=system, sampling=sampling)

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        return {
            "inputTextTokenCount": result.usage.input_tokens,
            "results": [
                {
                    "tokenCount": result.usage.output_tokens,
                    "outputText": result.text,
                    "completionReason": COMPLETION_REASONS.get(result.stop_reason, "FINISHED"),
                }
            ],
        }

    def _chunk(
        self, text: str, ctx: InvokeContext, reason: str | None, total: int | None
    ) -> dict[str, Any]:
        return {
            "outputText": text,
            "index": 0,
            "totalOutputTextTokenCount": total,
            "completionReason": reason,
            "inputTextTokenCount": ctx.input_tokens,
        }

    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [self._chunk(text, ctx, None, None)]

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        reason = COMPLETION_REASONS.get(result.stop_reason, "FINISHED")
        return [self._chunk("", ctx, reason, result.usage.output_tokens)]
