from __future__ import annotations

import pytest

from outcrop.errors import ResourceNotFoundError, ValidationError
from outcrop.models.catalog import Catalog, ModelCard
from outcrop.models.resolve import (
    GEO_PREFIXES,
    INVALID_MODEL_MESSAGE,
    ModelResolver,
    ResolvedModel,
    base_model_id,
    parse_arn,
    strip_geo_prefix,
)

SMOL = "huggingface.smollm2-135m-instruct-v1:0"
GEMMA = "google.gemma-3-270m-v1:0"
MINILM = "sentence-transformers.all-minilm-l6-v2-v1:0"
ACCT = "123456789012"


@pytest.fixture
def catalog():
    return Catalog()


@pytest.fixture
def resolver(catalog):
    return ModelResolver(catalog, [], "us-east-1", ACCT)


def test_bare_id(resolver):
    r = resolver.resolve(SMOL)
    assert r == ResolvedModel(SMOL, resolver.catalog.get(SMOL))
    assert r.requested_id == SMOL and r.model_id == SMOL and r.alias is None


@pytest.mark.parametrize("geo", GEO_PREFIXES)
def test_geo_prefixed(resolver, geo):
    sent = f"{geo}.{GEMMA}"
    r = resolver.resolve(sent)
    assert r.card.model_id == GEMMA
    assert r.requested_id == sent
    assert r.base_id == GEMMA


@pytest.mark.parametrize(
    "arn,expected",
    [
        (f"arn:aws:bedrock:us-east-1::foundation-model/{SMOL}", SMOL),
        (f"arn:aws:bedrock:eu-west-1::foundation-model/{MINILM}", MINILM),
        (f"arn:aws:bedrock:us-west-2:{ACCT}:foundation-model/{GEMMA}", GEMMA),
        (f"arn:aws:bedrock:us-east-1:{ACCT}:inference-profile/us.{SMOL}", SMOL),
        (f"arn:aws:bedrock:eu-central-1:{ACCT}:inference-profile/eu.{GEMMA}", GEMMA),
        (f"arn:aws:bedrock:us-east-1:{ACCT}:inference-profile/global.{SMOL}", SMOL),
        (f"arn:aws-us-gov:bedrock:us-gov-west-1:{ACCT}:inference-profile/us-gov.{SMOL}", SMOL),
    ],
)
def test_arns(resolver, arn, expected):
    r = resolver.resolve(arn)
    assert r.card.model_id == expected
    assert r.requested_id == arn
    assert r.base_id == expected


def _custom_card(**kw):
    base = dict(
        model_id="custom.my-smol",
        name="my-smol",
        provider_name="Custom",
        context_length=8192,
        file_name="model.gguf",
        license="Apache-2.0",
        custom=True,
        local_path="/nonexistent/model.gguf",
    )
    base.update(kw)
    return ModelCard(**base)


def test_custom_model_arn(catalog, resolver):
    arn = f"arn:aws:bedrock:us-east-1:{ACCT}:custom-model/{SMOL}/abcdefghijkl"
    card = catalog.register(_custom_card(arn=arn))
    assert resolver.resolve(arn).card is card
    # by name, in an ARN of another shape
    assert resolver.resolve(f"arn:aws:bedrock:us-east-1:{ACCT}:custom-model/my-smol").card is card
    # by name or id, bare
    assert resolver.resolve("my-smol").card is card
    assert resolver.resolve("custom.my-smol").card is card
    # an ARN the resolver would build for it
    assert resolver.resolve(resolver.custom_model_arn(card)).card is card


def test_custom_model_arn_without_explicit_arn(catalog, resolver):
    card = catalog.register(_custom_card())
    arn = f"arn:aws:bedrock:us-east-1:{ACCT}:custom-model/custom.my-smol"
    assert resolver.custom_model_arn(card) == arn
    assert resolver.resolve(arn).card is card


def test_unknown_bare_id_is_validation_error(resolver):
    with pytest.raises(ValidationError) as ei:
        resolver.resolve("anthropic.claude-3-haiku-20240307-v1:0")
    assert ei.value.message == INVALID_MODEL_MESSAGE
    assert ei.value.status == 400 and ei.value.shape == "ValidationException"


@pytest.mark.parametrize("bad", ["", "x" * 2049, "arn:aws:bedrock", "arn:nope", "us."])
def test_malformed_is_validation_error(resolver, bad):
    with pytest.raises(ValidationError):
        resolver.resolve(bad)


