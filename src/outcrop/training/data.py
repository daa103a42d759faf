"""Where training data comes from and what a valid record looks like.

Locations (``file:///abs/path`` or ``s3://bucket/key``) are :mod:`outcrop.locations`'.

Record formats (one JSON object per line):

* FINE_TUNING: ``{"prompt": "...", "completion": "..."}`` or Bedrock's conversation format
  ``{"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "..."}],
  "messages": [{"role": "user", "content": [{"text": "..."}]}, {"role": "assistant", ...}]}``
* CONTINUED_PRE_TRAINING: ``{"input": "..."}``

:func:`validate_jsonl` checks every line before a job is accepted and names the first bad
one; what it returns is the normalized form the worker trains on.
"""

from __future__ import annotations

import json
from typing import Any

from outcrop.errors import ValidationError
from outcrop.locations import DataLocations, Location, write_output  # noqa: F401 - moved there

CONVERSATION_SCHEMA = "bedrock-conversation-2024"


# --------------------------------------------------------------------------- records


def _text_blocks(value: Any, where: str) -> str:
    if not isinstance(value, list) or not value:
        raise ValueError(f'{where} must be a non-empty list of {{"text": ...}} blocks')
    parts = []
    for block in value:
        if not isinstance(block, dict) or not isinstance(block.get("text"), str):
            raise ValueError(f'{where} must contain only {{"text": "..."}} blocks')
        parts.append(block["text"])
    return "".join(parts)


def normalize_record(obj: Any, customization_type: str) -> dict[str, Any]:
    """One parsed line -> ``{"system", "turns": [[role, text], ...]}`` or ``{"text"}``."""
    if not isinstance(obj, dict):
        raise ValueError("the line is not a JSON object")
    if customization_type == "CONTINUED_PRE_TRAINING":
        text = obj.get("input")
        if not isinstance(text, str) or not text.strip():
            raise ValueError('expected {"input": "<non-empty text>"}')
        return {"text": text}
    if "messages" in obj or "schemaVersion" in obj:
        if obj.get("schemaVersion") != CONVERSATION_SCHEMA:
            raise ValueError(f'schemaVersion must be "{CONVERSATION_SCHEMA}"')
        system = None
        if obj.get("system") is not None:
            system = _text_blocks(obj["system"], "system")
        messages = obj.get("messages")
        if not isinstance(messages, list) or len(messages) < 2:
            raise ValueError("messages must be a list of at least one user and one assistant turn")
        turns = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise ValueError(f"messages[{i}] is not an object")
            role = message.get("role")
            expected = "user" if i % 2 == 0 else "assistant"
            if role != expected:
                raise ValueError(f"messages[{i}].role must be {expected!r} (turns alternate)")
            turns.append([role, _text_blocks(message.get("content"), f"messages[{i}].content")])
        if turns[-1][0] != "assistant":
            raise ValueError("the last message must be the assistant's")
        return {"system": system, "turns": turns}
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        raise ValueError(
            'expected {"prompt": "...", "completion": "..."} or a '
            f'"{CONVERSATION_SCHEMA}" conversation'
        )
    if not completion.strip():
        raise ValueError("completion is empty")
    return {"system": None, "turns": [["user", prompt], ["assistant", completion]]}


def validate_jsonl(data: bytes, customization_type: str, what: str) -> list[dict[str, Any]]:
    """Every non-blank line, normalized, with its 1-based ``line`` number.

    Raises ValidationError naming the first bad line and what is wrong with it.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValidationError(f"The {what} file is not UTF-8 text (line {line}).") from None
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                f"The {what} file has invalid JSON on line {number}: {exc.msg} "
                f"(column {exc.colno})."
            ) from None
        try:
            record = normalize_record(obj, customization_type)
        except ValueError as exc:
            raise ValidationError(
                f"The {what} file has an invalid record on line {number}: {exc}."
            ) from None
        record["line"] = number
        records.append(record)
    if not records:
        raise ValidationError(f"The {what} file is empty: it has no JSONL records.")
    return records
