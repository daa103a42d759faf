"""ModelBucket against a real S3-compatible endpoint (moto's server on 127.0.0.1): push
and pull with sha256 checks, the sidecar that spares a re-hash, what a tampered object or
cached copy does, and how the records and the store use it."""

from __future__ import annotations

import hashlib
import os
import sqlite3

import pytest

from outcrop.errors import ModelNotReadyError
from outcrop.jobs.files import JobFailure
from outcrop.models.bucket import (
    ModelBucket,
    ModelBucketError,
    ModelChecksumError,
    parse_bucket_uri,
    publish_target,
    push_result,
    sidecar,
    verified,
)
from tests.conftest import S3_ENV, moto_s3

pytest.importorskip("moto.server")

BIG = 9 * 2**20 + 123  # over boto3's 8 MiB multipart threshold


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as (url, client):
        client.create_bucket(Bucket="models")
        yield url, client


@pytest.fixture
def bucket(s3, monkeypatch):
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    url, _ = s3

    class Settings:
        model_bucket = "s3://models/team-a/"
        s3_endpoint_url = url

    made = ModelBucket.from_settings(Settings())
    assert made is not None
    return made


def data(n: int, seed: int = 1) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 2048
    return (block * (n // len(block) + 1))[:n]


def partials(folder) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name]


def test_push_then_pull_round_trip_multipart_with_checksum(bucket, s3, tmp_path):
    _, client = s3
    src = tmp_path / "made" / "model.gguf"
    src.parent.mkdir()
    src.write_bytes(data(BIG))
    key = bucket.custom_model_key("abc123", "model.gguf")
    assert key == "team-a/custom-models/abc123/model.gguf"

    sha = bucket.push(src, key)

    assert sha == hashlib.sha256(src.read_bytes()).hexdigest()
    head = client.head_object(Bucket="models", Key=key)
    assert head["Metadata"]["sha256"] == sha and head["ContentLength"] == BIG
    assert "-" in head["ETag"]  # a multipart upload's ETag
    dest = tmp_path / "node-b" / key
    assert bucket.pull(key, sha, dest) == dest
    assert dest.read_bytes() == src.read_bytes()
    assert verified(dest, sha, rehash=False)  # the sidecar records the verified file
    assert partials(dest.parent) == []


def test_tampered_object_raises_and_leaves_no_file(bucket, s3, tmp_path):
    _, client = s3
    src = tmp_path / "model.gguf"
    src.write_bytes(data(4096, seed=2))
    key = bucket.imported_model_key("imp1", "model.gguf")
    sha = bucket.push(src, key)
    client.put_object(Bucket="models", Key=key, Body=data(4096, seed=3))  # tampered

    dest = tmp_path / "cache" / "model.gguf"
    with pytest.raises(ModelChecksumError) as err:
        bucket.pull(key, sha, dest)
    assert isinstance(err.value, ModelNotReadyError)  # rendered as ModelNotReadyException
    assert "does not match its recorded checksum" in err.value.message and sha in err.value.message
    assert not dest.exists() and not sidecar(dest).exists()
    assert partials(dest.parent) == []

    # A client's retries right after are answered from memory, not by downloading again.
    client.put_object(Bucket="models", Key=key, Body=src.read_bytes())
    with pytest.raises(ModelChecksumError):
        bucket.pull(key, sha, dest)
    bucket.retry_after_s = 0
    assert bucket.pull(key, sha, dest).read_bytes() == src.read_bytes()


def test_verified_cache_is_not_downloaded_again(bucket, s3, tmp_path, monkeypatch):
    _, client = s3
    src = tmp_path / "model.gguf"
    src.write_bytes(data(50_000, seed=4))
    key = bucket.key("custom-models", "m2", "model.gguf")
    sha = bucket.push(src, key)
    dest = tmp_path / "cache" / "model.gguf"
    bucket.pull(key, sha, dest)

    downloads: list[str] = []
    real = bucket.client.download_file
    monkeypatch.setattr(
        bucket.client, "download_file", lambda *a, **k: (downloads.append(a[1]), real(*a, **k))
    )
    hashed: list[object] = []
    import outcrop.models.bucket as mod

    real_hash = mod.sha256_file
    monkeypatch.setattr(mod, "sha256_file", lambda p: (hashed.append(p), real_hash(p))[1])

    assert bucket.pull(key, sha, dest) == dest
    assert downloads == [] and hashed == []  # neither fetched nor re-hashed: the sidecar

    # The cached copy changed on disk: checked again, found wrong, pulled again.
    with open(dest, "r+b") as fh:
        fh.write(b"XXXX")
    assert bucket.pull(key, sha, dest).read_bytes() == src.read_bytes()
    assert downloads == [key]

    # Touched but intact: hashed once, not downloaded.
    os.utime(dest, ns=(1, 1))
    assert bucket.pull(key, sha, dest) == dest and downloads == [key]

    # A sidecar naming another checksum than the record: pulled again.
    other = "0" * 64
    client.put_object(Bucket="models", Key=key, Body=data(10, seed=5))
    new_sha = hashlib.sha256(data(10, seed=5)).hexdigest()
    assert bucket.pull(key, new_sha, dest).read_bytes() == data(10, seed=5)
    assert downloads == [key, key]
    assert not verified(dest, other)


def test_missing_object_and_unreachable_endpoint_are_clear(s3, tmp_path, monkeypatch):
    for k, v in S3_ENV.items():
        monkeypatch.setenv(k, v)
    url, _ = s3
    bucket = ModelBucket("models", "p", url)
    dest = tmp_path / "x.gguf"
    with pytest.raises(ModelBucketError, match="does not exist"):
        bucket.pull("p/custom-models/none/model.gguf", "a" * 64, dest)
    assert not dest.exists() and partials(tmp_path) == []
    with pytest.raises(ModelBucketError, match="checksum .* is invalid"):
        bucket.pull("p/k", "not-a-sha", dest)

    dead = ModelBucket("models", "", "http://127.0.0.1:9")  # nothing listens on port 9
    import boto3
    from botocore.config import Config

    dead._client = boto3.client(
        "s3", endpoint_url=dead.endpoint_url,
        config=Config(connect_timeout=1, retries={"max_attempts": 1}),
    )  # fmt: skip
    with pytest.raises(ModelBucketError, match="could not be fetched"):
        dead.pull("k", "a" * 64, dest)
    src = tmp_path / "f.bin"
    src.write_bytes(b"1")
    with pytest.raises(ModelBucketError, match="could not be uploaded"):
        dead.push(src, "k")


def test_bucket_uri_and_settings():
    assert parse_bucket_uri("s3://b") == ("b", "")
    assert parse_bucket_uri("s3://b/team/models/") == ("b", "team/models")
    for bad in ("b/prefix", "file:///x", "s3://", "s3://b/../x"):
        with pytest.raises(ValueError):
            parse_bucket_uri(bad)
    from outcrop.settings import Settings

    assert ModelBucket.from_settings(Settings()) is None  # unset: today's behaviour
    made = ModelBucket.from_settings(
        Settings(model_bucket="s3://m/pre", s3_endpoint_url="http://127.0.0.1:1")
    )
    assert (made.bucket, made.prefix, made.endpoint_url) == ("m", "pre", "http://127.0.0.1:1")
    assert made.key("imported-models", "i", "f.gguf") == "pre/imported-models/i/f.gguf"
    with pytest.raises(ValueError, match="s3://BUCKET"):
        Settings(model_bucket="models/pre")


def test_job_result_with_bucket_key_is_recorded_without_a_local_file(tmp_path):
    from outcrop.service.model_files import keep_model_file

    kept = keep_model_file(
        {"path": "/elsewhere/model.gguf", "bucket_key": "p/custom-models/m/model.gguf",
         "sha256": "b" * 64}, None, tmp_path, "the worker",
    )  # fmt: skip
    assert (kept.bucket_key, kept.sha256) == ("p/custom-models/m/model.gguf", "b" * 64)
    for bad in ({"bucket_key": "k"}, {"bucket_key": "k", "sha256": "xyz"},
                {"bucket_key": "../k", "sha256": "b" * 64}):  # fmt: skip
        with pytest.raises(JobFailure, match="invalid model bucket key"):
            keep_model_file(bad, None, tmp_path, "the worker")
    with pytest.raises(JobFailure, match="missing"):
        keep_model_file({"path": str(tmp_path / "no.gguf")}, None, tmp_path, "w")
    local = tmp_path / "model.gguf"
    local.write_bytes(b"gguf")
    assert keep_model_file({"path": str(local)}, None, tmp_path, "w").bucket_key is None


def test_the_worker_pushes_its_model_file_before_it_reports_and_the_runner_never_does(
    bucket, s3, tmp_path
):
    """A worker (local child or Ray actor alike) pushes per its spec, then writes its
    result; a result without a key while a bucket is set is refused, never uploaded by
    the server."""
    import json

    from outcrop.jobs import files
    from outcrop.jobs.publish import finish
    from outcrop.service.model_files import keep_model_file

    _, client = s3
    local = tmp_path / "customization" / "models" / "m9" / "model.gguf"
    local.parent.mkdir(parents=True)
    local.write_bytes(data(3000, seed=9))
    job = tmp_path / "job"
    job.mkdir()
    target = publish_target(bucket, "custom-models", "m9", tmp_path)
    files.write_json(job / files.SPEC, {"publish": json.loads(json.dumps(target))})
    with pytest.raises(JobFailure, match="did not push"):
        keep_model_file({"path": str(local)}, bucket, tmp_path, "w")
    assert finish(job, {"path": str(local), "steps": 2}) == 0
    result = files.read_json(job / files.RESULT)
    assert result["bucket_key"] == "team-a/custom-models/m9/model.gguf" and result["steps"] == 2
    body = client.get_object(Bucket="models", Key=result["bucket_key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == result["sha256"]
    assert verified(local, result["sha256"], rehash=False)  # its maker serves it by a stat
    kept = keep_model_file(result, bucket, tmp_path, "w")
    assert (kept.bucket_key, kept.sha256) == (result["bucket_key"], result["sha256"])

    # A file outside the data dir (an Ollama blob) gets no sidecar; a failed push fails
    # the job with the reason, and leaves no result.
    outside = tmp_path.parent / f"{tmp_path.name}-blob" / "sha256-abc"
    outside.parent.mkdir()
    outside.write_bytes(data(100, seed=3))
    assert finish(job, {"path": str(outside)}) == 0
    assert not sidecar(outside).exists()
    files.write_json(job / files.SPEC, {"publish": {**target, "bucket": "no-such-bucket"}})
    assert finish(job, {"path": str(local)}) == 2
    assert not (job / files.RESULT).exists()
    assert "could not be published" in files.read_json(job / files.ERROR)["message"]


def test_store_pulls_a_bucket_card_and_says_why_it_cannot(bucket, tmp_path):
    from outcrop.models.catalog import ModelCard
    from outcrop.models.store import ModelStore

    src = tmp_path / "origin" / "model.gguf"
    src.parent.mkdir()
    src.write_bytes(data(2048, seed=7))
    key = bucket.custom_model_key("m7", "model.gguf")
    sha = bucket.push(src, key)
    card = ModelCard(
        model_id="m7-model", name="m7-model", provider_name="Custom", context_length=512,
        file_name="model.gguf", license="x", custom=True, sha256=sha, bucket_key=key,
        local_path="/node-a/data/customization/models/m7/model.gguf",
    )  # fmt: skip
    node_b = ModelStore(tmp_path / "node-b", bucket=bucket)
    assert node_b.path(card) is None
    path = node_b.ensure(card)
    assert path == tmp_path / "node-b" / "model-bucket" / key
    assert path.read_bytes() == src.read_bytes() and node_b.path(card) == path

    bare = ModelStore(tmp_path / "node-c")  # no --model-bucket
    with pytest.raises(ModelNotReadyError, match="without --model-bucket"):
        bare.ensure(card)


def test_existing_records_gain_the_bucket_columns(tmp_path):
    """A version-2 database: the migration adds bucket_key and sha256 to both tables."""
    from outcrop.db import Database
    from outcrop.imports.records import ImportRecords
    from outcrop.training.records import CustomizationRecords

    path = tmp_path / "outcrop.db"
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE schema_version (version INTEGER NOT NULL);
        INSERT INTO schema_version VALUES (2);
        CREATE TABLE custom_models (model_id VARCHAR(12) PRIMARY KEY, model_arn VARCHAR,
          model_name VARCHAR, job_id VARCHAR, base_model_id VARCHAR, status VARCHAR,
          failure_message TEXT, creation_time FLOAT, path TEXT);
        INSERT INTO custom_models VALUES ('m1', 'arn:m1', 'one', 'j1', 'base', 'Active',
          NULL, 1.0, '/x/model.gguf');
        """
    )
    con.commit()
    con.close()
    db = Database(tmp_path)
    model = CustomizationRecords(db).model("one")
    assert model.path == "/x/model.gguf" and model.bucket_key is None and model.sha256 is None
    ImportRecords(db)  # created fresh, with the columns
    con = sqlite3.connect(path)
    assert con.execute("SELECT version FROM schema_version").fetchone() == (3,)
    cols = {r[1] for r in con.execute("PRAGMA table_info(imported_models)")}
    assert {"bucket_key", "sha256"} <= cols
    con.close()
    Database(tmp_path)  # again: a no-op


def test_a_pushed_result_made_on_this_node_is_served_without_a_pull(tmp_path):
    """A worker that pushed the file itself (a Ray actor) on this node: checked once, then
    the store serves the maker's copy and never asks the bucket."""
    from outcrop.models.catalog import ModelCard
    from outcrop.models.store import ModelStore
    from outcrop.service.model_files import keep_model_file

    local = tmp_path / "customization" / "models" / "m5" / "model.gguf"
    local.parent.mkdir(parents=True)
    local.write_bytes(data(1000, seed=5))
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    key = "p/custom-models/m5/model.gguf"
    result = {"path": str(local), "bucket_key": key, "sha256": sha}
    kept = keep_model_file(result, None, tmp_path, "the actor")
    assert (kept.path, kept.bucket_key, kept.sha256) == (str(local), key, sha)
    assert verified(local, sha, rehash=False)
    card = ModelCard(
        model_id="m5", name="m5", provider_name="Custom", context_length=512,
        file_name="model.gguf", license="x", custom=True, sha256=sha, bucket_key=key,
        local_path=str(local),
    )  # fmt: skip
    assert ModelStore(tmp_path).ensure(card) == local  # no bucket configured: none needed


def test_a_worker_on_another_node_pushes_its_model_file_where_its_spec_says(bucket, tmp_path):
    """A Ray training actor gets the push target in the job's spec (JSON, no client) and
    reports the object's key and checksum with its result."""
    import json

    target = json.loads(json.dumps(publish_target(bucket, "custom-models", "m123")))
    made = tmp_path / "model.gguf"
    made.write_bytes(data(4096))
    result = push_result({"path": str(made), "training_loss": 0.5}, target)
    assert result["bucket_key"] == "team-a/custom-models/m123/model.gguf"
    assert result["sha256"] == hashlib.sha256(made.read_bytes()).hexdigest()
    assert result["training_loss"] == 0.5
    pulled = bucket.pull(result["bucket_key"], result["sha256"], tmp_path / "pulled.gguf")
    assert pulled.read_bytes() == made.read_bytes()
    assert push_result(result, target) == result  # once pushed, not again
    assert push_result({"path": str(made)}, None) == {"path": str(made)}  # no bucket
    assert publish_target(None, "custom-models", "m123") is None
