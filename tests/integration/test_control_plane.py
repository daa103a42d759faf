"""The bedrock control plane (model discovery) through boto3."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from tests.conftest import GEMMA, SMOL

pytestmark = pytest.mark.slow


def test_list_foundation_models(bedrock):
    models = {m["modelId"]: m for m in bedrock.list_foundation_models()["modelSummaries"]}
    assert {SMOL, GEMMA, "sentence-transformers.all-minilm-l6-v2-v1:0"} <= set(models)
    smol = models[SMOL]
    assert smol["inputModalities"] == ["TEXT"] and smol["outputModalities"] == ["TEXT"]
    assert smol["responseStreamingSupported"] is True
    assert smol["inferenceTypesSupported"] == ["ON_DEMAND"]
    assert smol["modelLifecycle"]["status"] == "ACTIVE"
    assert smol["modelArn"] == f"arn:aws:bedrock:us-east-1::foundation-model/{SMOL}"


def test_list_foundation_models_filters(bedrock):
    emb = bedrock.list_foundation_models(byOutputModality="EMBEDDING")["modelSummaries"]
    assert [m["modelId"] for m in emb] == ["sentence-transformers.all-minilm-l6-v2-v1:0"]
    google = bedrock.list_foundation_models(byProvider="google")["modelSummaries"]
    assert [m["modelId"] for m in google] == [GEMMA]
    assert bedrock.list_foundation_models(byInferenceType="PROVISIONED")["modelSummaries"] == []


def test_get_foundation_model(bedrock):
    details = bedrock.get_foundation_model(modelIdentifier=GEMMA)["modelDetails"]
    assert details["providerName"] == "Google"
    with pytest.raises(ClientError) as err:
        bedrock.get_foundation_model(modelIdentifier="acme.nothing-v1:0")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
