"""Embedding InvokeModel bodies (Titan v1/v2, Cohere Embed) and the quantizations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from outcrop.errors import ValidationError
from outcrop.service.dialects.base import InvokeContext
from outcrop.service.embed_dialects import (
    CohereEmbedDialect,
    TitanV1Dialect,
    TitanV2Dialect,
    embed_dialect_for,
)
from outcrop.service.embeddings import EmbedResult, quantize

DIMS = 384
CTX = InvokeContext("req-1", "amazon.titan-embed-text-v2:0", 5)


def _result(*vectors: list[float]) -> EmbedResult:
    return EmbedResult([list(v) for v in vectors], 5 * len(vectors), [5] * len(vectors))


@pytest.mark.parametrize(
    ("model_id", "kind"),
    [
        ("amazon.titan-embed-text-v1", TitanV1Dialect),
        ("amazon.titan-embed-g1-text-02", TitanV1Dialect),
        ("amazon.titan-embed-text-v2:0", TitanV2Dialect),
        ("us.amazon.titan-embed-text-v2:0", TitanV2Dialect),
        ("arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v1", TitanV1Dialect),
        ("cohere.embed-english-v3", CohereEmbedDialect),
        ("cohere.embed-multilingual-v3", CohereEmbedDialect),
        ("sentence-transformers.all-minilm-l6-v2-v1:0", TitanV2Dialect),
    ],
)
def test_dialect_follows_the_id_the_client_sent(model_id, kind):
    assert type(embed_dialect_for(model_id)) is kind


def test_titan_v1_body_round_trip():
    d = TitanV1Dialect()
    call = d.parse({"inputText": "hello"}, model_dimensions=DIMS)
    assert call.texts == ["hello"] and call.truncate == "NONE" and call.normalize
    body = d.response(call, _result([0.6, 0.8]), CTX)
    assert body == {"embedding": [0.6, 0.8], "inputTextTokenCount": 5}


def test_titan_v1_rejects_v2_fields():
    with pytest.raises(ValidationError, match="extraneous key \\[dimensions\\]"):
        TitanV1Dialect().parse({"inputText": "x", "dimensions": 256}, model_dimensions=DIMS)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "inputText"),
        ({"inputText": ""}, "inputText"),
        ({"inputText": 3}, "inputText"),
        ({"inputText": "x", "normalize": "yes"}, "normalize"),
        ({"inputText": "x", "dimensions": 300}, "dimensions"),
        ({"inputText": "x", "dimensions": True}, "dimensions"),
        ({"inputText": "x", "embeddingTypes": []}, "embeddingTypes"),
        ({"inputText": "x", "embeddingTypes": ["int8"]}, "embeddingTypes"),
    ],
)
def test_titan_v2_bad_input_names_the_field(body, field):
    with pytest.raises(ValidationError, match=field):
        TitanV2Dialect().parse(body, model_dimensions=DIMS)


def test_titan_v2_default_dimensions_are_the_models_own():
    call = TitanV2Dialect().parse({"inputText": "x"}, model_dimensions=DIMS)
    assert call.dimensions is None and call.normalize and call.embedding_types == []


@pytest.mark.parametrize("dims", [512, 1024])
def test_titan_v2_explicit_larger_dimensions_say_what_the_model_produces(dims):
    with pytest.raises(ValidationError, match="produces 384-dimensional"):
        TitanV2Dialect().parse({"inputText": "x", "dimensions": dims}, model_dimensions=DIMS)


def test_titan_v2_256_and_normalize_flag_pass_through():
    call = TitanV2Dialect().parse(
        {"inputText": "x", "dimensions": 256, "normalize": False}, model_dimensions=DIMS
    )
    assert call.dimensions == 256 and call.normalize is False


def test_titan_v2_response_has_embeddings_by_type():
    d = TitanV2Dialect()
    vec = [0.5, -0.5, 0.0, 0.7]
    plain = d.response(d.parse({"inputText": "x"}, model_dimensions=DIMS), _result(vec), CTX)
    assert plain["embedding"] == vec and plain["embeddingsByType"] == {"float": vec}
    assert plain["inputTextTokenCount"] == 5
    call = d.parse({"inputText": "x", "embeddingTypes": ["binary"]}, model_dimensions=DIMS)
    both = d.response(call, _result(vec), CTX)
    assert both["embeddingsByType"] == {"binary": [1, 0, 0, 1]}
    assert both["embedding"] == vec


def test_cohere_defaults_and_floats_response():
    d = CohereEmbedDialect()
    call = d.parse({"texts": ["a", "b"], "input_type": "search_document"}, model_dimensions=DIMS)
    assert call.texts == ["a", "b"] and call.truncate == "END" and call.normalize
    body = d.response(call, _result([1.0, 0.0], [0.0, 1.0]), CTX)
    assert body == {
        "embeddings": [[1.0, 0.0], [0.0, 1.0]],
        "id": "req-1",
        "response_type": "embeddings_floats",
        "texts": ["a", "b"],
    }


def test_cohere_embedding_types_answer_by_type():
    d = CohereEmbedDialect()
    call = d.parse(
        {
            "texts": ["a"],
            "input_type": "search_query",
            "truncate": "START",
            "embedding_types": ["float", "int8", "ubinary"],
        },
        model_dimensions=DIMS,
    )
    assert call.truncate == "START"
    vec = [0.1] * 8 + [-0.1] * 8
    body = d.response(call, _result(vec), CTX)
    assert body["response_type"] == "embeddings_by_type"
    assert set(body["embeddings"]) == {"float", "int8", "ubinary"}
    assert body["embeddings"]["float"] == [vec]
    assert body["embeddings"]["ubinary"] == [[255, 0]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"input_type": "search_query"}, "texts"),
        ({"texts": [], "input_type": "search_query"}, "texts"),
        ({"texts": ["a", ""], "input_type": "search_query"}, "#/texts/1"),
        ({"texts": ["a"] * 97, "input_type": "search_query"}, "maximum item count: 96"),
        ({"texts": ["a"]}, "input_type"),
        ({"texts": ["a"], "input_type": "image"}, "input_type"),
        ({"texts": ["a"], "input_type": "clustering", "truncate": "MIDDLE"}, "truncate"),
        ({"texts": ["a"], "input_type": "clustering", "embedding_types": ["fp16"]}, "embedding"),
        ({"texts": ["a"], "input_type": "clustering", "output_dimension": 1024}, "produces 384"),
        ({"texts": ["a"], "input_type": "clustering", "images": ["data:x"]}, "images"),
    ],
)
def test_cohere_bad_input_names_the_field(body, field):
    with pytest.raises(ValidationError, match=field):
        CohereEmbedDialect().parse(body, model_dimensions=DIMS)


def test_binary_is_packed_sign_bits_first_component_most_significant():
    v = np.zeros((1, 16), np.float32) - 1
    v[0, 0] = 1  # first byte 0b10000000
    v[0, 15] = 1  # second byte 0b00000001
    assert quantize(v, "ubinary") == [[128, 1]]
    assert quantize(v, "binary") == [[0, -127]]
    assert quantize(v, "bits")[0][:2] == [1, 0]


def test_int8_grid_is_fixed_and_preserves_cosine():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(8, DIMS)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    q = np.array(quantize(v, "int8"), dtype=np.float32)
    u = np.array(quantize(v, "uint8"), dtype=np.float32)
    assert q.min() >= -128 and q.max() <= 127 and u.min() >= 0 and u.max() <= 255
    assert np.array_equal(u - 128, q)
    scale = 127 / (6 / math.sqrt(DIMS))
    assert np.abs(q / scale - v).max() <= 0.5 / scale + 1e-6  # no clipping at this size
    cos = (q @ q.T) / np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(q, axis=1))
    assert np.abs(cos - v @ v.T).max() < 0.01


def test_errors_use_bedrocks_native_message_style():
    with pytest.raises(ValidationError) as info:
        TitanV2Dialect().parse({"inputText": 3}, model_dimensions=DIMS)
    assert info.value.message.startswith("Malformed input request: #/inputText: expected type")
