"""bedrock-runtime driven by real boto3 against a real server and a real model."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from botocore.exceptions import ClientError

from tests.conftest import SMOL

pytestmark = pytest.mark.slow

FRANCE = [{"role": "user", "content": [{"text": "What is the capital of France?"}]}]
GREEDY = {"temperature": 0.0, "maxTokens": 48}


def _stream_events(response) -> list[dict]:
    return list(response["stream"])


def _stream_text(events: list[dict]) -> str:
    return "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )


def test_converse_answers_capital_of_france(runtime):
    out = runtime.converse(modelId=SMOL, messages=FRANCE, inferenceConfig=GREEDY)
    text = out["output"]["message"]["content"][0]["text"]
    assert "Paris" in text
    assert out["output"]["message"]["role"] == "assistant"
    assert out["stopReason"] in ("end_turn", "max_tokens")
    usage = out["usage"]
    assert usage["inputTokens"] > 5 and usage["outputTokens"] > 0
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert out["metrics"]["latencyMs"] >= 0


def test_temperature_zero_is_deterministic(runtime):
    a = runtime.converse(modelId=SMOL, messages=FRANCE, inferenceConfig=GREEDY)
    b = runtime.converse(modelId=SMOL, messages=FRANCE, inferenceConfig=GREEDY)
    assert a["output"] == b["output"]


def test_stream_event_order_and_text_equals_non_stream(runtime):
    plain = runtime.converse(modelId=SMOL, messages=FRANCE, inferenceConfig=GREEDY)
    events = _stream_events(
        runtime.converse_stream(modelId=SMOL, messages=FRANCE, inferenceConfig=GREEDY)
    )
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "messageStart"
    assert kinds[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(kinds[1:-3]) == {"contentBlockDelta"}
    assert _stream_text(events) == plain["output"]["message"]["content"][0]["text"]
    assert events[-2]["messageStop"]["stopReason"] == plain["stopReason"]
    assert events[-1]["metadata"]["usage"] == plain["usage"]


def test_system_prompt_multi_turn_and_stop_sequence(runtime):
    messages = [
        {"role": "user", "content": [{"text": "Count from 1 to 10, separated by commas."}]},
    ]
    out = runtime.converse(
        modelId=SMOL,
        system=[{"text": "You are a terse assistant."}],
        messages=messages,
        inferenceConfig={"temperature": 0, "maxTokens": 60, "stopSequences": ["5"]},
    )
    text = out["output"]["message"]["content"][0]["text"]
    assert out["stopReason"] == "stop_sequence"
    assert "5" not in text and "4" in text
    follow = messages + [
        {"role": "assistant", "content": [{"text": text}]},
        {"role": "user", "content": [{"text": "Thanks!"}]},
    ]
    again = runtime.converse(modelId=SMOL, messages=follow, inferenceConfig=GREEDY)
    assert again["usage"]["inputTokens"] > out["usage"]["inputTokens"]


def test_max_tokens_stop_reason_and_top_k(runtime):
    out = runtime.converse(
        modelId=SMOL,
        messages=[{"role": "user", "content": [{"text": "Write a long story about a dragon."}]}],
        inferenceConfig={"maxTokens": 5, "temperature": 0.8, "topP": 0.9},
        additionalModelRequestFields={"top_k": 20, "seed": 7},
    )
    assert out["stopReason"] == "max_tokens"
    assert out["usage"]["outputTokens"] == 5


def test_seeded_sampling_is_reproducible(runtime):
    kw = dict(
        modelId=SMOL,
        messages=[{"role": "user", "content": [{"text": "Name a color."}]}],
        inferenceConfig={"maxTokens": 12, "temperature": 1.0},
        additionalModelRequestFields={"seed": 1234},
    )
    assert runtime.converse(**kw)["output"] == runtime.converse(**kw)["output"]


@pytest.mark.parametrize(
    "model_id",
    [
        SMOL,
        "us." + SMOL,
        "global." + SMOL,
        f"arn:aws:bedrock:us-east-1::foundation-model/{SMOL}",
    ],
)
def test_model_id_forms(runtime, model_id):
    out = runtime.converse(modelId=model_id, messages=FRANCE, inferenceConfig=GREEDY)
    assert "Paris" in out["output"]["message"]["content"][0]["text"]


def test_unknown_model_is_a_validation_error_not_a_substitute(runtime):
    with pytest.raises(ClientError) as err:
        runtime.converse(modelId="acme.unknown-model-v1:0", messages=FRANCE)
    assert err.value.response["Error"]["Code"] in (
        "ValidationException",
        "ResourceNotFoundException",
    )
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] in (400, 404)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"messages": []},
        {"messages": [{"role": "assistant", "content": [{"text": "hi"}]}]},
        {"messages": [{"role": "user", "content": []}]},
        {
            "messages": [
                {"role": "user", "content": [{"text": "a"}]},
                {"role": "user", "content": [{"text": "b"}]},
            ]
        },
        {"messages": FRANCE, "inferenceConfig": {"temperature": 1.5}},
        {"messages": FRANCE, "inferenceConfig": {"topP": 2.0}},
    ],
)
def test_bad_converse_input_is_validation_exception(runtime, kwargs):
    with pytest.raises(ClientError) as err:
        runtime.converse(modelId=SMOL, **kwargs)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_max_tokens_zero_rejected_by_server(server):
    # botocore refuses maxTokens=0 client-side, so send it raw with a real signature.
    status, headers, _ = _signed_post(
        server, f"/model/{SMOL}/converse", {"messages": FRANCE, "inferenceConfig": {"maxTokens": 0}}
    )
    assert status == 400 and headers["x-amzn-errortype"] == "ValidationException"


def test_prompt_longer_than_context_is_validation_exception(runtime):
    long_text = "word " * 9000
    with pytest.raises(ClientError) as err:
        runtime.converse(
            modelId=SMOL, messages=[{"role": "user", "content": [{"text": long_text}]}]
        )
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert "too long" in err.value.response["Error"]["Message"]


def test_count_tokens_converse_and_invoke(runtime):
    n = runtime.count_tokens(modelId=SMOL, input={"converse": {"messages": FRANCE}})["inputTokens"]
    out = runtime.converse(modelId=SMOL, messages=FRANCE, inferenceConfig=GREEDY)
    assert n == out["usage"]["inputTokens"]
    body = json.dumps({"messages": [{"role": "user", "content": "What is the capital of France?"}]})
    m = runtime.count_tokens(modelId=SMOL, input={"invokeModel": {"body": body.encode()}})
    assert m["inputTokens"] == n


def test_invoke_model_anthropic_body_through_alias(runtime):
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 40,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    resp = runtime.invoke_model(
        modelId="anthropic.claude-3-haiku-20240307-v1:0", body=json.dumps(body)
    )
    out = json.loads(resp["body"].read())
    assert out["type"] == "message" and out["role"] == "assistant"
    assert "Paris" in out["content"][0]["text"]
    assert out["stop_reason"] in ("end_turn", "max_tokens")
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    assert int(headers["x-amzn-bedrock-input-token-count"]) == out["usage"]["input_tokens"]
    assert int(headers["x-amzn-bedrock-output-token-count"]) == out["usage"]["output_tokens"]


def test_invoke_stream_anthropic_has_invocation_metrics(runtime):
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 40,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
    }
    resp = runtime.invoke_model_with_response_stream(
        modelId="us.anthropic.claude-3-haiku-20240307-v1:0", body=json.dumps(body)
    )
    chunks = [json.loads(e["chunk"]["bytes"]) for e in resp["body"]]
    types = [c["type"] for c in chunks]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    text = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    assert "Paris" in text
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["inputTokenCount"] > 0 and metrics["outputTokenCount"] > 0


def test_invoke_llama_body_is_not_double_templated(runtime):
    prompt = (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
        "What is the capital of France?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    resp = runtime.invoke_model(
        modelId="meta.llama3-8b-instruct-v1:0",
        body=json.dumps({"prompt": prompt, "temperature": 0, "max_gen_len": 40}),
    )
    out = json.loads(resp["body"].read())
    assert "Paris" in out["generation"]
    assert "<|" not in out["generation"]
    assert out["stop_reason"] in ("stop", "length")


def test_invoke_native_body_of_local_model(runtime):
    resp = runtime.invoke_model(
        modelId=SMOL,
        body=json.dumps(
            {
                "messages": [{"role": "user", "content": "What is the capital of France?"}],
                "max_tokens": 40,
                "temperature": 0,
            }
        ),
    )
    out = json.loads(resp["body"].read())
    assert "Paris" in out["choices"][0]["message"]["content"]


def test_invoke_bad_json_is_validation_exception(runtime):
    with pytest.raises(ClientError) as err:
        runtime.invoke_model(modelId=SMOL, body=b"{not json")
    assert err.value.response["Error"]["Code"] == "ValidationException"


def test_sixteen_concurrent_streams_are_batched(server, runtime):
    """Batching, proven by the engine's own counters (not by timing, which load skews):
    16 concurrent streams share decode steps instead of taking one step per token each."""

    def smol_counters() -> tuple[int, int]:
        _, _, body = _signed_get(server, "/outcrop/ps")
        (m,) = [m for m in json.loads(body)["models"] if m["modelId"] == SMOL]
        return m["steps"], m["tokens_generated"]

    def stream_text() -> str:
        stream = runtime.converse_stream(
            modelId=SMOL, messages=FRANCE, inferenceConfig={"temperature": 0, "maxTokens": 32}
        )["stream"]
        return "".join(
            e["contentBlockDelta"]["delta"]["text"] for e in stream if "contentBlockDelta" in e
        )

    single = stream_text()
    steps0, tokens0 = smol_counters()
    with ThreadPoolExecutor(16) as pool:
        texts = list(pool.map(lambda _: stream_text(), range(16)))
    steps1, tokens1 = smol_counters()
    assert texts == [single] * 16  # batched greedy decoding gives every client the same answer
    # One request at a time would need at least one step per generated token.
    assert steps1 - steps0 < (tokens1 - tokens0) / 2, (steps1 - steps0, tokens1 - tokens0)


def test_client_disconnect_frees_the_sequence(server, runtime):

    stream = runtime.converse_stream(
        modelId=SMOL,
        messages=[{"role": "user", "content": [{"text": "Write a very long essay about rivers."}]}],
        inferenceConfig={"maxTokens": 2000, "temperature": 0.7},
    )["stream"]
    for i, _event in enumerate(stream):
        if i > 3:
            break
    stream._raw_stream.close()  # drop the connection mid-stream, as a crashed client would
    deadline = time.monotonic() + 10
    running = None
    while time.monotonic() < deadline:
        status, _, body = _signed_get(server, "/outcrop/ps")
        running = {m["modelId"]: m["running"] for m in json.loads(body)["models"]}
        if running.get(SMOL) == 0:
            break
        time.sleep(0.1)
    assert running.get(SMOL) == 0


def test_garbage_bytes_do_not_disturb_other_clients(server, runtime):
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    for payload in (
        b"\x00\xff\x13garbage\r\n\r\n",
        b"POST /model/x/converse HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
    ):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(payload)
            try:
                s.recv(1024)
            except OSError:
                pass
    out = runtime.converse(modelId=SMOL, messages=FRANCE, inferenceConfig=GREEDY)
    assert "Paris" in out["output"]["message"]["content"][0]["text"]


def _signed(server, method: str, path: str, body: bytes):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.conftest import REGION, TEST_KEY, TEST_SECRET

    req = AWSRequest(method=method, url=server.url + path, data=body,
                     headers={"Content-Type": "application/json"})  # fmt: skip
    SigV4Auth(Credentials(TEST_KEY, TEST_SECRET), "bedrock", REGION).add_auth(req)
    return req


def _signed_post(server, path: str, payload: dict):
    import httpx

    req = _signed(server, "POST", path, json.dumps(payload).encode())
    r = httpx.post(req.url, content=req.body, headers=dict(req.headers), timeout=60)
    return r.status_code, r.headers, r.content


def _signed_get(server, path: str):
    import httpx

    req = _signed(server, "GET", path, b"")
    r = httpx.get(req.url, headers=dict(req.headers), timeout=60)
    return r.status_code, r.headers, r.content


def test_bearer_api_key_and_missing_auth(server):
    import httpx

    url = f"{server.url}/model/{SMOL}/converse"
    payload = {"messages": FRANCE, "inferenceConfig": GREEDY}
    ok = httpx.post(
        url, json=payload, headers={"Authorization": "Bearer outcrop-test-api-key"}, timeout=60
    )
    assert ok.status_code == 200 and "Paris" in ok.text
    bad = httpx.post(url, json=payload, headers={"Authorization": "Bearer nope"}, timeout=60)
    assert bad.status_code == 403
    none = httpx.post(url, json=payload, timeout=60)
    assert none.status_code == 403 and none.headers["x-amzn-errortype"]


def test_wrong_secret_and_unknown_key_are_403(server):
    for kw in ({"secret": "wrong-secret"}, {"key": "AKIAUNKNOWNKEY000000"}):
        client = server.client("bedrock-runtime", **kw)
        with pytest.raises(ClientError) as err:
            client.converse(modelId=SMOL, messages=FRANCE)
        assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_tampered_body_is_rejected(server):
    import httpx

    req = _signed(
        server, "POST", f"/model/{SMOL}/converse", json.dumps({"messages": FRANCE}).encode()
    )
    r = httpx.post(
        req.url, content=req.body.replace(b"France", b"Spain!"), headers=dict(req.headers)
    )
    assert r.status_code == 403


def test_base64_body_in_count_tokens_rejects_garbage(runtime):
    with pytest.raises(ClientError) as err:
        runtime.count_tokens(modelId=SMOL, input={"invokeModel": {"body": b"not json at all"}})
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert base64  # keep import used for readers: boto3 base64-encodes the body itself
