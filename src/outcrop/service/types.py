"""Neutral request and result objects shared by every wire dialect.

The API layer and the model-family dialects translate *to* these; the service layer and
the engines only ever see these. Plain dataclasses: they are built once per request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from outcrop.service.cache_points import CacheMarks

Role = Literal["user", "assistant"]
StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"]


@dataclass
class ToolCall:
    """A tool invocation produced by the assistant."""

    id: str
    name: str
    input: dict[str, Any]


@dataclass
class ToolResult:
    """The caller's answer to a ToolCall. ``content`` is text (JSON results serialized)."""

    tool_use_id: str
    content: str
    status: Literal["success", "error"] | None = None


@dataclass
class Message:
    role: Role
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_results: list[ToolResult] = field(default_factory=list)
    cache_marker: str = ""
    """A cache point closing the message after its tool blocks."""


@dataclass
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]
    cache_marker: str = ""
    """A cache point right after this tool (see ``outcrop.service.cache_points``)."""


@dataclass
class ToolChoice:
    """``auto`` lets the model decide, ``any`` forces some tool, ``tool`` forces ``name``."""

    mode: Literal["auto", "any", "tool", "none"] = "auto"
    name: str | None = None


@dataclass
class SamplingParams:
    """Decoding controls. ``None`` means "the model's default"."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


@dataclass
class ChatRequest:
    """One generation request, whatever wire format it arrived in.

    Either ``messages`` (to be rendered with the model's chat template) or ``prompt``
    (raw text continued as is, for completion-style bodies that carry no chat structure)
    is set.
    """

    messages: list[Message] = field(default_factory=list)
    system: str | None = None
    prompt: str | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    tools: list[ToolSpec] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    # Structured output: the answer must be JSON valid against this schema (enforced by
    # grammar-constrained decoding), as Converse outputConfig / OpenAI response_format ask.
    output_schema: dict[str, Any] | None = None
    # Explicit cache points; their markers sit in the texts above where each falls.
    cache: CacheMarks = field(default_factory=CacheMarks)


@dataclass
class Usage:
    input_tokens: int = 0
    """Every prompt token, cached or not."""
    output_tokens: int = 0
    cache_read_tokens: int = 0
    """Prompt tokens read from the cache at explicit cache points (Bedrock's sense)."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the cache at explicit cache points."""
    cached_tokens: int = 0
    """Prompt tokens reused from the prefix cache, cache points or not (OpenAI's sense)."""
    cache_points: bool = False
    """The request set explicit cache points: the cache fields are reported (maybe 0)."""
    cache_details: list[tuple[str, int]] = field(default_factory=list)
    """Written tokens per TTL label ("1h", "5m")."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Bedrock's ``inputTokens`` under prompt caching: the prompt minus cache reads
        and writes (read + write + uncached = the whole prompt)."""
        return self.input_tokens - self.cache_read_tokens - self.cache_write_tokens


@dataclass
class ChatResult:
    """A finished generation."""

    text: str
    stop_reason: StopReason
    usage: Usage
    stop_sequence: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    latency_ms: int = 0
    first_token_ms: int = 0


@dataclass
class TextDelta:
    """A piece of streamed text (never splits a UTF-8 character)."""

    text: str


@dataclass
class StreamEnd:
    """The last event of a stream; carries the same totals a ChatResult would."""

    result: ChatResult


StreamEvent = TextDelta | StreamEnd
