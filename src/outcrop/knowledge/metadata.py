"""Document metadata: ``<file>.metadata.json`` sidecars, as Bedrock reads them.

A sidecar holds ``{"metadataAttributes": {...}}``. Each attribute is either a plain JSON
value (string, number, boolean, list of strings) or Bedrock's typed form
``{"value": {"type": "STRING", "stringValue": "..."}, "includeForEmbedding": true}``.
The result is a flat ``{key: value}`` dict of those plain values; the file format's own
names stay in this module.
"""

from __future__ import annotations

import json
from typing import Any

from outcrop.knowledge.parsers import DocumentError

SIDECAR_SUFFIX = ".metadata.json"
MAX_SIDECAR_BYTES = 10 * 1024  # Bedrock's limit for a metadata file
MAX_ATTRIBUTES = 50
# Keys Bedrock sets itself on every chunk; a document may not claim them.
RESERVED_PREFIX = "x-amz-bedrock-kb-"

Attributes = dict[str, Any]

_TYPED = {
    "STRING": "stringValue",
    "NUMBER": "numberValue",
    "BOOLEAN": "booleanValue",
    "STRING_LIST": "stringListValue",
}


def is_sidecar(name: str) -> bool:
    return name.endswith(SIDECAR_SUFFIX)


def sidecar_name(document_name: str) -> str:
    return document_name + SIDECAR_SUFFIX


def parse_sidecar(data: bytes) -> Attributes:
    """The attributes a sidecar file declares; DocumentError says what is wrong."""
    if len(data) > MAX_SIDECAR_BYTES:
        raise DocumentError(f"The metadata file is larger than {MAX_SIDECAR_BYTES} bytes.")
    try:
        body = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise DocumentError(f"The metadata file is not valid JSON: {exc}.") from None
    if not isinstance(body, dict) or not isinstance(body.get("metadataAttributes"), dict):
        raise DocumentError('The metadata file must hold {"metadataAttributes": {...}}.')
    attributes = body["metadataAttributes"]
    if len(attributes) > MAX_ATTRIBUTES:
        raise DocumentError(f"The metadata file has more than {MAX_ATTRIBUTES} attributes.")
    return {key: _attribute(key, value) for key, value in attributes.items()}


def _attribute(key: str, value: Any) -> Any:
    if key.startswith(RESERVED_PREFIX):
        raise DocumentError(f"Metadata attribute {key!r} uses the reserved prefix.")
    if isinstance(value, dict) and isinstance(value.get("value"), dict):
        typed = value["value"]
        member = _TYPED.get(typed.get("type"))
        if member is None or member not in typed:
            raise DocumentError(
                f"Metadata attribute {key!r} must have a type of {', '.join(_TYPED)} "
                "and the matching value."
            )
        value = typed[member]
    return check_value(key, value)


def check_value(key: str, value: Any) -> Any:
    """A plain attribute value, or DocumentError: string, number, boolean, string list."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        return float(value) if isinstance(value, float) else value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise DocumentError(
        f"Metadata attribute {key!r} must be a string, number, boolean or list of strings."
    )
