"""Batch inference and async invoke through boto3 against a real server and real models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.conftest import SMOL, make_data_dir, start_server, stop_server

pytestmark = pytest.mark.slow
ROLE = "arn:aws:iam::123456789012:role/batch"
LLAMA = "meta.llama3-8b-instruct-v1:0"  # aliased to SmolLM2 by the session server
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
TITAN_EMBED = "amazon.titan-embed-text-v2:0"

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?"]


def llama_body(q: str) -> dict:
    return {
        "prompt": f"<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
        "max_gen_len": 24,
        "temperature": 0,
    }


def claude_body(q: str) -> dict:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 24,
        "temperature": 0,
        "messages": [{"role": "user", "content": q}],
    }


def local_body(q: str, max_tokens: int = 16) -> dict:
    """The native body of outcrop's own model IDs (OpenAI-style chat)."""
    return {
        "messages": [{"role": "user", "content": q}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def write_jsonl(path: Path, rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def create(bedrock, tmp: Path, name: str, model: str, inp: Path, **extra) -> str:
    return bedrock.create_model_invocation_job(
        jobName=name, roleArn=ROLE, modelId=model,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": inp.as_uri()}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": (tmp / "out").as_uri()}},
        **extra,
    )["jobArn"]  # fmt: skip


def wait_done(bedrock, arn: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if job["status"] in ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"job still {job['status']}")


def outputs(tmp: Path, arn: str, name: str) -> list[dict]:
    job_id = arn.rsplit("/", 1)[1]
    text = (tmp / "out" / job_id / name).read_text()
    return [json.loads(line) for line in text.splitlines()]


def manifest(tmp: Path, arn: str) -> dict:
    return json.loads((tmp / "out" / arn.rsplit("/", 1)[1] / "manifest.json.out").read_text())


def test_batch_over_dialects_writes_bedrocks_layout_and_matches_invoke_model(server, tmp_path):
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    cases = [
        (LLAMA, llama_body, lambda o: o["generation"]),
        (CLAUDE, claude_body, lambda o: o["content"][0]["text"]),
    ]
    for model, body, text_of in cases:
        tmp = tmp_path / model.split(".")[0]
        rows = [{"recordId": f"REC{i:08d}", "modelInput": body(q)} for i, q in enumerate(QUESTIONS)]
        write_jsonl(tmp / "in" / "records.jsonl", rows)
        arn = create(bedrock, tmp, f"dialect-{model.split('.')[0]}", model, tmp / "in")
        job = wait_done(bedrock, arn)
        assert job["status"] == "Completed", job.get("message")
        assert (job["totalRecordCount"], job["successRecordCount"], job["errorRecordCount"]) == (
            3, 3, 0,
        )  # fmt: skip
        out = outputs(tmp, arn, "records.jsonl.out")
        assert [o["recordId"] for o in out] == [r["recordId"] for r in rows]
        assert [o["modelInput"] for o in out] == [r["modelInput"] for r in rows]
        for o, q in zip(out, QUESTIONS, strict=True):
            one = json.loads(
                runtime.invoke_model(modelId=model, body=json.dumps(body(q)))["body"].read()
            )
            assert text_of(o["modelOutput"]) == text_of(one)  # greedy: the same answer
        m = manifest(tmp, arn)
        assert (m["totalRecordCount"], m["processedRecordCount"], m["successRecordCount"]) == (
            3,
            3,
            3,
        )
        assert m["inputTokenCount"] > 0 and m["outputTokenCount"] > 0


def test_embedding_batch_and_converse_invocation_type(server, tmp_path):
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    rows = [{"recordId": f"E{i}", "modelInput": {"inputText": q}} for i, q in enumerate(QUESTIONS)]
    write_jsonl(tmp_path / "emb" / "in" / "texts.jsonl", rows)
    arn = create(bedrock, tmp_path / "emb", "embed-batch", TITAN_EMBED, tmp_path / "emb" / "in")
    assert wait_done(bedrock, arn)["status"] == "Completed"
    out = outputs(tmp_path / "emb", arn, "texts.jsonl.out")
    one = json.loads(
        runtime.invoke_model(modelId=TITAN_EMBED, body=json.dumps({"inputText": QUESTIONS[0]}))[
            "body"
        ].read()
    )
    assert out[0]["modelOutput"]["embedding"] == pytest.approx(one["embedding"], abs=1e-5)

    conv = [{"recordId": "C1", "modelInput": {
        "messages": [{"role": "user", "content": [{"text": QUESTIONS[0]}]}],
        "inferenceConfig": {"temperature": 0, "maxTokens": 16}}}]  # fmt: skip
    write_jsonl(tmp_path / "conv" / "in" / "c.jsonl", conv)
    arn = create(bedrock, tmp_path / "conv", "converse-batch", SMOL, tmp_path / "conv" / "in",
                 modelInvocationType="Converse")  # fmt: skip
    job = wait_done(bedrock, arn)
    assert job["status"] == "Completed" and job["modelInvocationType"] == "Converse"
    (o,) = outputs(tmp_path / "conv", arn, "c.jsonl.out")
    direct = runtime.converse(modelId=SMOL, **conv[0]["modelInput"])
    assert o["modelOutput"]["output"] == direct["output"]


def test_bad_records_get_an_error_and_the_job_goes_on(server, tmp_path):
    bedrock = server.client("bedrock")
    rows = [
        {"recordId": "OK1", "modelInput": llama_body(QUESTIONS[0])},
        "{this is not json",
        {"recordId": "BAD1", "modelInput": {"max_gen_len": 5}},  # no prompt: the dialect rejects it
        {"recordId": "LONG", "modelInput": llama_body("word " * 5000)},  # over the context
        {"recordId": "NOINPUT"},
    ]
    write_jsonl(tmp_path / "in" / "mixed.jsonl", rows)
    arn = create(bedrock, tmp_path, "mixed", LLAMA, tmp_path / "in")
    job = wait_done(bedrock, arn)
    assert job["status"] == "PartiallyCompleted"
    assert (job["successRecordCount"], job["errorRecordCount"]) == (1, 4)
    out = outputs(tmp_path, arn, "mixed.jsonl.out")
    assert len(out) == 5 and "modelOutput" in out[0]
    assert all(o["error"]["errorCode"] == 400 for o in out[1:]), out
    assert "Malformed" in out[1]["error"]["errorMessage"]
    listed = bedrock.list_model_invocation_jobs(statusEquals="PartiallyCompleted")
    assert arn in [j["jobArn"] for j in listed["invocationJobSummaries"]]


def expect(call, code: str) -> str:
    with pytest.raises(ClientError) as err:
        call()
    assert err.value.response["Error"]["Code"] == code, err.value.response
    return err.value.response["Error"]["Message"]


def test_bad_job_requests_are_refused_and_nothing_starts(server, tmp_path):
    bedrock = server.client("bedrock")
    (tmp_path / "empty").mkdir()
    before = len(bedrock.list_model_invocation_jobs()["invocationJobSummaries"])
    assert "No .jsonl" in expect(
        lambda: create(bedrock, tmp_path, "empty", SMOL, tmp_path / "empty"), "ValidationException"
    )
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"modelInput": llama_body("hi")}])
    expect(lambda: create(bedrock, tmp_path, "nomodel", "acme.nothing-v1:0", tmp_path / "in"),
           "ValidationException")  # fmt: skip
    inside = lambda: bedrock.create_model_invocation_job(  # noqa: E731
        jobName="inside", roleArn=ROLE, modelId=SMOL,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": (tmp_path / "in").as_uri()}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": (tmp_path / "in" / "out").as_uri()}},
    )  # fmt: skip
    assert "inside the input" in expect(inside, "ValidationException")
    expect(lambda: create(bedrock, tmp_path, "bad name!", SMOL, tmp_path / "in"),
           "ValidationException")  # fmt: skip
    expect(lambda: create(bedrock, tmp_path, "short", SMOL, tmp_path / "in",
                          timeoutDurationInHours=200), "ValidationException")  # fmt: skip
    expect(lambda: bedrock.get_model_invocation_job(jobIdentifier="abcdefabcdef"),
           "ResourceNotFoundException")  # fmt: skip
    assert len(bedrock.list_model_invocation_jobs()["invocationJobSummaries"]) == before


