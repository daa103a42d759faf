"""Wire configurations of bedrock-agent -> the knowledge package's objects.

Only what outcrop acts on is parsed (and validated with Bedrock's limits); the rest of a
configuration is stored and returned as sent.
"""

from __future__ import annotations

from outcrop.errors import ValidationError
from outcrop.knowledge.chunking import ChunkingConfig
from outcrop.knowledge.filters import AllOf, AnyOf, Condition, Filter
from outcrop.service.fields import Obj

STRATEGIES = ("FIXED_SIZE", "NONE", "HIERARCHICAL", "SEMANTIC")
MAX_CHUNK_TOKENS = 8192

_OPERATORS = {
    "equals": "eq",
    "notEquals": "ne",
    "greaterThan": "gt",
    "greaterThanOrEquals": "gte",
    "lessThan": "lt",
    "lessThanOrEquals": "lte",
    "in": "in",
    "notIn": "not_in",
    "startsWith": "starts_with",
    "listContains": "list_contains",
    "stringContains": "string_contains",
}
_UNSUPPORTED_INGESTION = (
    "parsingConfiguration",
    "customTransformationConfiguration",
    "contextEnrichmentConfiguration",
)


def parse_chunking(ingestion: Obj | None) -> ChunkingConfig:
    """``vectorIngestionConfiguration`` -> chunking (Bedrock's default when absent)."""
    if ingestion is None:
        return ChunkingConfig()
    for member in _UNSUPPORTED_INGESTION:
        if ingestion.has(member):
            raise ingestion.fail(
                member, "is not supported by outcrop (documents are parsed locally)"
            )
    cc = ingestion.obj("chunkingConfiguration")
    if cc is None:
        return ChunkingConfig()
    strategy = cc.string("chunkingStrategy", required=True, choices=STRATEGIES)
    if strategy == "NONE":
        return ChunkingConfig(strategy="none")
    if strategy == "FIXED_SIZE":
        f = cc.obj("fixedSizeChunkingConfiguration", required=True)
        assert f is not None
        return ChunkingConfig(
            strategy="fixed_size",
            max_tokens=f.integer("maxTokens", required=True, minimum=1, maximum=MAX_CHUNK_TOKENS)
            or 1,
            overlap_percentage=f.integer("overlapPercentage", required=True, minimum=1, maximum=99)
            or 1,
        )
    if strategy == "HIERARCHICAL":
        h = cc.obj("hierarchicalChunkingConfiguration", required=True)
        assert h is not None
        levels = h.objs("levelConfigurations", required=True)
        if len(levels) != 2:
            raise h.fail(
                "levelConfigurations", "Member must have length 2 (a parent and a child level)"
            )
        parent, child = (
            lv.integer("maxTokens", required=True, minimum=1, maximum=MAX_CHUNK_TOKENS) or 1
            for lv in levels
        )
        overlap = h.integer("overlapTokens", required=True, minimum=1) or 1
        if child > parent:
            raise ValidationError(
                f"The child level's maxTokens ({child}) must not exceed the parent level's "
                f"({parent})."
            )
        if overlap >= child:
            raise ValidationError(
                f"overlapTokens ({overlap}) must be smaller than the child level's maxTokens "
                f"({child})."
            )
        return ChunkingConfig(
            strategy="hierarchical",
            parent_max_tokens=parent,
            child_max_tokens=child,
            overlap_tokens=overlap,
        )
    s = cc.obj("semanticChunkingConfiguration", required=True)
    assert s is not None
    return ChunkingConfig(
        strategy="semantic",
        max_tokens=s.integer("maxTokens", required=True, minimum=1, maximum=MAX_CHUNK_TOKENS) or 1,
        buffer_size=s.integer("bufferSize", required=True, minimum=0, maximum=1) or 0,
        breakpoint_percentile=s.integer(
            "breakpointPercentileThreshold", required=True, minimum=50, maximum=99
        )
        or 50,
    )


def parse_filter(o: Obj) -> Filter:
    """A ``RetrievalFilter`` union: exactly one operator, ``andAll``/``orAll`` of >= 2."""
    keys = [k for k, v in o.data.items() if v is not None]
    if len(keys) != 1:
        raise o.fail(None, "RetrievalFilter must set exactly one member")
    op = keys[0]
    if op in ("andAll", "orAll"):
        parts = o.objs(op)
        if len(parts) < 2:
            raise o.fail(op, "Member must have length greater than or equal to 2")
        tree = tuple(parse_filter(p) for p in parts)
        return AllOf(tree) if op == "andAll" else AnyOf(tree)
    if op not in _OPERATORS:
        raise o.fail(op, f"is not a filter operator; use one of {', '.join(_OPERATORS)}")
    attr = o.obj(op, required=True)
    assert attr is not None
    key = attr.string("key", required=True, non_empty=True) or ""
    if len(key) > 100:
        raise attr.fail("key", "Member must have length less than or equal to 100")
    if "value" not in attr.data:
        raise attr.fail("value", "Member must not be null")
    value = attr.data["value"]
    kind = _OPERATORS[op]
    if kind in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise attr.fail("value", f"{op} needs a non-empty list of values")
    elif kind in ("starts_with", "string_contains"):
        if not isinstance(value, str):
            raise attr.fail("value", f"{op} needs a string value")
    elif kind in ("gt", "gte", "lt", "lte"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise attr.fail("value", f"{op} needs a number value")
    elif isinstance(value, dict | list):
        raise attr.fail("value", f"{op} needs a string, number or boolean value")
    return Condition(kind, key, value)  # type: ignore[arg-type]
