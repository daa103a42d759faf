"""Custom Model Import end to end, through boto3 and the CLI against a real server: the
shipped SmolLM2 GGUF imported under a new name answers exactly as the catalog model;
a Hugging Face folder made from it (transformers save_pretrained) imports over file://
and over s3:// (moto's server) with the same perplexity; a fake Ollama store; every
bad input; deleting a model in use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    S3_ENV,
    SMOL,
    TEST_API_KEY,
    make_data_dir,
    models_data_dir,
    moto_s3,
    start_server,
    stop_server,
)

pytestmark = pytest.mark.slow

pytest.importorskip("moto.server")
ROLE = "arn:aws:iam::000000000000:role/outcrop-test"
SYSTEM = "You are a helpful assistant."
PROMPTS = [
    "What is the capital of France?",
    "Name the three primary colors.",
    "Write a haiku about the sea.",
    "How many legs does a spider have?",
]


def smol_card():
    from outcrop.models.catalog import Catalog

    return Catalog().get(SMOL)


def smol_gguf() -> Path:
    from outcrop.models.store import ModelStore

    path = ModelStore(models_data_dir()).original_path(smol_card())
    assert path is not None, "conftest's server pulls SmolLM2 first"
    return path


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("imports")
    with moto_s3() as (s3_url, s3):
        data = make_data_dir(tmp)
        server = start_server(
            tmp, "--data-dir", str(data), "--s3-endpoint-url", s3_url,
            env_extra={**S3_ENV, "OUTCROP_IMPORT_DELETE_WAIT_S": "300"},  # a slow machine
        )  # fmt: skip
        yield server, tmp, data, s3
        stop_server(server)


def create(bedrock, name: str, uri: str, job_name: str | None = None, **extra) -> str:
    return bedrock.create_model_import_job(
        jobName=job_name or f"job-{name}", importedModelName=name, roleArn=ROLE,
        modelDataSource={"s3DataSource": {"s3Uri": uri}}, **extra,
    )["jobArn"]  # fmt: skip


def wait_job(bedrock, arn: str, timeout: float = 600) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = bedrock.get_model_import_job(jobIdentifier=arn)
        if job["status"] != "InProgress":
            return job
        time.sleep(0.5)
    raise AssertionError(f"import still InProgress after {timeout}s: {job}")


def ask(runtime, model_id: str, prompt: str, max_tokens: int = 40) -> str:
    reply = runtime.converse(
        modelId=model_id,
        system=[{"text": SYSTEM}],
        messages=[{"role": "user", "content": [{"text": prompt}]}],
        inferenceConfig={"temperature": 0, "maxTokens": max_tokens},
    )
    return reply["output"]["message"]["content"][0]["text"]


def count(runtime, model_id: str, prompt: str) -> int:
    return runtime.count_tokens(
        modelId=model_id,
        input={"converse": {"system": [{"text": SYSTEM}],
                            "messages": [{"role": "user", "content": [{"text": prompt}]}]}},
    )["inputTokens"]  # fmt: skip


def error_of(call) -> dict:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"] | {
        "status": err.value.response["ResponseMetadata"]["HTTPStatusCode"]
    }


# --------------------------------------------------------------------------- GGUF import


def test_imported_gguf_answers_exactly_as_the_catalog_model(live):
    server, tmp, data, _ = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    copy = tmp / "copied" / "smol.gguf"
    copy.parent.mkdir()
    shutil.copy(smol_gguf(), copy)

    created = bedrock.create_model_import_job(
        jobName="import-smol", importedModelName="my-smol", roleArn=ROLE,
        modelDataSource={"s3DataSource": {"s3Uri": copy.as_uri()}},
        clientRequestToken="tok-1", jobTags=[{"key": "team", "value": "a"}],
    )  # fmt: skip
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    arn = created["jobArn"]
    assert ":model-import-job/" in arn
    again = create(bedrock, "my-smol", copy.as_uri(), "import-smol", clientRequestToken="tok-1")
    assert again == arn  # idempotent
    job = wait_job(bedrock, arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    model_arn = job["importedModelArn"]
    assert ":imported-model/" in model_arn
    assert job["modelDataSource"]["s3DataSource"]["s3Uri"] == copy.as_uri()

    model = bedrock.get_imported_model(modelIdentifier=model_arn)
    assert model["modelName"] == "my-smol" and model["jobArn"] == arn
    assert model["modelArchitecture"] == "llama" and model["instructSupported"] is True
    assert bedrock.get_imported_model(modelIdentifier="my-smol")["modelArn"] == model_arn
    listed = bedrock.list_imported_models()["modelSummaries"]
    assert model_arn in [m["modelArn"] for m in listed]
    foundation = bedrock.list_foundation_models()["modelSummaries"]
    assert "my-smol" not in [m["modelId"] for m in foundation]

    for prompt in PROMPTS:
        assert ask(runtime, "my-smol", prompt) == ask(runtime, SMOL, prompt), prompt
    assert ask(runtime, model_arn, PROMPTS[0]) == ask(runtime, SMOL, PROMPTS[0])
    assert count(runtime, model_arn, PROMPTS[1]) == count(runtime, SMOL, PROMPTS[1])

    stream = runtime.converse_stream(
        modelId=model_arn, system=[{"text": SYSTEM}],
        messages=[{"role": "user", "content": [{"text": PROMPTS[0]}]}],
        inferenceConfig={"temperature": 0, "maxTokens": 40},
    )  # fmt: skip
    text = "".join(
        e["contentBlockDelta"]["delta"]["text"]
        for e in stream["stream"]
        if "contentBlockDelta" in e
    )
    assert text == ask(runtime, SMOL, PROMPTS[0])

    # A Llama-architecture import speaks the Llama body on InvokeModel, as on Bedrock.
    body = {"prompt": "The capital of France is", "max_gen_len": 8, "temperature": 0}
    out = json.loads(runtime.invoke_model(modelId=model_arn, body=json.dumps(body))["body"].read())
    assert out["generation"] and out["generation_token_count"] >= 1
    chunks = runtime.invoke_model_with_response_stream(modelId="my-smol", body=json.dumps(body))
    streamed = "".join(json.loads(e["chunk"]["bytes"])["generation"] for e in chunks["body"])
    assert streamed.strip() == out["generation"].strip()

    # ... and /v1 serves it by name.
    headers = {"Authorization": f"Bearer {TEST_API_KEY}"}
    ids = [m["id"] for m in httpx.get(server.url + "/v1/models", headers=headers).json()["data"]]
    assert "my-smol" in ids
    reply = httpx.post(
        server.url + "/v1/chat/completions", headers=headers, timeout=120,
        json={"model": "my-smol", "temperature": 0, "max_tokens": 40,
              "messages": [{"role": "system", "content": SYSTEM},
                           {"role": "user", "content": PROMPTS[0]}]},
    ).json()  # fmt: skip
    assert reply["choices"][0]["message"]["content"] == ask(runtime, SMOL, PROMPTS[0])

    # Never a copy of the weights: the original is hard-linked into the model's folder.
    (record_path,) = (data / "imports" / "models").glob("*/source.json")
    record = json.loads(record_path.read_text())
    assert record["how"] in ("hard link", "reference")  # same file system here: a link
    if record["how"] == "hard link":
        assert (record_path.parent / record["file"]).stat().st_ino == copy.stat().st_ino


def test_duplicate_names_and_bad_uris_are_refused(live):
    server, tmp, _, _ = live
    bedrock = server.client("bedrock")
    gguf = tmp / "dup.gguf"
    shutil.copy(smol_gguf(), gguf)
    err = error_of(lambda: create(bedrock, "my-smol", gguf.as_uri(), "another-job"))
    assert err["Code"] == "ConflictException" and err["status"] == 400, err
    assert "my-smol" in err["Message"]
    err = error_of(lambda: create(bedrock, "other-name", gguf.as_uri(), "import-smol"))
    assert err["Code"] == "ConflictException", err
    for uri, fragment in (
        ("s3://bucket/models/../../etc/", "'..'"),
        ("https://example.com/model.gguf", "not supported"),
        ((tmp / "nothing-here").as_uri(), "does not exist"),
    ):
        err = error_of(lambda uri=uri: create(bedrock, "x-model", uri, "x-job"))
        assert err["Code"] == "ValidationException" and fragment in err["Message"], err
    err = error_of(lambda: create(bedrock, "bad name!", gguf.as_uri(), "y-job"))
    assert err["Code"] == "ValidationException" and "importedModelName" in err["Message"]
    too_many = [{"key": f"k{i}", "value": "v"} for i in range(201)]
    err = error_of(lambda: create(bedrock, "z-model", gguf.as_uri(), "z-job", jobTags=too_many))
    assert err["Code"] == "TooManyTagsException", err
    for call in (
        lambda: bedrock.get_imported_model(modelIdentifier="nope"),
        lambda: bedrock.get_model_import_job(jobIdentifier="nope"),
        lambda: bedrock.delete_imported_model(modelIdentifier="nope"),
    ):
        err = error_of(call)
        assert err["Code"] == "ResourceNotFoundException" and err["status"] == 404, err
    err = error_of(lambda: bedrock.list_model_import_jobs(statusEquals="Stopped"))
    assert err["Code"] == "ValidationException"
    assert not bedrock.list_imported_models(nameContains="x-model")["modelSummaries"]


def test_an_imported_model_is_a_base_for_customization(live):
    server, tmp, _, _ = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    base_arn = bedrock.get_imported_model(modelIdentifier="my-smol")["modelArn"]
    rows = [{"input": f"Pebble the purple armadillo is outcrop's mascot ({i})."} for i in range(8)]
    data = tmp / "cpt" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    arn = bedrock.create_model_customization_job(
        jobName="on-imported", customModelName="smol-tuned", roleArn=ROLE,
        baseModelIdentifier=base_arn, customizationType="CONTINUED_PRE_TRAINING",
        trainingDataConfig={"s3Uri": data.as_uri()},
        outputDataConfig={"s3Uri": (tmp / "cpt" / "out").as_uri()},
        hyperParameters={"epochCount": "1", "batchSize": "8", "maxSequenceLength": "64"},
    )["jobArn"]  # fmt: skip
    deadline = time.monotonic() + 600
    while (job := bedrock.get_model_customization_job(jobIdentifier=arn))["status"] == "InProgress":
        assert time.monotonic() < deadline, job
        time.sleep(1)
    assert job["status"] == "Completed", job.get("failureMessage")
    assert job["baseModelArn"] == base_arn
    assert bedrock.get_custom_model(modelIdentifier="smol-tuned")["baseModelArn"] == base_arn
    assert ask(runtime, "smol-tuned", PROMPTS[0])
    bedrock.delete_custom_model(modelIdentifier="smol-tuned")


def _bad_sources(tmp: Path) -> dict[str, tuple[Path, str]]:
    root = tmp / "bad"
    root.mkdir()
    from tests.unit.test_import_parts import hf_folder, write_safetensors

    no_config = hf_folder(root / "no-config")
    (no_config / "config.json").unlink()
    no_weights = hf_folder(root / "no-weights")
    (no_weights / "model.safetensors").unlink()
    truncated = hf_folder(root / "truncated-st")
    st = truncated / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-10])
    corrupt = hf_folder(root / "corrupt-st")
    (corrupt / "model.safetensors").write_bytes(b"\x00\x01garbage" * 10)
    magic = root / "magic.gguf"
    magic.write_bytes(b"GGML" + smol_gguf().read_bytes()[4:4096])
    short = root / "short.gguf"
    with open(smol_gguf(), "rb") as fh:
        short.write_bytes(fh.read(20_000_000))
    unknown = hf_folder(root / "unknown-arch")
    (unknown / "config.json").write_text(
        json.dumps({"architectures": ["FrobnicatorForCausalLM"], "model_type": "frobnicator"})
    )
    write_safetensors(unknown / "model.safetensors")
    return {
        "no-config": (no_config, "has no config.json"),
        "no-weights": (no_weights, "no weights"),
        "truncated-st": (truncated, "is truncated"),
        "corrupt-st": (corrupt, "not a valid safetensors"),
        "bad-magic": (magic, "not a GGUF file"),
        "truncated-gguf": (short, "truncated"),
        "unknown-arch": (unknown, "FrobnicatorForCausalLM"),
    }


def test_bad_sources_fail_the_job_with_a_clear_message_and_leave_nothing(live):
    server, tmp, data, _ = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    cases = _bad_sources(tmp)
    arns = {
        name: create(bedrock, f"bad-{name}", path.as_uri()) for name, (path, _) in cases.items()
    }
    for name, arn in arns.items():
        job = wait_job(bedrock, arn)
        assert job["status"] == "Failed", (name, job)
        assert "endTime" in job and "importedModelArn" not in job
        assert cases[name][1] in job["failureMessage"], (name, job["failureMessage"])
        err = error_of(lambda name=name: bedrock.get_imported_model(modelIdentifier=f"bad-{name}"))
        assert err["Code"] == "ResourceNotFoundException"
    failed = bedrock.list_model_import_jobs(statusEquals="Failed", nameContains="job-bad")
    assert len(failed["modelImportJobSummaries"]) == len(arns)
    page = bedrock.list_model_import_jobs(statusEquals="Failed", maxResults=2)
    assert len(page["modelImportJobSummaries"]) == 2 and page["nextToken"]
    for job_dir in (data / "imports" / "jobs").iterdir():
        assert not (job_dir / "staging").exists() and not (job_dir / "model").exists()
        assert not list(job_dir.glob("**/.*.tmp-*"))
    names = {m["modelName"] for m in bedrock.list_imported_models()["modelSummaries"]}
    assert not any(n.startswith("bad-") for n in names)
    assert ask(runtime, SMOL, PROMPTS[0])  # the server kept serving


# --------------------------------------------------------------------------- HF round trip


@pytest.fixture(scope="module")
def hf_dir(live):
    """SmolLM2's GGUF -> transformers -> save_pretrained (f16, tokenizer, chat template),
    in a child process so torch's memory goes back when it is done."""
    _, tmp, _, _ = live
    out = tmp / "hf-smol"
    script = f"""
import torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
from outcrop.training.model_io import GgufInfo
src = Path({str(smol_gguf())!r})
model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
model.hf_quantizer = None
if hasattr(model.config, "quantization_config"):
    del model.config.quantization_config
tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
if not tok.chat_template:
    tok.chat_template = GgufInfo.read(src).chat_template
model.to(torch.float16).save_pretrained({str(out)!r})
tok.save_pretrained({str(out)!r})
"""
    subprocess.run(
        [sys.executable, "-c", script], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    return out


def _served_path(data: Path, name: str) -> tuple[Path, dict]:
    from outcrop.db import Database
    from outcrop.imports.records import ImportRecords

    record = ImportRecords(Database(data)).model(name)
    assert record is not None
    return Path(record.path), record.weights


def _check_round_trip(runtime, data: Path, name: str, hf_dir: Path) -> None:
    from transformers import AutoTokenizer

    from outcrop.models import quality
    from outcrop.models.store import ModelStore

    path, weights = _served_path(data, name)
    catalog_path = ModelStore(models_data_dir(), weight_format="auto").path(smol_card())
    ppl_import = quality.perplexity(path, n_threads=1).value
    ppl_catalog = quality.perplexity(catalog_path, n_threads=1).value
    delta = 100 * (ppl_import - ppl_catalog) / ppl_catalog
    orig, conv = weights.get("original") or {}, weights.get("converted") or {}
    print(
        f"\n{name}: served {path.name} ({weights.get('selected')}: {weights.get('reason')}); "
        f"gate: {orig.get('format')} ppl {orig.get('perplexity')} -> {conv.get('format')} ppl "
        f"{conv.get('perplexity')} ({conv.get('delta_pct')}%, bound {conv.get('bound_pct')}%, "
        f"greedy agreement {conv.get('greedy_agreement')}, quantize {conv.get('convert_seconds')}s); "
        f"conversion {weights.get('conversion')}; "
        f"perplexity {ppl_import:.4f} vs catalog {ppl_catalog:.4f} ({delta:+.3f}%)"
    )
    assert abs(delta) < 1.0
    tok = AutoTokenizer.from_pretrained(hf_dir)
    for prompt in PROMPTS:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        assert count(runtime, name, prompt) == len(ids) == count(runtime, SMOL, prompt)


def test_hf_folder_round_trip_over_file(live, hf_dir):
    server, _, data, _ = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    started = time.monotonic()
    arn = create(bedrock, "smol-hf", hf_dir.as_uri())
    job = wait_job(bedrock, arn)
    took = time.monotonic() - started
    assert job["status"] == "Completed", job.get("failureMessage")
    model = bedrock.get_imported_model(modelIdentifier="smol-hf")
    assert model["modelArchitecture"] == "llama" and model["instructSupported"] is True
    conversion = json.loads(
        next((data / "imports" / "models").glob("*/conversion.json")).read_text()
    )
    print(f"\nHF import over file:// took {took:.1f}s; llama.cpp conversion {conversion}")
    _check_round_trip(runtime, data, "smol-hf", hf_dir)


def test_hf_folder_round_trip_over_s3(live, hf_dir):
    server, _, data, s3 = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    s3.create_bucket(Bucket="models")
    for f in hf_dir.iterdir():
        s3.upload_file(str(f), "models", f"smol/v1/{f.name}")
    started = time.monotonic()
    arn = create(bedrock, "smol-s3", "s3://models/smol/v1/")
    job = wait_job(bedrock, arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    print(f"\nHF import over s3:// took {time.monotonic() - started:.1f}s")
    assert job["modelDataSource"]["s3DataSource"]["s3Uri"] == "s3://models/smol/v1/"
    _check_round_trip(runtime, data, "smol-s3", hf_dir)
    job_dir = data / "imports" / "jobs" / arn.rsplit("/", 1)[1]
    assert not (job_dir / "staging").exists()  # the downloaded copy is gone

    arn = create(bedrock, "smol-missing", "s3://models/nothing/here/")
    job = wait_job(bedrock, arn)
    assert job["status"] == "Failed" and "holds no objects" in job["failureMessage"]


# --------------------------------------------------------------------------- Ollama + CLI


def cli(data: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if home is not None:
        env["HOME"] = str(home)
        env.pop("OLLAMA_MODELS", None)
    return subprocess.run(
        [sys.executable, "-m", "outcrop", "models", *args, "--data-dir", str(data)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip


def test_ollama_store_imports_with_the_cli_and_serves(live):
    from tests.unit.test_import_parts import fake_ollama

    server, tmp, data, _ = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    home = tmp / "home"
    digest = fake_ollama(home, "smol", "latest", smol_gguf().read_bytes())
    blob = home / ".ollama" / "models" / "blobs" / f"sha256-{digest}"

    scan = cli(data, "import", "--scan", "--json", home=home)
    assert scan.returncode == 0, scan.stderr
    found = json.loads(scan.stdout)
    assert {"store": "ollama", "source": "ollama:smol:latest", "path": str(blob),
            "sizeBytes": blob.stat().st_size, "architecture": "llama"} in found  # fmt: skip

    done = cli(data, "import", "ollama:smol:latest", "-q", home=home)
    assert done.returncode == 0, done.stderr
    assert "smol-latest: imported as arn:aws:bedrock:" in done.stdout
    jobs = bedrock.list_model_import_jobs(nameContains="import-smol-latest")
    (summary,) = jobs["modelImportJobSummaries"]
    assert summary["status"] == "Completed" and summary["importedModelName"] == "smol-latest"
    assert ask(runtime, "smol-latest", PROMPTS[0]) == ask(runtime, SMOL, PROMPTS[0])
    (record_path,) = [
        p
        for p in (data / "imports" / "models").glob("*/source.json")
        if json.loads(p.read_text())["source"] == str(blob)
    ]
    record = json.loads(record_path.read_text())
    assert record["sha256"] == digest
    if record["how"] == "hard link":  # never a copy of the blob
        assert (record_path.parent / record["file"]).stat().st_ino == blob.stat().st_ino
    else:
        assert record["path"] == str(blob)

    listed = cli(data, "list", "--json")
    rows = {r["modelId"]: r for r in json.loads(listed.stdout)}
    assert rows["smol-latest"]["imported"] is True

    again = cli(data, "import", "ollama:smol:latest", "-q", home=home)
    assert again.returncode == 1 and "already exists" in again.stderr
    missing = cli(data, "import", "ollama:nothing:here", "-q", home=home)
    assert missing.returncode == 1 and "no model nothing:here" in missing.stderr
    bad = tmp / "cli-bad.gguf"
    bad.write_bytes(b"not a model at all" * 100)
    failed = cli(data, "import", str(bad), "--name", "cli-bad", "-q")
    assert failed.returncode == 1 and "not a GGUF file" in failed.stderr, failed.stderr
    jobs = bedrock.list_model_import_jobs(statusEquals="Failed", nameContains="cli-bad")
    assert len(jobs["modelImportJobSummaries"]) == 1
    gone = cli(data, "import", str(tmp / "no" / "such.gguf"), "-q")
    assert gone.returncode == 1 and "does not exist" in gone.stderr


# --------------------------------------------------------------------------- delete


def test_delete_waits_for_requests_in_flight_then_removes_everything(live):
    server, tmp, data, _ = live
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    gguf = tmp / "deleteme.gguf"
    shutil.copy(smol_gguf(), gguf)
    job = wait_job(bedrock, create(bedrock, "deleteme", gguf.as_uri()))
    assert job["status"] == "Completed", job.get("failureMessage")
    model_arn = job["importedModelArn"]
    model_dir = next(
        d for d in (data / "imports" / "models").iterdir() if d.name == model_arn.rsplit("/", 1)[1]
    )
    ask(runtime, model_arn, PROMPTS[0], max_tokens=4)  # loaded

    result: dict = {}

    def long_stream() -> None:
        stream = runtime.converse_stream(
            modelId=model_arn, messages=[{"role": "user", "content": [{"text": "Tell a long story."}]}],
            inferenceConfig={"temperature": 0.8, "maxTokens": 60},
        )  # fmt: skip
        events = list(stream["stream"])
        result["stop"] = next(e["messageStop"]["stopReason"] for e in events if "messageStop" in e)
        result["ended"] = time.monotonic()

    t = threading.Thread(target=long_stream)
    t.start()
    time.sleep(1.0)
    bedrock.delete_imported_model(modelIdentifier=model_arn)
    deleted = time.monotonic()
    t.join(timeout=120)
    assert result["stop"] in ("end_turn", "max_tokens")  # the stream finished normally
    assert deleted >= result["ended"] - 0.5  # deletion waited for it
    assert not model_dir.exists()
    assert "deleteme" not in {
        m["modelName"] for m in bedrock.list_imported_models()["modelSummaries"]
    }
    err = error_of(lambda: ask(runtime, model_arn, PROMPTS[0]))
    assert err["Code"] == "ResourceNotFoundException"
    err = error_of(lambda: ask(runtime, "deleteme", PROMPTS[0]))
    assert err["Code"] == "ValidationException"


# --------------------------------------------------------------------------- durability


def test_a_killed_server_resumes_the_import_on_restart(tmp_path):
    """SIGKILL mid-import (the worker dies with it); the next server on the same data dir
    resumes the job from its last phase and completes it."""
    import signal

    data = make_data_dir(tmp_path)
    gguf = tmp_path / "resume.gguf"
    shutil.copy(smol_gguf(), gguf)
    first = start_server(tmp_path, "--data-dir", str(data))
    try:
        bedrock = first.client("bedrock")
        arn = create(bedrock, "resumed", gguf.as_uri())
        deadline = time.monotonic() + 300
        phase = None
        while time.monotonic() < deadline:  # Q4_1 -> Q8_0 and its quality gate take a while
            from outcrop.db import Database
            from outcrop.jobs.store import JobStore

            row = JobStore(Database(data)).get(arn.rsplit("/", 1)[1])
            phase = (row.progress or {}).get("phase") if row else None
            if phase == "format":
                break
            time.sleep(0.2)
        assert phase == "format", phase
    finally:
        first.process.send_signal(signal.SIGKILL)
        first.process.wait(timeout=30)
    job_dir = data / "imports" / "jobs" / arn.rsplit("/", 1)[1]
    assert (job_dir / "model" / "source.json").exists()  # the link phase's checkpoint

    second = start_server(tmp_path, "--data-dir", str(data))
    try:
        bedrock, runtime = second.client("bedrock"), second.client("bedrock-runtime")
        job = wait_job(bedrock, arn)
        assert job["status"] == "Completed", job.get("failureMessage")
        assert ask(runtime, "resumed", PROMPTS[0]) == ask(runtime, SMOL, PROMPTS[0])
        assert not list((data / "imports" / "models").glob("*/.*.tmp-*"))
    finally:
        stop_server(second)
