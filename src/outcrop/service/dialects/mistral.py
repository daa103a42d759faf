"""Mistral: text completion (``prompt`` with ``[INST]`` markup) and the chat format.

The chat format (Mistral Large 2407+) is OpenAI-shaped, so it reuses ``ai21``'s helpers.
One instance serves one invocation and answers in the format that arrived.
"""

from __future__ import annotations

from typing import Any

from outcrop.service.dialects.ai21 import (
    chat_message,
    finish_reason,
    parse_chat_messages,
    parse_chat_tools,
)
from outcrop.service.dialects.base import Dialect, InvokeContext
from outcrop.service.dialects.llama import parse_templated_prompt, stop_or_length
from outcrop.service.fields import Obj, read_sampling
from outcrop.service.types import ChatRequest, ChatResult


class MistralDialect(Dialect):
    name = "mistral"

    def __init__(self) -> None:
        self.chat = False

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        root = Obj.of(body)
        self.chat = "messages" in body and "prompt" not in body
        if self.chat:
            system, messages = parse_chat_messages(
                root, roles=("system", "user", "assistant", "tool")
            )
            tools, choice = parse_chat_tools(root)
            sampling = read_sampling(root, max_tokens="max_tokens", top_p="top_p")
            return ChatRequest(
                messages=messages, system=system, sampling=sampling, tools=tools, tool_choice=choice
            )
        prompt = root.string("prompt", required=True, non_empty=True) or ""
        sampling = read_sampling(
            root, max_tokens="max_tokens", top_p="top_p", top_k="top_k", top_k_max=200, stop="stop"
        )
        system, messages = parse_templated_prompt(prompt)
        return ChatRequest(messages=messages, system=system, sampling=sampling)

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        if self.chat:
            choice = {
                "index": 0,
                "message": chat_message(result),
                "finish_reason": finish_reason(result.stop_reason),
            }
            return {"id": ctx.request_id, "object": "chat.completion", "choices": [choice]}
        return {
            "outputs": [{"text": result.text, "stop_reason": stop_or_length(result.stop_reason)}]
        }

    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        if self.chat:
            # Bedrock's Mistral chat stream repeats the message shape with a stop_reason.
            message = {"role": "assistant", "content": text}
            return [{"choices": [{"index": 0, "message": message, "stop_reason": None}]}]
        return [{"outputs": [{"text": text, "stop_reason": None}]}]

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        # Final chunks carry no text: langchain-aws stops on "stop" without reading it.
        if self.chat:
            message = {**chat_message(result), "content": ""}
            choice = {
                "index": 0,
                "message": message,
                "stop_reason": finish_reason(result.stop_reason),
            }
            return [{"choices": [choice]}]
        return [{"outputs": [{"text": "", "stop_reason": stop_or_length(result.stop_reason)}]}]
