"""Cohere Command R / R+ (chat: ``message`` + ``chat_history``) and legacy Command (``prompt``)."""

from __future__ import annotations

import uuid
from typing import Any

from outcrop.service.dialects.base import Dialect, InvokeContext
from outcrop.service.fields import Obj, read_sampling
from outcrop.service.types import ChatRequest, ChatResult, Message, StopReason

FINISH_REASONS = {
    "end_turn": "COMPLETE",
    "tool_use": "COMPLETE",
    "max_tokens": "MAX_TOKENS",
    "stop_sequence": "STOP_SEQUENCE",
}
_ROLES = {"USER": "user", "CHATBOT": "assistant"}


def cohere_finish(stop: StopReason) -> str:
    return FINISH_REASONS.get(stop, "COMPLETE")


class CohereChatDialect(Dialect):
    """``cohere.command-r*``. Documented ranges: temperature 0–1, p 0–1, k 0–500."""

    name = "cohere-chat"

    def __init__(self) -> None:
        self.history: list[dict[str, str]] = []
        self.message = ""
        self.response_id = str(uuid.uuid4())
        self.generation_id = str(uuid.uuid4())

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        root = Obj.of(body)
        self.message = root.string("message", required=True, non_empty=True) or ""
        system = [root.string("preamble") or ""]
        messages: list[Message] = []
        for turn in root.objs("chat_history"):
            role = turn.string("role", required=True, choices=("USER", "CHATBOT", "SYSTEM"))
            text = turn.string("message", required=True) or ""
            self.history.append({"role": role or "", "message": text})
            if role == "SYSTEM":
                system.append(text)
            else:
                messages.append(Message(role=_ROLES[role or "USER"], text=text))  # type: ignore[arg-type]
        messages.append(Message(role="user", text=self.message))
        sampling = read_sampling(
            root, max_tokens="max_tokens", top_p="p", top_k="k", top_k_max=500,
            seed="seed", stop="stop_sequences",
        )  # fmt: skip
        joined = "\n".join(s for s in system if s)
        return ChatRequest(messages=messages, system=joined or None, sampling=sampling)

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        history = [
            *self.history,
            {"role": "USER", "message": self.message},
            {"role": "CHATBOT", "message": result.text},
        ]
        return {
            "response_id": self.response_id,
            "text": result.text,
            "generation_id": self.generation_id,
            "chat_history": history,
            "finish_reason": cohere_finish(result.stop_reason),
            "meta": {
                "billed_units": {
                    "input_tokens": result.usage.input_tokens,
                    "output_tokens": result.usage.output_tokens,
                }
            },
        }

    # No "stream-start" event: langchain-aws indexes chunk["text"] on every unfinished chunk.
    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [{"event_type": "text-generation", "text": text, "is_finished": False}]

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [
            {
                "event_type": "stream-end",
                "is_finished": True,
                "finish_reason": cohere_finish(result.stop_reason),
                "response": self.response(result, ctx),
            }
        ]


class CohereCommandDialect(Dialect):
    """Legacy ``cohere.command-text`` / ``command-light-text``: temperature 0–5, k 0–500."""

    name = "cohere-command"

    def __init__(self) -> None:
        self.prompt = ""
        self.id = str(uuid.uuid4())

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        root = Obj.of(body)
        self.prompt = root.string("prompt", required=True, non_empty=True) or ""
        sampling = read_sampling(
            root, max_tokens="max_tokens", temperature_max=5.0, top_p="p", top_k="k",
            top_k_max=500, stop="stop_sequences",
        )  # fmt: skip
        # Command is instruction-following: the prompt is the user's request.
        return ChatRequest(messages=[Message(role="user", text=self.prompt)], sampling=sampling)

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        generation = {
            "id": str(uuid.uuid4()),
            "text": result.text,
            "finish_reason": cohere_finish(result.stop_reason),
        }
        return {"id": self.id, "prompt": self.prompt, "generations": [generation]}

    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [{"text": text, "is_finished": False, "index": 0}]

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [
            {
                "text": "",
                "is_finished": True,
                "finish_reason": cohere_finish(result.stop_reason),
                "index": 0,
            }
        ]