def test_idempotent_create_and_stop_keeps_what_was_written(server, tmp_path):
    bedrock = server.client("bedrock")
    rows = [{"recordId": f"S{i}", "modelInput": {**llama_body(f"Count to {i}."), "max_gen_len": 64}}
            for i in range(200)]  # fmt: skip
    write_jsonl(tmp_path / "in" / "many.jsonl", rows)
    arn = create(bedrock, tmp_path, "stopme", LLAMA, tmp_path / "in", clientRequestToken="tok123")
    assert create(bedrock, tmp_path, "stopme", LLAMA, tmp_path / "in",
                  clientRequestToken="tok123") == arn  # fmt: skip
    deadline = time.monotonic() + 120
    while bedrock.get_model_invocation_job(jobIdentifier=arn).get("processedRecordCount", 0) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    started = time.monotonic()
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    job = wait_done(bedrock, arn, timeout=30)
    assert job["status"] == "Stopped" and time.monotonic() - started < 15
    out = outputs(tmp_path, arn, "many.jsonl.out")
    assert 1 <= len(out) < 200 and len(out) == job["processedRecordCount"]
    assert len({o["recordId"] for o in out}) == len(out)
    expect(lambda: bedrock.stop_model_invocation_job(jobIdentifier=arn), "ValidationException")


