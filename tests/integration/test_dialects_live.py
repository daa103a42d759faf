"""Every model family's native InvokeModel body, through an alias, against the real model."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

Q = "What is the capital of France?"

# (model ID as a client would send it, request body, how to read the answer's text,
#  how to read one stream chunk's text)
FAMILIES = [
    (
        "anthropic.claude-3-haiku-20240307-v1:0",
        {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 40, "temperature": 0,
         "messages": [{"role": "user", "content": Q}]},
        lambda b: b["content"][0]["text"],
        lambda c: c.get("delta", {}).get("text", ""),
    ),
    (
        "amazon.titan-text-express-v1",
        {"inputText": Q, "textGenerationConfig": {"maxTokenCount": 40, "temperature": 0}},
        lambda b: b["results"][0]["outputText"],
        lambda c: c.get("outputText", ""),
    ),
    (
        "us.amazon.nova-lite-v1:0",
        {"schemaVersion": "messages-v1", "messages": [{"role": "user", "content": [{"text": Q}]}],
         "inferenceConfig": {"max_new_tokens": 40, "temperature": 0}},
        lambda b: b["output"]["message"]["content"][0]["text"],
        lambda c: c.get("contentBlockDelta", {}).get("delta", {}).get("text", ""),
    ),
    (
        "meta.llama3-8b-instruct-v1:0",
        {"prompt": f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{Q}<|eot_id|>"
                   "<|start_header_id|>assistant<|end_header_id|>\n\n",
         "max_gen_len": 40, "temperature": 0},
        lambda b: b["generation"],
        lambda c: c.get("generation", ""),
    ),
    (
        "mistral.mistral-7b-instruct-v0:2",
        {"prompt": f"<s>[INST] {Q} [/INST]", "max_tokens": 40, "temperature": 0},
        lambda b: b["outputs"][0]["text"],
        lambda c: c["outputs"][0]["text"] if c.get("outputs") else "",
    ),
    (
        "cohere.command-r-v1:0",
        {"message": Q, "max_tokens": 40, "temperature": 0},
        lambda b: b["text"],
        lambda c: c.get("text", "") if c.get("event_type") == "text-generation" else "",
    ),
    (
        "ai21.jamba-1-5-mini-v1:0",
        {"messages": [{"role": "user", "content": Q}], "max_tokens": 40, "temperature": 0},
        lambda b: b["choices"][0]["message"]["content"],
        lambda c: (c.get("choices") or [{}])[0].get("delta", {}).get("content") or "",
    ),
]  # fmt: skip


@pytest.mark.parametrize("model_id, body, answer, _chunk", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_native_body_invoke(runtime, model_id, body, answer, _chunk):
    resp = runtime.invoke_model(modelId=model_id, body=json.dumps(body))
    out = json.loads(resp["body"].read())
    assert "Paris" in answer(out)
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-output-token-count"]) > 0


@pytest.mark.parametrize(
    "model_id, body, answer, chunk_text", FAMILIES, ids=[f[0] for f in FAMILIES]
)
def test_native_body_stream_equals_invoke(runtime, model_id, body, answer, chunk_text):
    plain = answer(
        json.loads(runtime.invoke_model(modelId=model_id, body=json.dumps(body))["body"].read())
    )
    resp = runtime.invoke_model_with_response_stream(modelId=model_id, body=json.dumps(body))
    chunks = [json.loads(e["chunk"]["bytes"]) for e in resp["body"]]
    assert "".join(chunk_text(c) for c in chunks).strip() == plain.strip()
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["outputTokenCount"] > 0 and metrics["inputTokenCount"] > 0
