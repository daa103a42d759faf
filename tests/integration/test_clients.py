"""Popular Bedrock clients, unmodified, end to end against a real server and a real model.

Each test runs the code the README's "Point your client at outcrop" section shows: the AWS
CLI (as a subprocess), langchain-aws, LiteLLM and strands-agents.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import reduce
from operator import add

import pytest
from pydantic import BaseModel, Field

from tests.conftest import REGION, SMOL, TEST_KEY, TEST_SECRET

pytestmark = pytest.mark.slow

FRANCE = "What is the capital of France?"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"  # alias → SmolLM2 in the fixture
HAIKU_35 = "anthropic.claude-3-5-haiku-20241022-v1:0"  # alias → SmolLM2 in the fixture
CREDS = {"aws_access_key_id": TEST_KEY, "aws_secret_access_key": TEST_SECRET}


class GetWeather(BaseModel):
    """Get the current weather for a city."""

    city: str = Field(description="The city name")


# --------------------------------------------------------------------------- AWS CLI v1


@pytest.fixture
def aws(server, tmp_path):
    """Run ``aws <args> --endpoint-url <server>``; returns the parsed JSON output."""
    pytest.importorskip("awscli")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=TEST_KEY,
        AWS_SECRET_ACCESS_KEY=TEST_SECRET,
        AWS_DEFAULT_REGION=REGION,
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_MAX_ATTEMPTS="1",
    )

    def run(*args: str, check: bool = True):
        cmd = [sys.executable, "-m", "awscli", *args, "--endpoint-url", server.url]
        proc = subprocess.run(
            cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
        if not check:
            return proc
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    return run


def test_aws_cli_converse(aws):
    out = aws(
        "bedrock-runtime", "converse",
        "--model-id", SMOL,
        "--messages", json.dumps([{"role": "user", "content": [{"text": FRANCE}]}]),
        "--inference-config", '{"temperature": 0, "maxTokens": 48}',
    )  # fmt: skip
    assert "Paris" in out["output"]["message"]["content"][0]["text"]
    assert out["stopReason"] in ("end_turn", "max_tokens")
    assert out["usage"]["inputTokens"] > 0


def test_aws_cli_invoke_model_anthropic_body(aws, tmp_path):
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 48,
        "temperature": 0,
        "messages": [{"role": "user", "content": FRANCE}],
    }
    (tmp_path / "in.json").write_text(json.dumps(body))
    meta = aws(
        "bedrock-runtime", "invoke-model",
        "--model-id", HAIKU,
        "--body", "fileb://in.json",
        "--content-type", "application/json",
        "out.json",
    )  # fmt: skip
    assert meta["contentType"] == "application/json"
    reply = json.loads((tmp_path / "out.json").read_text())
    assert reply["type"] == "message" and reply["role"] == "assistant"
    assert "Paris" in reply["content"][0]["text"]


def test_aws_cli_count_tokens(aws, runtime):
    converse = {"messages": [{"role": "user", "content": [{"text": FRANCE}]}]}
    out = aws(
        "bedrock-runtime", "count-tokens",
        "--model-id", SMOL,
        "--input", json.dumps({"converse": converse}),
    )  # fmt: skip
    expected = runtime.count_tokens(modelId=SMOL, input={"converse": converse})
    assert out["inputTokens"] == expected["inputTokens"] > 0


def test_aws_cli_list_foundation_models(aws):
    out = aws("bedrock", "list-foundation-models")
    assert SMOL in [m["modelId"] for m in out["modelSummaries"]]
    text = aws("bedrock", "list-foundation-models", "--by-output-modality", "TEXT")
    assert SMOL in [m["modelId"] for m in text["modelSummaries"]]


def test_aws_cli_unknown_model_is_validation_exception(aws):
    proc = aws(
        "bedrock-runtime", "converse",
        "--model-id", "acme.no-such-model-v1:0",
        "--messages", json.dumps([{"role": "user", "content": [{"text": "hi"}]}]),
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "ValidationException" in proc.stderr and "Converse operation" in proc.stderr


# --------------------------------------------------------------------------- langchain-aws


def _chat(server, model: str = SMOL, **kwargs):
    from langchain_aws import ChatBedrockConverse

    if model == SMOL:
        # langchain-aws gates streaming and tool_choice by provider; a local model needs both on.
        kwargs.setdefault("disable_streaming", False)
        kwargs.setdefault("supports_tool_choice_values", ("auto", "any", "tool"))
    return ChatBedrockConverse(
        model=model,
        endpoint_url=server.url,
        region_name=REGION,
        temperature=0,
        max_tokens=48,
        **CREDS,
        **kwargs,
    )


def test_langchain_invoke_and_stream(server):
    pytest.importorskip("langchain_aws")
    llm = _chat(server)
    reply = llm.invoke(FRANCE)
    assert "Paris" in reply.content
    assert reply.response_metadata["stopReason"] == "end_turn"
    assert reply.usage_metadata["input_tokens"] > 0

    chunks = list(llm.stream(FRANCE))
    assert len(chunks) > 2  # really streamed, not one ConverseStream-less fallback
    full = reduce(add, chunks)
    assert full.text == reply.content
    assert full.usage_metadata["output_tokens"] == reply.usage_metadata["output_tokens"]


def test_langchain_bind_tools_any(server):
    pytest.importorskip("langchain_aws")
    llm = _chat(server).bind_tools([GetWeather], tool_choice="any")
    msg = llm.invoke("What's the weather in Paris?")
    (call,) = msg.tool_calls
    assert call["name"] == "GetWeather" and call["id"].startswith("tooluse_")
    GetWeather.model_validate(call["args"])
    assert msg.response_metadata["stopReason"] == "tool_use"

    streamed = reduce(add, llm.stream("What's the weather in Paris?"))
    (scall,) = streamed.tool_calls
    assert scall["name"] == "GetWeather"
    GetWeather.model_validate(scall["args"])


def test_langchain_structured_output_and_alias_model(server):
    pytest.importorskip("langchain_aws")
    # An alias of a hosted model ID: langchain-aws enables streaming and tool_choice by itself.
    llm = _chat(server, model=HAIKU)
    weather = llm.with_structured_output(GetWeather).invoke("What's the weather in Paris?")
    assert isinstance(weather, GetWeather) and weather.city


def test_langchain_count_tokens_uses_count_tokens_api(server, runtime):
    pytest.importorskip("langchain_aws")
    from langchain_core.messages import HumanMessage, SystemMessage

    # langchain-aws only calls CountTokens for Claude 3.5+ IDs (else a local GPT-2 estimate).
    llm = _chat(server, model=HAIKU_35)
    n = llm.get_num_tokens_from_messages([SystemMessage("Be brief."), HumanMessage(FRANCE)])
    expected = runtime.count_tokens(
        modelId=HAIKU_35,
        input={
            "converse": {
                "system": [{"text": "Be brief."}],
                "messages": [{"role": "user", "content": [{"text": FRANCE}]}],
            }
        },
    )
    assert n == expected["inputTokens"] > 0


# --------------------------------------------------------------------------- LiteLLM


@pytest.fixture(scope="module")
def litellm():
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # no model-cost-map fetch at import
    return pytest.importorskip("litellm")


def _litellm_kwargs(server) -> dict:
    return {
        "aws_bedrock_runtime_endpoint": server.url,
        "aws_region_name": REGION,
        **CREDS,
        "temperature": 0,
        "max_tokens": 48,
    }


@pytest.mark.parametrize(
    "model", [f"bedrock/converse/{SMOL}", f"bedrock/invoke/{HAIKU}"], ids=["converse", "invoke"]
)
def test_litellm_completion_and_stream(server, litellm, model):
    messages = [{"role": "user", "content": FRANCE}]
    reply = litellm.completion(model=model, messages=messages, **_litellm_kwargs(server))
    text = reply.choices[0].message.content
    assert "Paris" in text
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 0 and reply.usage.completion_tokens > 0

    stream = litellm.completion(
        model=model, messages=messages, stream=True, **_litellm_kwargs(server)
    )
    parts = [chunk.choices[0].delta.content or "" for chunk in stream]
    assert len(parts) > 2
    assert "".join(parts) == text


def test_litellm_tool_call(server, litellm):
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather for a city.",
                "parameters": GetWeather.model_json_schema(),
            },
        }
    ]
    reply = litellm.completion(
        model=f"bedrock/converse/{SMOL}",
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=tools,
        tool_choice="required",
        allowed_openai_params=["tools", "tool_choice"],  # LiteLLM does not know the local model
        **_litellm_kwargs(server),
    )
    (call,) = reply.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    GetWeather.model_validate_json(call.function.arguments)
    assert reply.choices[0].finish_reason == "tool_calls"


# --------------------------------------------------------------------------- strands-agents


def _strands_model(server, **kwargs):
    import boto3
    from strands.models import BedrockModel

    session = boto3.Session(region_name=REGION, **CREDS)
    return BedrockModel(
        model_id=SMOL,
        endpoint_url=server.url,
        boto_session=session,
        temperature=0,
        max_tokens=128,
        **kwargs,
    )


class Forecast(BaseModel):
    """The weather forecast for a city."""

    city: str
    temperature_celsius: int


def test_strands_agent_runs_tool_then_structured_output(server):
    pytest.importorskip("strands")
    from strands import Agent, tool
    from strands.middleware import InvokeModelStage

    calls: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        calls.append(city)
        return f"Sunny and 22 degrees in {city}."

    def force_tools(ctx):
        # A 135M model rarely picks a tool by itself: force get_weather, then the answer.
        done = any("toolResult" in b for m in ctx.messages for b in m["content"])
        return ctx.replace(tool_choice={"tool": {"name": "Forecast" if done else "get_weather"}})

    agent = Agent(model=_strands_model(server), tools=[get_weather], callback_handler=None)
    agent.add_middleware(InvokeModelStage.Input, force_tools)
    result = agent("What's the weather in Paris?", structured_output_model=Forecast)

    assert len(calls) == 1 and calls[0]
    assert isinstance(result.structured_output, Forecast)
    kinds = [(m["role"], next(iter(m["content"][0]))) for m in agent.messages]
    assert kinds[:3] == [("user", "text"), ("assistant", "toolUse"), ("user", "toolResult")]


@pytest.mark.parametrize("streaming", [True, False], ids=["converse-stream", "converse"])
def test_strands_text_turn_and_structured_output(server, streaming):
    pytest.importorskip("strands")
    from strands import Agent

    model = _strands_model(server, streaming=streaming)
    result = Agent(model=model, callback_handler=None)(FRANCE)
    assert result.stop_reason == "end_turn"
    assert "Paris" in str(result)

    # structured_output_model forces a (grammar-constrained) tool call if the model does not.
    agent = Agent(model=model, callback_handler=None)
    forecast = agent("It is 22 degrees in Paris.", structured_output_model=Forecast)
    assert isinstance(forecast.structured_output, Forecast)
