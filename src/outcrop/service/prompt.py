"""From a neutral ChatRequest to the exact prompt text a model was trained on.

Chat-tuned models carry a Jinja chat template in their GGUF metadata; it is rendered
as the model's authors wrote it. Base (completion) models have none: a plain
question/answer transcript is used, with its turn marker as an implicit stop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from outcrop.errors import ModelError
from outcrop.service.types import ChatRequest, Message

COMPLETION_STOPS = ["\nQ:", "\n\nQ:"]


@dataclass
class Prompt:
    text: str
    # Stops the prompt format itself needs; hitting one ends the turn normally.
    implicit_stops: list[str] = field(default_factory=list)
    add_special: bool = True


def _raise(message: str) -> None:
    raise TemplateError(message)


@lru_cache(maxsize=16)
def compile_template(template: str):
    """The GGUF chat template, compiled once, in a sandbox (templates come with weights)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _message_text(message: Message) -> str:
    """Flatten tool traffic into text for templates that know nothing of tools."""
    parts = [message.text] if message.text else []
    for call in message.tool_calls:
        parts.append(json.dumps({"tool_call": {"name": call.name, "input": call.input}}))
    for result in message.tool_results:
        parts.append(f"Result of tool call {result.tool_use_id}: {result.content}")
    return "\n".join(parts) + message.cache_marker


def render_chat(request: ChatRequest, template: str, bos: str, eos: str) -> Prompt:
    messages = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    messages += [{"role": m.role, "content": _message_text(m)} for m in request.messages]
    try:
        text = compile_template(template).render(
            messages=messages,
            add_generation_prompt=True,
            bos_token=bos,
            eos_token=eos,
        )
    except TemplateError as exc:
        raise ModelError(f"The model's chat template rejected the conversation: {exc}") from exc
    # A template that writes the BOS itself must not get a second one from the tokenizer.
    return Prompt(text=text, add_special=not (bos and text.startswith(bos)))


def render_completion_transcript(request: ChatRequest) -> Prompt:
    """Q/A transcript for base models: they continue text, they do not hold turns."""
    lines: list[str] = []
    if request.system:
        lines.append(request.system.strip() + "\n")
    for m in request.messages:
        tag = "Q:" if m.role == "user" else "A:"
        lines.append(f"{tag} {_message_text(m).strip()}")
    if not request.messages or request.messages[-1].role == "user":
        lines.append("A:")
    return Prompt(text="\n".join(lines), implicit_stops=list(COMPLETION_STOPS))


def build_prompt(
    request: ChatRequest, template: str | None, bos: str, eos: str, completion_only: bool
) -> Prompt:
    if request.prompt is not None:
        return Prompt(text=request.prompt)
    if template and not completion_only:
        return render_chat(request, template, bos, eos)
    return render_completion_transcript(request)
