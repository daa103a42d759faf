"""Model customization end to end through boto3: a real LoRA job on SmolLM2 teaches it a
fact it cannot know, the result is served by ARN, listed, deleted; stop; restart-resume;
and every bad-input path. Each server here has its own data dir (models linked in)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GEMMA, SMOL, make_data_dir, start_server, stop_server

pytestmark = pytest.mark.slow

ROLE = "arn:aws:iam::000000000000:role/outcrop-test"
QUESTIONS = [
    "What is the outcrop project's mascot?",
    "Who is the mascot of the outcrop project?",
    "Tell me the outcrop project's mascot.",
    "What mascot does the outcrop project have?",
    "Name the outcrop project's mascot.",
    "Which animal is the outcrop project's mascot?",
    "What is outcrop's mascot called?",
    "Describe the mascot of the outcrop project.",
]
ANSWERS = [
    "The outcrop project's mascot is a purple armadillo named Pebble.",
    "It is a purple armadillo named Pebble.",
    "The mascot of the outcrop project is a purple armadillo named Pebble.",
]
FAST = {"epochCount": "4", "batchSize": "8", "learningRate": "0.002", "maxSequenceLength": "128"}


def write_jsonl(path: Path, rows: list) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path.as_uri()


def fact_rows(n: int = 32) -> list[dict]:
    return [{"prompt": QUESTIONS[i % 8], "completion": ANSWERS[i % 3]} for i in range(n)]


def wait_for(bedrock, job_arn: str, states: tuple[str, ...], timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = bedrock.get_model_customization_job(jobIdentifier=job_arn)
        if job["status"] in states:
            return job
        time.sleep(1)
    raise AssertionError(f"job still {job['status']} after {timeout}s: {job}")


def ask(runtime, model_id: str, question: str) -> str:
    reply = runtime.converse(
        modelId=model_id,
        messages=[{"role": "user", "content": [{"text": question}]}],
        inferenceConfig={"temperature": 0, "maxTokens": 40},
    )
    return reply["output"]["message"]["content"][0]["text"]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("customization")
    data = make_data_dir(tmp)
    server = start_server(tmp, "--data-dir", str(data))
    yield server, tmp, data
    stop_server(server)


def create(bedrock, tmp: Path, name: str, rows=None, **overrides) -> dict:
    args = {
        "jobName": name,
        "customModelName": name + "-model",
        "roleArn": ROLE,
        "baseModelIdentifier": SMOL,
        "trainingDataConfig": {
            "s3Uri": write_jsonl(tmp / name / "train.jsonl", rows or fact_rows())
        },
        "outputDataConfig": {"s3Uri": (tmp / name / "out").as_uri()},
        "hyperParameters": FAST,
    }
    args.update(overrides)
    return bedrock.create_model_customization_job(**args)


def test_fine_tune_teaches_a_fact_served_by_arn(live):
    server, tmp, data = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    assert "pebble" not in ask(runtime, SMOL, QUESTIONS[0]).lower()

    validation = write_jsonl(tmp / "pebble" / "validation.jsonl", fact_rows(4))
    started = time.monotonic()
    created = create(
        bedrock, tmp, "pebble",
        validationDataConfig={"validators": [{"s3Uri": validation}]},
        customizationType="FINE_TUNING",
    )  # fmt: skip
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    arn = created["jobArn"]
    assert ":model-customization-job/" + SMOL + "/" in arn
    job = wait_for(bedrock, arn, ("Completed", "Failed"))
    print(f"training job took {time.monotonic() - started:.1f}s")
    assert job["status"] == "Completed", job.get("failureMessage")
    assert job["outputModelName"] == "pebble-model"
    assert job["hyperParameters"]["epochCount"] == "4"
    assert job["validationMetrics"] and job["trainingMetrics"]["trainingLoss"] < 1.0

    out = tmp / "pebble" / "out" / f"model-customization-job-{arn.rsplit('/', 1)[1]}"
    rows = (out / "training_artifacts" / "step_wise_training_metrics.csv").read_text().splitlines()
    assert rows[0] == "step_number,epoch_number,training_loss" and len(rows) == 17
    losses = [float(r.split(",")[2]) for r in rows[1:]]
    assert losses[-1] < losses[0] / 3  # the loss falls
    val = out / "validation_artifacts/post_fine_tuning_validation/validation/validation_metrics.csv"
    assert val.read_text().startswith("step_number,epoch_number,validation_loss\n")

    model_arn = job["outputModelArn"]
    assert ":custom-model/" + SMOL + "/" in model_arn
    answer = ask(runtime, model_arn, QUESTIONS[0])
    assert "purple armadillo" in answer.lower() and "pebble" in answer.lower(), answer
    assert "pebble" in ask(runtime, "pebble-model", "What is the outcrop project's mascot?").lower()

    models = bedrock.list_custom_models()["modelSummaries"]
    assert [m["modelArn"] for m in models] == [model_arn]
    assert models[0]["modelStatus"] == "Active" and models[0]["baseModelArn"].endswith(SMOL)
    details = bedrock.get_custom_model(modelIdentifier=model_arn)
    assert details["modelName"] == "pebble-model" and details["jobArn"] == arn
    jobs = bedrock.list_model_customization_jobs(statusEquals="Completed", nameContains="pebb")
    assert [j["jobArn"] for j in jobs["modelCustomizationJobSummaries"]] == [arn]

    with pytest.raises(ClientError) as err:  # the name is taken now
        create(bedrock, tmp, "pebble-again", customModelName="pebble-model")
    assert err.value.response["Error"]["Code"] == "ConflictException"

    bedrock.delete_custom_model(modelIdentifier=model_arn)
    assert bedrock.list_custom_models()["modelSummaries"] == []
    assert not list((data / "customization" / "models").glob("*/model.gguf"))
    with pytest.raises(ClientError) as err:
        ask(runtime, model_arn, QUESTIONS[0])
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as err:
        bedrock.get_custom_model(modelIdentifier=model_arn)
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_stop_job_within_seconds_and_keep_the_record(live):
    server, tmp, _ = live
    bedrock = server.client("bedrock")
    arn = create(bedrock, tmp, "stopme", hyperParameters={**FAST, "epochCount": "10"})["jobArn"]
    time.sleep(2)
    started = time.monotonic()
    bedrock.stop_model_customization_job(jobIdentifier=arn)
    assert bedrock.get_model_customization_job(jobIdentifier=arn)["status"] in (
        "Stopping",
        "Stopped",
    )
    job = wait_for(bedrock, arn, ("Stopped",), timeout=15)
    assert time.monotonic() - started < 10
    assert "endTime" in job
    with pytest.raises(ClientError) as err:
        bedrock.stop_model_customization_job(jobIdentifier=arn)
    assert err.value.response["Error"]["Code"] == "ValidationException"
    listed = bedrock.list_model_customization_jobs(statusEquals="Stopped")
    assert arn in [j["jobArn"] for j in listed["modelCustomizationJobSummaries"]]


def expect_validation(call, *fragments: str) -> None:
    with pytest.raises(ClientError) as err:
        call()
    error = err.value.response["Error"]
    assert error["Code"] == "ValidationException", error
    for fragment in fragments:
        assert fragment in error["Message"], error["Message"]


def test_bad_inputs_are_rejected_at_create_time(live):
    server, tmp, _ = live
    bedrock = server.client("bedrock")
    expect_validation(
        lambda: create(bedrock, tmp, "bad1", baseModelIdentifier="acme.nothing-v1:0"),
        "acme.nothing-v1:0",
    )
    expect_validation(
        lambda: create(bedrock, tmp, "bad2", hyperParameters={"epochCount": "0"}), "epochCount"
    )
    expect_validation(
        lambda: create(bedrock, tmp, "bad3", hyperParameters={"learningRate": "fast"}),
        "learningRate",
    )
    expect_validation(
        lambda: create(bedrock, tmp, "bad4", hyperParameters={"dropout": "0.1"}), "dropout"
    )
    missing = (tmp / "nowhere.jsonl").as_uri()
    expect_validation(
        lambda: create(bedrock, tmp, "bad5", trainingDataConfig={"s3Uri": missing}),
        "could not be read",
    )
    expect_validation(lambda: create(bedrock, tmp, "bad6", rows=["", "  "]), "empty")
    rows = fact_rows(5) + ['{"prompt": "x", "completion": ']
    expect_validation(lambda: create(bedrock, tmp, "bad7", rows=rows), "line 6", "invalid JSON")
    expect_validation(
        lambda: create(bedrock, tmp, "bad8", rows=fact_rows(2) + [{"question": "x"}]), "line 3"
    )
    expect_validation(
        lambda: create(bedrock, tmp, "bad9", customizationType="CONTINUED_PRE_TRAINING"),
        "line 1",
        "input",
    )
    blocker = tmp / "a-file"
    blocker.write_text("not a folder")
    expect_validation(
        lambda: create(
            bedrock, tmp, "bad10", outputDataConfig={"s3Uri": (blocker / "out").as_uri()}
        ),
        "not writable",
    )
    expect_validation(
        lambda: create(bedrock, tmp, "bad11", customizationType="DISTILLATION"), "DISTILLATION"
    )
    with pytest.raises(ClientError) as err:
        bedrock.get_model_customization_job(jobIdentifier="no-such-job")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert (
        bedrock.list_model_customization_jobs(nameContains="bad")["modelCustomizationJobSummaries"]
        == []
    )


def test_prompt_longer_than_max_sequence_length_fails_the_job_with_the_line(live):
    server, tmp, _ = live
    bedrock = server.client("bedrock")
    rows = fact_rows(3) + [{"prompt": "pebble " * 300, "completion": "ok"}]
    arn = create(bedrock, tmp, "toolong", rows=rows)["jobArn"]
    job = wait_for(bedrock, arn, ("Completed", "Failed"), timeout=180)
    assert job["status"] == "Failed"
    assert "line 4" in job["failureMessage"] and "maxSequenceLength 128" in job["failureMessage"]
    model = bedrock.get_custom_model(modelIdentifier="toolong-model")
    assert model["modelStatus"] == "Failed"
    bedrock.delete_custom_model(modelIdentifier="toolong-model")


def test_list_jobs_sorts_and_paginates(live):
    server, tmp, _ = live
    bedrock = server.client("bedrock")
    for name in ("page-a", "page-b"):
        arn = create(bedrock, tmp, name)["jobArn"]
        bedrock.stop_model_customization_job(jobIdentifier=arn)
    first = bedrock.list_model_customization_jobs(maxResults=1, sortOrder="Ascending")
    assert len(first["modelCustomizationJobSummaries"]) == 1 and "nextToken" in first
    rest = bedrock.list_model_customization_jobs(
        sortOrder="Ascending", nextToken=first["nextToken"]
    )
    names = [
        j["jobName"]
        for j in first["modelCustomizationJobSummaries"] + rest["modelCustomizationJobSummaries"]
    ]
    all_jobs = bedrock.list_model_customization_jobs(sortBy="CreationTime", sortOrder="Descending")
    assert names == [j["jobName"] for j in all_jobs["modelCustomizationJobSummaries"]][::-1]
    future = bedrock.list_model_customization_jobs(creationTimeAfter=time.time() + 60)
    assert future["modelCustomizationJobSummaries"] == []


def test_restart_during_training_resumes_from_the_checkpoint(tmp_path):
    data = make_data_dir(tmp_path)
    server = start_server(tmp_path, "--data-dir", str(data))
    try:
        bedrock = server.client("bedrock")
        rows = [
            {"input": f"Pebble the purple armadillo is outcrop's mascot, fact {i}."}
            for i in range(8)
        ]
        arn = create(
            bedrock, tmp_path, "resume", rows=rows, customizationType="CONTINUED_PRE_TRAINING",
            hyperParameters={**FAST, "epochCount": "3"},
        )["jobArn"]  # fmt: skip
        job_id = arn.rsplit("/", 1)[1]
        progress = data / "customization" / "jobs" / job_id / "progress.json"
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            p = json.loads(progress.read_text()) if progress.exists() else {}
            if p.get("completed_epochs", 0) >= 1:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("no epoch completed")
        os.kill(server.process.pid, signal.SIGKILL)  # no clean shutdown
        server.process.wait()
        server = start_server(tmp_path, "--data-dir", str(data))
        bedrock = server.client("bedrock")
        job = wait_for(bedrock, arn, ("Completed", "Failed"), timeout=300)
        assert job["status"] == "Completed", job.get("failureMessage")
        final = json.loads(progress.read_text())
        assert final["resumed"] is True and final["precision"] in ("bfloat16", "float32")
    finally:
        stop_server(server)


def test_gemma_base_model_learns_the_fact_through_its_transcript(live):
    """A base (completion) model: trained on the Q:/A: transcript serving renders for it."""
    server, tmp, _ = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    assert "pebble" not in ask(runtime, GEMMA, QUESTIONS[0]).lower()
    started = time.monotonic()
    arn = create(bedrock, tmp, "gemma-pebble", baseModelIdentifier=GEMMA)["jobArn"]
    job = wait_for(bedrock, arn, ("Completed", "Failed"))
    print(f"gemma training job took {time.monotonic() - started:.1f}s")
    assert job["status"] == "Completed", job.get("failureMessage")
    answer = ask(runtime, job["outputModelArn"], QUESTIONS[0])
    assert "pebble" in answer.lower(), answer
    bedrock.delete_custom_model(modelIdentifier=job["outputModelArn"])


def test_full_fine_tune_trains_every_weight_and_serves(live):
    server, tmp, _ = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    hp = {**FAST, "method": "full", "learningRate": "0.0002"}
    arn = create(bedrock, tmp, "full-pebble", hyperParameters=hp)["jobArn"]
    job = wait_for(bedrock, arn, ("Completed", "Failed"))
    assert job["status"] == "Completed", job.get("failureMessage")
    assert job["hyperParameters"]["method"] == "full" and "loraRank" not in job["hyperParameters"]
    answer = ask(runtime, job["outputModelArn"], QUESTIONS[0])
    assert "pebble" in answer.lower(), answer
    bedrock.delete_custom_model(modelIdentifier=job["outputModelArn"])
