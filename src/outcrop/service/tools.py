"""Tool use and structured output, enforced by grammar-constrained decoding.

The JSON schemas a client sends are compiled to a llama.cpp grammar (GBNF), so the
sampler can only pick tokens that keep the output valid: a forced tool call always
parses and always validates against the tool's ``inputSchema``. The model learns what
the tools are from a system-prompt section, since small local models have no tool
syntax of their own.

Call format the model writes: ``{"name": "<tool>", "input": {...}}``.
"""

from __future__ import annotations

import json
import secrets
import string
from dataclasses import dataclass
from typing import Any

import jsonschema

from outcrop.errors import ValidationError
from outcrop.service.json_grammar import schema_to_gbnf
from outcrop.service.types import ChatRequest, ToolCall, ToolSpec

_ID_ALPHABET = string.ascii_letters + string.digits


def new_tool_use_id() -> str:
    return "tooluse_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))


def check_schema(schema: Any, where: str) -> None:
    """A JSON Schema the client sent must itself be valid (Draft 2020-12 rules)."""
    if not isinstance(schema, dict):
        raise ValidationError(f"{where} must be a JSON Schema object.")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValidationError(f"{where} is not a valid JSON Schema: {exc.message}") from exc


def _to_gbnf(schema: dict[str, Any], where: str, prop_order: list[str] | None = None) -> str:
    try:
        return schema_to_gbnf(schema, prop_order=prop_order)
    except Exception as exc:  # the converter raises plain exceptions on unsupported keywords
        raise ValidationError(
            f"{where} uses JSON Schema features outcrop cannot enforce: {exc}"
        ) from exc


def _call_schema(tool: ToolSpec) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": tool.name}, "input": tool.input_schema},
        "required": ["name", "input"],
        "additionalProperties": False,
    }


@dataclass
class ToolPlan:
    """How one request uses tools: the prompt addition, the grammar, whether forced."""

    tools: list[ToolSpec]
    forced: bool
    grammar: str
    system_addition: str


def plan_tools(request: ChatRequest) -> ToolPlan | None:
    choice = request.tool_choice
    if not request.tools or (choice is not None and choice.mode == "none"):
        return None
    for tool in request.tools:
        check_schema(tool.input_schema, f"toolSpec {tool.name!r} inputSchema")
    tools = request.tools
    forced = choice is not None and choice.mode in ("any", "tool")
    if choice is not None and choice.mode == "tool":
        tools = [t for t in request.tools if t.name == choice.name]
        if not tools:
            raise ValidationError(
                f"toolChoice names the tool {choice.name!r}, which is not in toolConfig.tools."
            )
    schema = (
        {"oneOf": [_call_schema(t) for t in tools]} if len(tools) > 1 else _call_schema(tools[0])
    )
    call_grammar = _to_gbnf(schema, "toolConfig", prop_order=["name", "input"])
    if forced:
        grammar = call_grammar
    else:
        # The first character decides: "{" commits to a tool call (then fully
        # constrained), anything else is a free-text answer.
        grammar = call_grammar.replace("root ::=", "call ::=", 1)
        grammar += "\nroot ::= call | answer\nanswer ::= [^{ \\t\\n] .*\n"
    return ToolPlan(tools, forced, grammar, _describe(tools, forced))


def _describe(tools: list[ToolSpec], forced: bool) -> str:
    lines = ["You can call these tools:"]
    for tool in tools:
        spec = {
            "name": tool.name,
            "description": tool.description,
            "input_schema": tool.input_schema,
        }
        lines.append(json.dumps(spec, ensure_ascii=False) + tool.cache_marker)
    call = 'To call a tool, reply with only a JSON object: {"name": "<tool name>", "input": {<arguments>}}.'
    if forced:
        lines.append(call + " You must call a tool now.")
    else:
        lines.append(call + " If no tool is needed, answer normally in plain text.")
    return "\n".join(lines)


def parse_tool_call(text: str, plan: ToolPlan) -> ToolCall | None:
    """The tool call in ``text``, validated against its tool's schema; None if it is prose."""
    stripped = text.strip()
    if not stripped.startswith("{"):
        return None
    try:
        data = json.loads(stripped, strict=False)
    except ValueError:
        return None  # cut off by maxTokens: not a complete call
    tool = next((t for t in plan.tools if t.name == data.get("name")), None)
    if tool is None or not isinstance(data.get("input"), dict):
        return None
    try:
        jsonschema.validate(data["input"], tool.input_schema)
    except jsonschema.ValidationError:
        return None
    return ToolCall(new_tool_use_id(), tool.name, data["input"])


@dataclass
class OutputPlan:
    schema: dict[str, Any]
    grammar: str
    system_addition: str


def plan_output(request: ChatRequest) -> OutputPlan | None:
    if request.output_schema is None:
        return None
    check_schema(request.output_schema, "the output JSON schema")
    grammar = _to_gbnf(request.output_schema, "the output JSON schema")
    note = "Reply with only a JSON value that matches this JSON Schema:\n" + json.dumps(
        request.output_schema, ensure_ascii=False
    )
    return OutputPlan(request.output_schema, grammar, note)
