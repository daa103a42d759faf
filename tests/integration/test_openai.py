"""The OpenAI-compatible /v1, driven by the real OpenAI Python SDK against a real server."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import SMOL, TEST_API_KEY

pytestmark = pytest.mark.slow

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
GREEDY = {"temperature": 0, "max_tokens": 48}
README = Path(__file__).resolve().parents[2] / "README.md"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=server.url + "/v1", api_key=TEST_API_KEY, max_retries=0, timeout=120
    )


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {TEST_API_KEY}"}


# ---------------------------------------------------------------------- chat completions


def test_chat_answers_capital_of_france(client):
    out = client.chat.completions.create(model=SMOL, messages=FRANCE, **GREEDY)
    assert out.object == "chat.completion" and out.id.startswith("chatcmpl-")
    assert out.model == SMOL
    choice = out.choices[0]
    assert "Paris" in choice.message.content
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert out.usage.prompt_tokens > 5 and out.usage.completion_tokens > 0
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens


def test_stream_text_equals_non_stream_text(client):
    plain = client.chat.completions.create(model=SMOL, messages=FRANCE, **GREEDY)
    chunks = list(
        client.chat.completions.create(
            model=SMOL,
            messages=FRANCE,
            stream=True,
            stream_options={"include_usage": True},
            **GREEDY,
        )
    )
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finish, usage = chunks[-2], chunks[-1]
    assert finish.choices[0].finish_reason == plain.choices[0].finish_reason
    assert usage.choices == [] and usage.usage.prompt_tokens == plain.usage.prompt_tokens
    assert usage.usage.completion_tokens == plain.usage.completion_tokens
    # The same prompt again: the prefix cache served all but its last token.
    assert usage.usage.prompt_tokens_details.cached_tokens == plain.usage.prompt_tokens - 1


def test_stream_without_include_usage_has_no_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(model=SMOL, messages=FRANCE, stream=True, **GREEDY)
    )
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.usage is None for c in chunks)


def test_system_prompt_and_stop_sequence(client):
    out = client.chat.completions.create(
        model=SMOL,
        messages=[
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "Count from 1 to 10, separated by commas."},
        ],
        temperature=0,
        max_tokens=60,
        stop=["5"],
    )
    text = out.choices[0].message.content
    assert out.choices[0].finish_reason == "stop"
    assert "5" not in text and "4" in text


def test_seeded_sampling_is_reproducible(client):
    kw = dict(
        model=SMOL,
        messages=[{"role": "user", "content": "Name a color."}],
        temperature=1.0,
        max_tokens=12,
        seed=1234,
    )
    first = client.chat.completions.create(**kw).choices[0].message.content
    assert client.chat.completions.create(**kw).choices[0].message.content == first


def test_max_completion_tokens_is_length(client):
    out = client.chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "Write a long story about a dragon."}],
        max_completion_tokens=5,
    )
    assert out.choices[0].finish_reason == "length"
    assert out.usage.completion_tokens == 5


@pytest.mark.parametrize(
    "model_id", ["us." + SMOL, f"arn:aws:bedrock:us-east-1::foundation-model/{SMOL}"]
)
def test_model_id_forms_and_aliases(client, model_id):
    out = client.chat.completions.create(model=model_id, messages=FRANCE, **GREEDY)
    assert "Paris" in out.choices[0].message.content
    aliased = client.chat.completions.create(
        model="anthropic.claude-3-haiku-20240307-v1:0", messages=FRANCE, **GREEDY
    )
    assert aliased.choices[0].message.content == out.choices[0].message.content


# --------------------------------------------------------------------------- completions


def test_completions_stream_equals_non_stream(client):
    kw = dict(model=SMOL, prompt="The capital of France is", temperature=0, max_tokens=12)
    plain = client.completions.create(**kw)
    assert plain.object == "text_completion"
    assert plain.choices[0].text and plain.choices[0].finish_reason in ("stop", "length")
    assert plain.usage.completion_tokens > 0
    chunks = list(client.completions.create(stream=True, **kw))
    text = "".join(c.choices[0].text for c in chunks)
    assert text.rstrip() == plain.choices[0].text
    assert chunks[-1].choices[0].finish_reason == plain.choices[0].finish_reason


def test_completions_default_to_sixteen_tokens(client):
    out = client.completions.create(model=SMOL, prompt="Once upon a time", temperature=0)
    assert out.usage.completion_tokens <= 16


# -------------------------------------------------------------------------------- models


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert SMOL in ids and "google.gemma-3-270m-v1:0" in ids
    model = client.models.retrieve(SMOL)
    assert (model.id, model.object, model.owned_by) == (SMOL, "model", "huggingface")
    assert client.models.retrieve("us." + SMOL).id == "us." + SMOL
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("acme.unknown-model-v1:0")
    assert err.value.code == "model_not_found"


# -------------------------------------------------------------------------------- errors


def test_bad_key_is_authentication_error(server):
    bad = openai.OpenAI(base_url=server.url + "/v1", api_key="not-a-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model=SMOL, messages=FRANCE, **GREEDY)
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    missing = httpx.get(server.url + "/v1/models", timeout=30)
    assert missing.status_code == 401
    assert set(missing.json()["error"]) == {"message", "type", "param", "code"}


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="gpt-nonexistent", messages=FRANCE)
    assert err.value.code == "model_not_found"
    assert "gpt-nonexistent" in err.value.message


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"temperature": 3}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"response_format": {"type": "xml"}}, "response_format.type"),
        ({"extra_body": {"stream_options": {"include_usage": True}}}, "stream_options"),
    ],
)
def test_invalid_params_are_bad_request(client, kwargs, param):
    kw = {"model": SMOL, "messages": FRANCE, **kwargs}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(**kw)
    assert err.value.status_code == 400
    assert err.value.param == param
    assert err.value.type == "invalid_request_error"


def test_unknown_url_and_bad_json_in_openai_shape(server):
    r = httpx.get(server.url + "/v1/nope", headers=_bearer(), timeout=30)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_url"
    r = httpx.post(
        server.url + "/v1/chat/completions", content=b"{nope", headers=_bearer(), timeout=30
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_sigv4_is_accepted_on_v1(server):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.conftest import REGION, TEST_KEY, TEST_SECRET

    req = AWSRequest(method="GET", url=server.url + "/v1/models", data=b"")
    SigV4Auth(Credentials(TEST_KEY, TEST_SECRET), "bedrock", REGION).add_auth(req)
    r = httpx.get(req.url, headers=dict(req.headers), timeout=30)
    assert r.status_code == 200 and r.json()["object"] == "list"


# ---------------------------------------------------------------------------- disconnect


def test_client_disconnect_frees_the_sequence(server):
    body = {
        "model": SMOL,
        "messages": [{"role": "user", "content": "Write a very long essay about rivers."}],
        "max_tokens": 2000,
        "stream": True,
    }
    with httpx.Client(timeout=60) as http:
        with http.stream(
            "POST", server.url + "/v1/chat/completions", json=body, headers=_bearer()
        ) as r:
            for i, _line in enumerate(r.iter_lines()):
                if i > 6:
                    break
    deadline = time.monotonic() + 10
    running = None
    while time.monotonic() < deadline:
        models = httpx.get(server.url + "/outcrop/ps", headers=_bearer(), timeout=30).json()
        running = {m["modelId"]: m["running"] for m in models["models"]}
        if running.get(SMOL) == 0:
            break
        time.sleep(0.1)
    assert running.get(SMOL) == 0


# ------------------------------------------------------------- tools and structured output


def test_required_tool_choice_returns_tool_calls(client):
    out = client.chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER],
        tool_choice="required",
        temperature=0,
        max_tokens=64,
    )
    choice = out.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)

    follow = client.chat.completions.create(
        model=SMOL,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 C"},
        ],
        tools=[WEATHER],
        tool_choice="none",
        temperature=0,
        max_tokens=48,
    )
    assert follow.choices[0].message.content and not follow.choices[0].message.tool_calls


def test_streamed_tool_calls_assemble(client):
    name, arguments, finish = "", "", None
    for chunk in client.chat.completions.create(
        model=SMOL,
        messages=[{"role": "user", "content": "What is the weather in Rome?"}],
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        temperature=0,
        max_tokens=64,
        stream=True,
    ):
        for delta in chunk.choices[0].delta.tool_calls or []:
            name += delta.function.name or ""
            arguments += delta.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert name == "get_weather" and finish == "tool_calls"
    assert "city" in json.loads(arguments)


def test_json_schema_response_format(client):
    schema = {
        "type": "object",
        "properties": {"capital": {"type": "string"}},
        "required": ["capital"],
    }
    out = client.chat.completions.create(
        model=SMOL,
        messages=FRANCE,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
        temperature=0,
        max_tokens=48,
    )
    assert isinstance(json.loads(out.choices[0].message.content)["capital"], str)


# ---------------------------------------------------------------------------- embeddings


def test_embeddings_float_and_base64(client):
    model = "sentence-transformers.all-minilm-l6-v2-v1:0"
    floats = client.embeddings.create(
        model=model, input=["The cat sat.", "A cat was sitting."], encoding_format="float"
    )
    assert [d.index for d in floats.data] == [0, 1]
    assert len(floats.data[0].embedding) == 384
    assert floats.usage.prompt_tokens > 0
    # The SDK asks for base64 by default and decodes it itself.
    b64 = client.embeddings.create(model=model, input=["The cat sat.", "A cat was sitting."])
    assert b64.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    one = client.embeddings.create(model=model, input="hello", dimensions=64)
    assert len(one.data[0].embedding) == 64
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=SMOL, input="hello")


# -------------------------------------------------------------------------------- README


def test_readme_openai_snippet_runs(server, monkeypatch, capsys):
    section = README.read_text().split("## Call it from the OpenAI SDK", 1)[1]
    snippet = re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    monkeypatch.setenv("OPENAI_API_KEY", TEST_API_KEY)
    exec(compile(snippet, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "Paris" in out and SMOL in out
