"""Wire parsing for knowledge bases: chunking configurations, filters, citation sentences."""

from __future__ import annotations

import pytest

from outcrop.errors import ValidationError
from outcrop.knowledge.chunking import ChunkingConfig
from outcrop.knowledge.filters import AllOf, AnyOf, Condition
from outcrop.service.fields import Obj
from outcrop.service.kb_config import parse_chunking, parse_filter
from outcrop.service.kb_runtime import sentence_spans


def _obj(d: dict) -> Obj:
    return Obj.of(d, (), "converse")


def test_chunking_configurations_parse_to_the_domain():
    assert parse_chunking(None) == ChunkingConfig()
    fixed = {"chunkingStrategy": "FIXED_SIZE",
             "fixedSizeChunkingConfiguration": {"maxTokens": 50, "overlapPercentage": 10}}  # fmt: skip
    assert parse_chunking(_obj({"chunkingConfiguration": fixed})) == ChunkingConfig(
        "fixed_size", max_tokens=50, overlap_percentage=10
    )
    hier = {"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
        "levelConfigurations": [{"maxTokens": 1000}, {"maxTokens": 200}], "overlapTokens": 30}}  # fmt: skip
    got = parse_chunking(_obj({"chunkingConfiguration": hier}))
    assert (got.parent_max_tokens, got.child_max_tokens, got.overlap_tokens) == (1000, 200, 30)


@pytest.mark.parametrize(
    "bad",
    [
        {"chunkingStrategy": "FIXED_SIZE"},
        {"chunkingStrategy": "FIXED_SIZE",
         "fixedSizeChunkingConfiguration": {"maxTokens": 0, "overlapPercentage": 10}},
        {"chunkingStrategy": "HIERARCHICAL", "hierarchicalChunkingConfiguration": {
            "levelConfigurations": [{"maxTokens": 100}], "overlapTokens": 1}},
        {"chunkingStrategy": "SEMANTIC", "semanticChunkingConfiguration": {
            "maxTokens": 100, "bufferSize": 2, "breakpointPercentileThreshold": 90}},
        {"chunkingStrategy": "BY_CHAPTER"},
    ],
)  # fmt: skip
def test_bad_chunking_is_a_validation_error(bad):
    with pytest.raises(ValidationError):
        parse_chunking(_obj({"chunkingConfiguration": bad}))


def test_filters_parse_to_the_domain_tree():
    f = parse_filter(_obj({"andAll": [
        {"equals": {"key": "a", "value": 1}},
        {"orAll": [{"in": {"key": "b", "value": ["x"]}}, {"startsWith": {"key": "c", "value": "p"}}]},
    ]}))  # fmt: skip
    assert f == AllOf((
        Condition("eq", "a", 1),
        AnyOf((Condition("in", "b", ["x"]), Condition("starts_with", "c", "p"))),
    ))  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        {"andAll": [{"equals": {"key": "a", "value": 1}}]},
        {"equals": {"key": "a", "value": 1}, "notEquals": {"key": "a", "value": 2}},
        {"in": {"key": "a", "value": "not-a-list"}},
        {"greaterThan": {"key": "a", "value": "ten"}},
        {"startsWith": {"key": "a", "value": 3}},
        {"equals": {"key": "a"}},
        {"near": {"key": "a", "value": 1}},
    ],
)
def test_bad_filters_are_validation_errors(bad):
    with pytest.raises(ValidationError):
        parse_filter(_obj(bad))


def test_citation_sentences_keep_initials_and_trim_whitespace():
    text = "The keeper was Captain James W. Wobble. He was a sailor.  Yes. Done now here"
    assert [text[s:e] for s, e in sentence_spans(text)] == [
        "The keeper was Captain James W. Wobble.",
        "He was a sailor.  Yes.",
        "Done now here",
    ]
