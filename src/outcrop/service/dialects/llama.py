"""Meta Llama: ``{prompt, temperature, top_p, max_gen_len}``.

Bedrock clients send the prompt *already templated* for Llama. The local model has its
own chat template, so the markup is parsed back into system + turns and the local
template is applied once; templating the raw text again would nest two templates.
"""

from __future__ import annotations

import re
from typing import Any

from outcrop.service.converse import unsupported_modality
from outcrop.service.dialects.base import Dialect, InvokeContext
from outcrop.service.fields import Obj, read_sampling
from outcrop.service.types import ChatRequest, ChatResult, Message, StopReason

# ------------------------------------------------------------------ prompt markup

_L3_HEADER = re.compile(r"<\|start_header_id\|>(.*?)<\|end_header_id\|>", re.S)
_L3_SPECIAL = re.compile(r"<\|(?:begin_of_text|end_of_text|eot_id|eom_id)\|>")
_INST = re.compile(r"\[INST\](.*?)\[/INST\]", re.S)
_SYS = re.compile(r"<<SYS>>(.*?)<</SYS>>", re.S)
_BOS_EOS = re.compile(r"</?s>")


def _finish(system: list[str], messages: list[Message]) -> tuple[str | None, list[Message]]:
    # The trailing empty assistant header is the "generate now" cue, not a turn.
    if messages and messages[-1].role == "assistant" and not messages[-1].text:
        messages.pop()
    return ("\n".join(system) if system else None), messages


def parse_llama3(prompt: str) -> tuple[str | None, list[Message]]:
    """``<|start_header_id|>role<|end_header_id|>\\n\\ntext<|eot_id|>...`` → turns."""
    parts = _L3_HEADER.split(prompt)
    system: list[str] = []
    messages: list[Message] = []
    for role, raw in zip(parts[1::2], parts[2::2], strict=True):
        text = _L3_SPECIAL.sub("", raw).strip()
        role = role.strip()
        if role == "system":
            if text:
                system.append(text)
        elif role == "assistant":
            messages.append(Message(role="assistant", text=text))
        else:  # user, and tool output roles (ipython, tool) that reach the model as input
            messages.append(Message(role="user", text=text))
    return _finish(system, messages)


def parse_inst(prompt: str) -> tuple[str | None, list[Message]]:
    """Llama 2 / Mistral ``<s>[INST] <<SYS>>s<</SYS>> u [/INST] a </s><s>[INST] ...`` → turns."""
    system: list[str] = []
    messages: list[Message] = []
    matches = list(_INST.finditer(prompt))
    for i, match in enumerate(matches):
        user = match.group(1)
        sys_match = _SYS.search(user)
        if sys_match:
            system.append(sys_match.group(1).strip())
            user = user[: sys_match.start()] + user[sys_match.end() :]
        messages.append(Message(role="user", text=_BOS_EOS.sub("", user).strip()))
        end = matches[i + 1].start() if i + 1 < len(matches) else len(prompt)
        answer = _BOS_EOS.sub("", prompt[match.end() : end]).strip()
        messages.append(Message(role="assistant", text=answer))
    return _finish([s for s in system if s], messages)


def parse_templated_prompt(prompt: str) -> tuple[str | None, list[Message]]:
    """Whichever markup the prompt carries; plain text is one user turn."""
    if _L3_HEADER.search(prompt):
        system, messages = parse_llama3(prompt)
    elif _INST.search(prompt):
        system, messages = parse_inst(prompt)
    else:
        return None, [Message(role="user", text=prompt.strip())]
    if not messages:  # markup with only a system block: keep the text as the question
        return None, [Message(role="user", text=system or prompt.strip())]
    return system, messages


# ------------------------------------------------------------------------ dialect


def stop_or_length(stop: StopReason) -> str:
    return "length" if stop == "max_tokens" else "stop"


class LlamaDialect(Dialect):
    name = "meta"

    def parse(self, body: dict[str, Any]) -> ChatRequest:
        root = Obj.of(body)
        prompt = root.string("prompt", required=True, non_empty=True) or ""
        if root.has("images"):
            raise unsupported_modality("image")
        sampling = read_sampling(
            root, max_tokens="max_gen_len", max_tokens_default=512, top_p="top_p"
        )
        system, messages = parse_templated_prompt(prompt)
        return ChatRequest(messages=messages, system=system, sampling=sampling)

    def response(self, result: ChatResult, ctx: InvokeContext) -> dict[str, Any]:
        return {
            "generation": result.text,
            "prompt_token_count": result.usage.input_tokens,
            "generation_token_count": result.usage.output_tokens,
            "stop_reason": stop_or_length(result.stop_reason),
        }

    def stream_delta(self, text: str, ctx: InvokeContext) -> list[dict[str, Any]]:
        return [
            {
                "generation": text,
                "prompt_token_count": None,
                "generation_token_count": None,
                "stop_reason": None,
            }
        ]

    def stream_end(self, result: ChatResult, ctx: InvokeContext) -> list[dict[str, Any]]:
        # Empty text: langchain-aws stops at stop_reason == "stop" without reading it.
        return [{**self.response(result, ctx), "generation": ""}]
