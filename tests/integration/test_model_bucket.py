"""Two servers, each with its own data dir, sharing one records database and one model
bucket (moto's server as S3): a custom model trained on A, and a model imported on A, are
served by B, which pulls the files into its own data dir, verified by sha256; a tampered cached copy is pulled again; a
tampered bucket object is refused with ModelNotReadyException, never a 5xx."""

from __future__ import annotations

import hashlib
import shutil
import time

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.conftest import (
    S3_ENV,
    SMOL,
    TEST_KEY,
    TEST_SECRET,
    models_data_dir,
    moto_s3,
    start_server,
    stop_server,
)
from tests.integration.test_customization import ROLE, ask, fact_rows, wait_for, write_jsonl
from tests.integration.test_imports import create, smol_card, wait_job
from tests.integration.test_postgres_records import postgres  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow

pytest.importorskip("moto.server")

PREFIX = "shared"


def served_smol():
    """The SmolLM2 file the servers serve (already in a fast format: nothing to convert)."""
    from outcrop.models.store import ModelStore

    path = ModelStore(models_data_dir(), weight_format="auto").path(smol_card())
    assert path is not None, "conftest's server pulls SmolLM2 first"
    return path


def loaded(server) -> set[str]:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    req = AWSRequest(method="GET", url=server.url + "/outcrop/ps")
    SigV4Auth(Credentials(TEST_KEY, TEST_SECRET), "bedrock", "us-east-1").add_auth(req)
    body = httpx.get(req.url, headers=dict(req.headers), timeout=10).json()
    return {m["modelId"] for m in body["models"]}


