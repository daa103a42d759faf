"""Training data and outputs through a real S3-compatible endpoint (moto's server on
127.0.0.1), as ``--s3-endpoint-url`` points outcrop at MinIO, Ceph or S3 itself."""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

from tests.conftest import S3_ENV, make_data_dir, moto_s3, start_server, stop_server
from tests.integration.test_customization import ROLE, SMOL, wait_for

pytestmark = pytest.mark.slow

pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3() as (url, client):
        tmp = tmp_path_factory.mktemp("s3")
        server = start_server(
            tmp, "--data-dir", str(make_data_dir(tmp)), "--s3-endpoint-url", url, env_extra=S3_ENV
        )
        yield client, server
        stop_server(server)


def test_job_reads_data_and_writes_metrics_through_the_endpoint(s3):
    client, server = s3
    client.create_bucket(Bucket="training")
    rows = [{"input": f"Pebble the purple armadillo is outcrop's mascot ({i})."} for i in range(8)]
    body = "".join(json.dumps(r) + "\n" for r in rows).encode()
    client.put_object(Bucket="training", Key="cpt/train.jsonl", Body=body)

    bedrock = server.client("bedrock")
    arn = bedrock.create_model_customization_job(
        jobName="s3-job", customModelName="s3-model", roleArn=ROLE,
        baseModelIdentifier=SMOL, customizationType="CONTINUED_PRE_TRAINING",
        trainingDataConfig={"s3Uri": "s3://training/cpt/train.jsonl"},
        outputDataConfig={"s3Uri": "s3://training/out/"},
        hyperParameters={"epochCount": "1", "batchSize": "8", "maxSequenceLength": "64"},
    )["jobArn"]  # fmt: skip
    job = wait_for(bedrock, arn, ("Completed", "Failed"), timeout=300)
    assert job["status"] == "Completed", job.get("failureMessage")

    job_id = arn.rsplit("/", 1)[1]
    key = f"out/model-customization-job-{job_id}/training_artifacts/step_wise_training_metrics.csv"
    csv = client.get_object(Bucket="training", Key=key)["Body"].read().decode()
    assert csv.splitlines()[0] == "step_number,epoch_number,training_loss"
    assert len(csv.splitlines()) == 2  # 8 examples, batch 8: one step

    for bad, fragment in (
        ({"trainingDataConfig": {"s3Uri": "s3://training/missing.jsonl"}}, "could not be read"),
        ({"outputDataConfig": {"s3Uri": "s3://no-such-bucket/out/"}}, "not writable"),
    ):
        args = {
            "jobName": "s3-bad", "customModelName": "s3-bad-model", "roleArn": ROLE,
            "baseModelIdentifier": SMOL, "customizationType": "CONTINUED_PRE_TRAINING",
            "trainingDataConfig": {"s3Uri": "s3://training/cpt/train.jsonl"},
            "outputDataConfig": {"s3Uri": "s3://training/out/"},
            **bad,
        }  # fmt: skip
        with pytest.raises(ClientError) as err:
            bedrock.create_model_customization_job(**args)
        assert err.value.response["Error"]["Code"] == "ValidationException"
        assert fragment in err.value.response["Error"]["Message"]
