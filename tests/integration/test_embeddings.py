"""Embeddings through InvokeModel: Titan v1/v2 and Cohere bodies against the real MiniLM."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import EMBED, TEST_API_KEY

pytestmark = pytest.mark.slow

TITAN_V1 = "amazon.titan-embed-text-v1"
TITAN_V2 = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
LONG = "word " * 400  # 402 tokens with [CLS]/[SEP]; the model reads 256


def _invoke(runtime, model_id: str, body: dict) -> tuple[dict, dict]:
    out = runtime.invoke_model(modelId=model_id, body=json.dumps(body))
    return json.loads(out["body"].read()), out["ResponseMetadata"]["HTTPHeaders"]


def _norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / (_norm(a) * _norm(b))


def _ps(server) -> dict:
    r = httpx.get(
        server.url + "/outcrop/ps",
        headers={"Authorization": f"Bearer {TEST_API_KEY}"},
        timeout=30,
    )
    r.raise_for_status()
    return {m["modelId"]: m for m in r.json()["models"]}


def test_titan_v2_body_gives_unit_vector_and_exact_token_count(runtime):
    body, headers = _invoke(runtime, TITAN_V2, {"inputText": "hello world"})
    assert len(body["embedding"]) == 384
    assert abs(_norm(body["embedding"]) - 1) < 1e-4
    assert body["inputTextTokenCount"] == 4  # [CLS] hello world [SEP]
    assert body["embeddingsByType"] == {"float": body["embedding"]}
    assert headers["x-amzn-bedrock-input-token-count"] == "4"


def test_titan_v2_binary_is_the_sign_of_each_component(runtime):
    body, _ = _invoke(
        runtime, TITAN_V2, {"inputText": "hello world", "embeddingTypes": ["float", "binary"]}
    )
    floats, bits = body["embeddingsByType"]["float"], body["embeddingsByType"]["binary"]
    assert bits == [1 if x > 0 else 0 for x in floats]


def test_titan_v2_normalize_false_and_256_dimensions(runtime):
    raw, _ = _invoke(runtime, TITAN_V2, {"inputText": "hello world", "normalize": False})
    assert _norm(raw["embedding"]) > 1.5  # MiniLM's pooled vectors are far from unit length
    short, _ = _invoke(runtime, TITAN_V2, {"inputText": "hello world", "dimensions": 256})
    assert len(short["embedding"]) == 256 and abs(_norm(short["embedding"]) - 1) < 1e-4
    lead = raw["embedding"][:256]
    assert _cos(lead, short["embedding"]) > 0.9999


def test_titan_v1_body_and_own_id_with_titan_v2_body(runtime):
    v1, _ = _invoke(runtime, TITAN_V1, {"inputText": "The cat sat on the mat."})
    assert set(v1) == {"embedding", "inputTextTokenCount"} and len(v1["embedding"]) == 384
    own, _ = _invoke(runtime, EMBED, {"inputText": "The cat sat on the mat."})
    assert _cos(v1["embedding"], own["embedding"]) > 0.9999


def test_related_sentences_are_closer_than_unrelated(runtime):
    body, _ = _invoke(
        runtime,
        COHERE,
        {
            "texts": [
                "A man is playing a guitar.",
                "Someone is playing an instrument.",
                "The stock market fell sharply today.",
            ],
            "input_type": "search_document",
        },
    )
    assert body["response_type"] == "embeddings_floats"
    guitar, instrument, market = body["embeddings"]
    related, unrelated = _cos(guitar, instrument), _cos(guitar, market)
    assert related > 0.5 and unrelated < 0.2 and related - unrelated > 0.4


def test_cohere_embedding_types_and_truncation(runtime):
    body, _ = _invoke(
        runtime,
        COHERE,
        {
            "texts": ["hello world", LONG],
            "input_type": "search_query",
            "embedding_types": ["float", "int8", "uint8", "binary", "ubinary"],
        },
    )
    assert body["response_type"] == "embeddings_by_type"
    emb = body["embeddings"]
    assert [len(emb["float"][0]), len(emb["int8"][0]), len(emb["ubinary"][0])] == [384, 384, 48]
    assert all(-128 <= x <= 127 for x in emb["int8"][0] + emb["binary"][0])
    assert all(0 <= x <= 255 for x in emb["uint8"][0] + emb["ubinary"][0])
    assert body["texts"] == ["hello world", LONG]
    start, _ = _invoke(
        runtime,
        COHERE,
        {"texts": [LONG + "zebra"], "input_type": "clustering", "truncate": "START"},
    )
    end, _ = _invoke(
        runtime, COHERE, {"texts": [LONG + "zebra"], "input_type": "clustering", "truncate": "END"}
    )
    # END keeps only "word"s; START keeps the final "zebra" too.
    assert _cos(end["embeddings"][0], emb["float"][1]) > 0.9999
    assert _cos(start["embeddings"][0], end["embeddings"][0]) < 0.9999


def test_concurrent_requests_are_batched(server, runtime):
    before = _ps(server).get(EMBED) or {"requests": 0, "batches": 0}
    sentences = [f"Sentence {i} is about the weather in a small town." for i in range(16)]

    def one(text: str) -> list[float]:
        return _invoke(runtime, TITAN_V2, {"inputText": text})[0]["embedding"]

    with ThreadPoolExecutor(16) as pool:
        vectors = list(pool.map(one, sentences))
    assert all(len(v) == 384 for v in vectors)
    after = _ps(server)[EMBED]
    requests, batches = after["requests"] - before["requests"], after["batches"] - before["batches"]
    assert requests == 16
    assert batches < requests
    # Batching does not change the answer.
    assert _cos(vectors[3], one(sentences[3])) > 0.9999


@pytest.mark.parametrize(
    ("model_id", "body", "needle"),
    [
        (TITAN_V2, {}, "inputText"),
        (TITAN_V2, {"inputText": ""}, "inputText"),
        (TITAN_V2, {"inputText": "x", "dimensions": 1024}, "produces 384"),
        (TITAN_V2, {"inputText": "x", "dimensions": 100}, "dimensions"),
        (TITAN_V2, {"inputText": LONG}, "Too many input tokens"),
        (TITAN_V1, {"inputText": "x", "normalize": True}, "extraneous key"),
        (COHERE, {"texts": [], "input_type": "search_query"}, "texts"),
        (COHERE, {"texts": ["a"] * 97, "input_type": "search_query"}, "maximum item count: 96"),
        (COHERE, {"texts": ["a"]}, "input_type"),
        (COHERE, {"texts": [LONG], "input_type": "clustering", "truncate": "NONE"}, "Too many"),
        (COHERE, {"texts": ["a"], "input_type": "clustering", "embedding_types": ["x"]}, "embed"),
    ],
)
def test_bad_embedding_input_is_validation_exception(runtime, model_id, body, needle):
    with pytest.raises(ClientError) as info:
        runtime.invoke_model(modelId=model_id, body=json.dumps(body))
    error = info.value.response
    assert error["Error"]["Code"] == "ValidationException"
    assert error["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert needle in error["Error"]["Message"]


def test_streaming_and_converse_on_embedding_model_are_validation_errors(runtime):
    with pytest.raises(ClientError) as info:
        runtime.invoke_model_with_response_stream(
            modelId=TITAN_V2, body=json.dumps({"inputText": "x"})
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "does not support streaming" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as info:
        runtime.converse(modelId=EMBED, messages=[{"role": "user", "content": [{"text": "hi"}]}])
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_full_queue_answers_throttling_and_engine_survives():
    import asyncio

    from outcrop.engines.embeddings import EmbeddingConfig, SentenceTransformerEngine
    from outcrop.errors import ThrottlingError
    from outcrop.models.catalog import Catalog
    from outcrop.models.store import ModelStore
    from tests.conftest import models_data_dir

    path = ModelStore(models_data_dir()).ensure(Catalog().get(EMBED))
    engine = SentenceTransformerEngine(EMBED, path, EmbeddingConfig(max_batch=2, max_queue=1))

    async def burst() -> list[object]:
        calls = [engine.embed([f"text {i} " * 40]) for i in range(12)]
        return await asyncio.gather(*calls, return_exceptions=True)

    try:
        results = asyncio.run(burst())
        assert any(isinstance(r, ThrottlingError) for r in results)
        assert any(not isinstance(r, BaseException) for r in results)
        out = asyncio.run(engine.embed(["still serving"]))
        assert out.vectors.shape == (1, 384) and out.tokens == [4]
    finally:
        engine.close()