def test_interactive_requests_are_served_while_a_batch_runs(server, tmp_path):
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    rows = [{"recordId": f"I{i}", "modelInput": {**llama_body(f"Tell a story {i}."), "max_gen_len": 48}}
            for i in range(64)]  # fmt: skip
    write_jsonl(tmp_path / "in" / "bg.jsonl", rows)
    arn = create(bedrock, tmp_path, "background", LLAMA, tmp_path / "in")
    try:
        for q in QUESTIONS:
            reply = runtime.converse(
                modelId=SMOL, messages=[{"role": "user", "content": [{"text": q}]}],
                inferenceConfig={"maxTokens": 8, "temperature": 0},
            )  # fmt: skip
            assert reply["output"]["message"]["content"][0]["text"]
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        assert job["status"] in ("Submitted", "Validating", "InProgress", "Completed")
    finally:
        bedrock.stop_model_invocation_job(jobIdentifier=arn)
        wait_done(bedrock, arn, timeout=60)


def test_async_invoke_round_trip(server, tmp_path):
    runtime = server.client("bedrock-runtime")
    out_uri = (tmp_path / "async").as_uri()
    start = dict(modelId=LLAMA, modelInput=llama_body(QUESTIONS[0]),
                 outputDataConfig={"s3OutputDataConfig": {"s3Uri": out_uri}})  # fmt: skip
    arn = runtime.start_async_invoke(clientRequestToken="same-token-1", **start)["invocationArn"]
    assert (
        runtime.start_async_invoke(clientRequestToken="same-token-1", **start)["invocationArn"]
        == arn
    )
    deadline = time.monotonic() + 120
    while (got := runtime.get_async_invoke(invocationArn=arn))["status"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert got["status"] == "Completed" and got["modelArn"].endswith(SMOL)
    written = json.loads((tmp_path / "async" / arn.rsplit("/", 1)[1] / "output.json").read_text())
    direct = json.loads(
        runtime.invoke_model(modelId=LLAMA, body=json.dumps(llama_body(QUESTIONS[0])))[
            "body"
        ].read()
    )
    assert written["generation"] == direct["generation"]
    listed = runtime.list_async_invokes(statusEquals="Completed")["asyncInvokeSummaries"]
    assert arn in [s["invocationArn"] for s in listed]
    bad = "arn:aws:bedrock:us-east-1:000000000000:async-invoke/abcdefabcdef"
    expect(lambda: runtime.get_async_invoke(invocationArn=bad), "ValidationException")
    failing = runtime.start_async_invoke(
        modelId=LLAMA, modelInput={"max_gen_len": 4},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": out_uri}},
    )["invocationArn"]  # fmt: skip
    deadline = time.monotonic() + 60
    while (got := runtime.get_async_invoke(invocationArn=failing))["status"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert got["status"] == "Failed" and got["failureMessage"]


def test_kill_9_mid_job_resumes_and_writes_every_record_exactly_once(tmp_path):
    data = make_data_dir(tmp_path)
    server = start_server(tmp_path, "--data-dir", str(data))
    try:
        bedrock = server.client("bedrock")
        rows = [{"recordId": f"K{i:03d}", "modelInput": local_body(f"Say {i}.")}
                for i in range(80)]  # fmt: skip
        write_jsonl(tmp_path / "in" / "k.jsonl", rows)
        arn = create(bedrock, tmp_path, "resume", SMOL, tmp_path / "in")
        deadline = time.monotonic() + 180
        while (
            bedrock.get_model_invocation_job(jobIdentifier=arn).get("processedRecordCount", 0) < 3
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait()
        server = start_server(tmp_path, "--data-dir", str(data))
        bedrock = server.client("bedrock")
        job = wait_done(bedrock, arn, timeout=600)
        assert job["status"] == "Completed", job.get("message")
        out = outputs(tmp_path, arn, "k.jsonl.out")
        assert [o["recordId"] for o in out] == [r["recordId"] for r in rows]
        assert job["processedRecordCount"] == job["successRecordCount"] == 80
        listed = subprocess.run(
            [sys.executable, "-m", "outcrop", "jobs", "list", "--json", "--data-dir", str(data)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        (mine,) = [j for j in json.loads(listed.stdout) if j.get("jobArn") == arn]
        assert (mine["status"], mine["processedRecordCount"]) == ("Completed", 80)
    finally:
        stop_server(server)