@pytest.mark.parametrize(
    "arn",
    [
        "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2",
        f"arn:aws:bedrock:us-east-1:{ACCT}:inference-profile/us.anthropic.claude-v2",
        f"arn:aws:bedrock:us-east-1:{ACCT}:custom-model/anthropic.claude-v2/abcdefghijkl",
        f"arn:aws:bedrock:us-east-1:{ACCT}:provisioned-model/abcdefghijkl",
        f"arn:aws:bedrock:us-east-1:{ACCT}:application-inference-profile/abcdefghijkl",
    ],
)
def test_wellformed_arn_pointing_nowhere_is_not_found(resolver, arn):
    with pytest.raises(ResourceNotFoundError) as ei:
        resolver.resolve(arn)
    assert ei.value.status == 404


def test_alias_globs_and_dialect_follows_sent_id(catalog):
    r = ModelResolver(
        catalog,
        [("anthropic.claude-*", SMOL), ("*embed*", MINILM), ("meta.llama3*", GEMMA)],
    )
    sent = "us.anthropic.claude-3-5-sonnet-20241022-v2:0"
    res = r.resolve(sent)
    assert res.card.model_id == SMOL
    assert res.alias == "anthropic.claude-*"  # matched against the stripped id
    assert res.requested_id == sent  # dialect selection sees what the client sent
    assert res.base_id == "anthropic.claude-3-5-sonnet-20241022-v2:0"
    assert res.base_id.split(".")[0] == "anthropic"

    assert r.resolve("amazon.titan-embed-text-v2:0").card.model_id == MINILM
    assert r.resolve("cohere.embed-english-v3").requested_id == "cohere.embed-english-v3"
    assert r.resolve("meta.llama3-8b-instruct-v1:0").card.model_id == GEMMA

    arn = "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0"
    res = r.resolve(arn)
    assert res.card.model_id == SMOL and res.requested_id == arn
    assert res.base_id == "anthropic.claude-3-haiku-20240307-v1:0"

    arn = f"arn:aws:bedrock:eu-west-1:{ACCT}:inference-profile/eu.anthropic.claude-v2"
    assert r.resolve(arn).card.model_id == SMOL


def test_alias_matches_as_sent_form_too(catalog):
    r = ModelResolver(catalog, [("us.*", GEMMA)])
    assert r.resolve("us.anthropic.claude-v2").card.model_id == GEMMA
    with pytest.raises(ValidationError):
        r.resolve("anthropic.claude-v2")


def test_first_matching_alias_wins(catalog):
    r = ModelResolver(
        catalog, [("anthropic.*", GEMMA), ("anthropic.claude-*", SMOL), ("*", MINILM)]
    )
    assert r.resolve("anthropic.claude-v2").card.model_id == GEMMA
    assert r.resolve("mistral.mistral-7b-instruct-v0:2").card.model_id == MINILM


def test_exact_ids_win_over_catch_all_alias(catalog):
    r = ModelResolver(catalog, [("*", MINILM)])
    assert r.resolve(SMOL).card.model_id == SMOL
    assert r.resolve(f"us.{GEMMA}").card.model_id == GEMMA
    assert r.resolve("anything.else").alias == "*"


def test_alias_is_case_sensitive(catalog):
    r = ModelResolver(catalog, [("anthropic.*", SMOL)])
    with pytest.raises(ValidationError):
        r.resolve("Anthropic.claude-v2")


def test_alias_target_must_exist(catalog):
    with pytest.raises(ValueError, match="unknown model"):
        ModelResolver(catalog, [("anthropic.*", "anthropic.claude-v2")])
    with pytest.raises(ValueError):
        ModelResolver(catalog, [("", SMOL)])


def test_helpers():
    assert strip_geo_prefix(f"apac.{SMOL}") == SMOL
    assert strip_geo_prefix(SMOL) == SMOL
    assert strip_geo_prefix("us.x") == "us.x"  # no provider.model left: not a geo prefix
    a = parse_arn(f"arn:aws:bedrock:us-east-1:{ACCT}:inference-profile/us.{SMOL}")
    assert (a.service, a.region, a.account, a.resource_type) == (
        "bedrock",
        "us-east-1",
        ACCT,
        "inference-profile",
    )
    assert a.resource_id == f"us.{SMOL}"
    assert parse_arn("arn:aws:bedrock:us-east-1::foundation-model") is None
    assert base_model_id(f"arn:aws:bedrock:us-east-1::foundation-model/{SMOL}") == SMOL
    assert base_model_id(f"jp.{SMOL}") == SMOL
    # malformed ARNs still name their family (short account), or stay as they are
    assert base_model_id(f"arn:aws:bedrock:us-east-1:123:inference-profile/eu.{SMOL}") == SMOL
    assert base_model_id("arn:aws:bedrock:us-east-1:1:foundation-model:x") == (
        "arn:aws:bedrock:us-east-1:1:foundation-model:x"
    )