def wait_unloaded(server, model_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while model_id in loaded(server):
        assert time.monotonic() < deadline, f"{model_id} still loaded"
        time.sleep(0.3)


def corrupt(path) -> None:
    """Flip bytes in the middle, size unchanged (only the mtime tells the sidecar)."""
    with open(path, "r+b") as fh:
        fh.seek(path.stat().st_size // 2)
        fh.write(b"\x00tampered\x00")


def test_custom_model_trained_on_a_is_served_by_b_from_the_bucket(tmp_path):
    with moto_s3() as (s3_url, s3):
        s3.create_bucket(Bucket="models")
        shared = [
            "--database-url", f"sqlite:///{tmp_path / 'shared.db'}",
            "--s3-endpoint-url", s3_url, "--model-bucket", f"s3://models/{PREFIX}",
        ]  # fmt: skip
        a = start_server(tmp_path / "a", *shared, env_extra=S3_ENV)
        b = None
        try:
            bedrock = a.client("bedrock")
            arn = bedrock.create_model_customization_job(
                jobName="bucket-job", customModelName="bucket-model", roleArn=ROLE,
                baseModelIdentifier=SMOL,
                trainingDataConfig={"s3Uri": write_jsonl(tmp_path / "train.jsonl", fact_rows(16))},
                outputDataConfig={"s3Uri": (tmp_path / "out").as_uri()},
                hyperParameters={"epochCount": "1", "batchSize": "8", "learningRate": "0.002",
                                 "maxSequenceLength": "64"},
            )["jobArn"]  # fmt: skip
            job = wait_for(bedrock, arn, ("Completed", "Failed"), timeout=300)
            assert job["status"] == "Completed", job.get("failureMessage")
            model_arn = job["outputModelArn"]
            model_id = model_arn.rsplit("/", 1)[1]

            # The file is in the bucket under the documented key, its sha256 with it.
            key = f"{PREFIX}/custom-models/{model_id}/model.gguf"
            body = s3.get_object(Bucket="models", Key=key)
            blob = body["Body"].read()
            sha = hashlib.sha256(blob).hexdigest()
            assert body["Metadata"]["sha256"] == sha
            a_data = next((tmp_path / "a").glob("server-*/data"))
            assert (a_data / "customization" / "models" / model_id / "model.gguf").is_file()

            # The training worker pushed it (its log says so); A's runner uploaded nothing.
            job_dir = a_data / "customization" / "jobs" / arn.rsplit("/", 1)[1]
            assert f"outcrop: pushed {job_dir.parents[1]}" in (job_dir / "worker.log").read_text()
            assert "pushed " not in a.log.read_text()

            text_a = ask(a.client(), model_arn, "What is the outcrop project's mascot?")
            assert not (a_data / "model-bucket").exists()  # A serves its own, verified copy

            # An import on A goes to the bucket the same way.
            copy = tmp_path / "import" / "smol.gguf"
            copy.parent.mkdir()
            shutil.copy(served_smol(), copy)
            imported = wait_job(bedrock, create(bedrock, "shared-smol", copy.as_uri()))
            assert imported["status"] == "Completed", imported.get("failureMessage")
            imported_id = imported["importedModelArn"].rsplit("/", 1)[1]
            import_dir = a_data / "imports" / "jobs" / imported["jobArn"].rsplit("/", 1)[1]
            assert "outcrop: pushed" in (import_dir / "worker.log").read_text()
            assert "pushed " not in a.log.read_text()
            imported_key = f"{PREFIX}/imported-models/{imported_id}/"
            listed = s3.list_objects_v2(Bucket="models", Prefix=imported_key)["Contents"]
            assert len(listed) == 1 and listed[0]["Key"].endswith(".gguf")
            hello = [{"role": "user", "content": [{"text": "Name the three primary colors."}]}]
            imported_a = a.client().converse(
                modelId="shared-smol",
                messages=hello,
                inferenceConfig={"temperature": 0, "maxTokens": 24},
            )["output"]["message"]["content"][0]["text"]

            # B starts after the job: its data dir has never seen the file.
            b = start_server(tmp_path / "b", *shared, "--keep-alive", "1", env_extra=S3_ENV)
            b_data = next((tmp_path / "b").glob("server-*/data"))
            assert not (b_data / "customization").exists()
            text_b = ask(b.client(), model_arn, "What is the outcrop project's mascot?")
            assert text_b == text_a
            cached = b_data / "model-bucket" / key
            assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha
            got = b.client("bedrock").get_custom_model(modelIdentifier="bucket-model")
            assert got["modelArn"] == model_arn and got["modelStatus"] == "Active"
            imported_b = b.client().converse(
                modelId=imported["importedModelArn"], messages=hello,
                inferenceConfig={"temperature": 0, "maxTokens": 24},
            )["output"]["message"]["content"][0]["text"]  # fmt: skip
            assert imported_b == imported_a
            assert (b_data / "model-bucket" / listed[0]["Key"]).is_file()

            # A tampered cached copy is noticed when B loads the model again: pulled again.
            wait_unloaded(b, "bucket-model")
            corrupt(cached)
            assert (
                ask(b.client(), "bucket-model", "What is the outcrop project's mascot?") == text_a
            )
            assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha
            assert b.log.read_text().count(f"pulled s3://models/{key}") == 2

            # A tampered object in the bucket: refused clearly, the cache left without it.
            wait_unloaded(b, "bucket-model")
            s3.put_object(Bucket="models", Key=key, Body=blob[: len(blob) // 2])
            corrupt(cached)
            with pytest.raises(ClientError) as err:
                ask(b.client(), model_arn, "What is the outcrop project's mascot?")
            error = err.value.response
            assert error["Error"]["Code"] == "ModelNotReadyException", error
            assert error["ResponseMetadata"]["HTTPStatusCode"] == 429
            assert "does not match its recorded checksum" in error["Error"]["Message"]
            assert not cached.exists()  # the bad copy is gone, no partial file beside it
            assert not [p for p in cached.parent.iterdir() if ".partial-" in p.name]
            assert "Traceback" not in b.log.read_text()

            # Deleting the model removes its object from the bucket.
            bedrock.delete_custom_model(modelIdentifier=model_arn)
            assert s3.list_objects_v2(Bucket="models", Prefix=key).get("KeyCount") == 0
        finally:
            stop_server(a)
            if b is not None:
                stop_server(b)


def test_postgres_records_gain_the_bucket_columns(postgres):  # noqa: F811
    """Records written before the model bucket (version 2) on a real PostgreSQL: the
    migration adds the columns, rows keep their values, a second start changes nothing."""
    from sqlalchemy import create_engine, inspect, text

    from outcrop.db import Database
    from outcrop.training.records import CustomizationRecords

    engine = create_engine(postgres)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
        conn.execute(text("INSERT INTO schema_version VALUES (2)"))
        conn.execute(
            text(
                "CREATE TABLE custom_models (model_id VARCHAR(12) PRIMARY KEY, model_arn "
                "VARCHAR(1011) UNIQUE, model_name VARCHAR(63) UNIQUE, job_id VARCHAR(12), "
                "base_model_id VARCHAR(200), status VARCHAR(16), failure_message TEXT, "
                "creation_time FLOAT, path TEXT)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO custom_models VALUES ('m1', 'arn:m1', 'one', 'j1', 'base', "
                "'Active', NULL, 1.0, '/x/model.gguf')"
            )
        )
    engine.dispose()
    db = Database(url=postgres)
    model = CustomizationRecords(db).model("one")
    assert (model.path, model.bucket_key, model.sha256) == ("/x/model.gguf", None, None)
    CustomizationRecords(db).update_model("m1", bucket_key="p/custom-models/m1/model.gguf",
                                          sha256="c" * 64)  # fmt: skip
    assert {"bucket_key", "sha256"} <= {
        c["name"] for c in inspect(db.engine).get_columns("custom_models")
    }
    again = Database(url=postgres)
    assert CustomizationRecords(again).model("m1").sha256 == "c" * 64
