"""Map the ``modelId`` a client sent to a local model card.

Accepted forms (see the reference, §1.1 "Model identifiers"):

* a bare ID: ``huggingface.smollm2-135m-instruct-v1:0``
* a geo-prefixed inference-profile ID: ``us.``/``eu.``/``apac.``/``global.``/``us-gov.``/
  ``jp.``/``au.``/``ca.`` + ID
* ARNs: ``arn:aws:bedrock:<region>:<account?>:foundation-model/<id>``,
  ``...:inference-profile/<geo.id>``, ``...:custom-model/...`` (and the other model ARN types
  for registered cards, looked up by ARN or name)
* aliases: ``(glob, model id)`` pairs, matched with :func:`fnmatch.fnmatchcase` against the ID
  as sent and against the ID with its geo prefix / ARN stripped; the first match wins.

Exact catalog IDs win over aliases, so a catch-all ``*`` alias never hides a real model.
The ID as sent is kept in :attr:`ResolvedModel.requested_id`: the request/response body
dialect follows what the client asked for (``anthropic.claude-...`` aliased to SmolLM2 still
speaks the Anthropic Messages body).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass

from outcrop.errors import ResourceNotFoundError, ValidationError
from outcrop.models.catalog import Catalog, ModelCard

GEO_PREFIXES: tuple[str, ...] = ("us-gov", "us", "eu", "apac", "global", "jp", "au", "ca")

INVALID_MODEL_MESSAGE = "The provided model identifier is invalid."
MAX_MODEL_ID_LENGTH = 2048

_ARN_RE = re.compile(
    r"^arn:(?P<partition>aws[a-z-]*):(?P<service>[a-z0-9-]+):(?P<region>[a-z0-9-]*):"
    r"(?P<account>\d{12}|):(?P<resource>[A-Za-z0-9_.:/+=,@-]+)$"
)

# ARN resource types that name a model directly by ID (after stripping any geo prefix).
_ID_RESOURCE_TYPES = ("foundation-model", "inference-profile")
# ARN resource types that can only refer to a card registered at runtime.
_REGISTERED_RESOURCE_TYPES = (
    "custom-model",
    "imported-model",
    "provisioned-model",
    "custom-model-deployment",
    "application-inference-profile",
)


@dataclass(frozen=True)
class ParsedArn:
    partition: str
    service: str
    region: str
    account: str
    resource_type: str
    resource_id: str


def parse_arn(text: str) -> ParsedArn | None:
    m = _ARN_RE.match(text)
    if not m:
        return None
    resource = m["resource"]
    rtype, sep, rid = resource.partition("/")
    if not sep or not rid:
        return None
    return ParsedArn(m["partition"], m["service"], m["region"], m["account"], rtype, rid)


def strip_geo_prefix(model_id: str) -> str:
    """``us.anthropic.claude-...`` -> ``anthropic.claude-...``; anything else unchanged."""
    head, sep, rest = model_id.partition(".")
    if sep and head in GEO_PREFIXES and "." in rest:
        return rest
    return model_id


def base_model_id(model_id: str) -> str:
    """The ID with any ARN wrapper and geo prefix removed (what names the model family).

    Lenient where resolution is strict: an ARN that :func:`parse_arn` rejects (a short
    account, say) still names its family by its resource, so the body dialect follows it.
    """
    model_id = model_id.strip()
    arn = parse_arn(model_id)
    if arn is not None:
        rtype, rid = arn.resource_type, arn.resource_id
    elif model_id.startswith("arn:") and model_id.count(":") >= 5:
        rtype, _, rid = model_id.split(":", 5)[5].partition("/")
        if not rid:
            return model_id
    else:
        return strip_geo_prefix(model_id)
    return strip_geo_prefix(rid) if rtype in _ID_RESOURCE_TYPES else rid


@dataclass(frozen=True)
class ResolvedModel:
    requested_id: str
    """Exactly what the client sent (drives the body dialect)."""
    card: ModelCard
    alias: str | None = None
    """The alias pattern that matched, if resolution went through an alias."""

    @property
    def model_id(self) -> str:
        return self.card.model_id

    @property
    def base_id(self) -> str:
        """``requested_id`` without ARN wrapper / geo prefix, e.g. for dialect selection."""
        return base_model_id(self.requested_id)

    @property
    def dialect_id(self) -> str:
        """The ID whose family picks the InvokeModel body: the ID as sent, except for an
        imported model, whose body follows its architecture as on Bedrock (the Llama body
        for Llama, the Mistral body for Mistral, the OpenAI-style body otherwise)."""
        if self.card.imported:
            family = self.card.invoke_family or "imported"
            return f"{family}.{self.card.model_id}"
        return self.requested_id


class ModelResolver:
    def __init__(
        self,
        catalog: Catalog,
        aliases: list[tuple[str, str]] | None = None,
        region: str = "us-east-1",
        account_id: str = "000000000000",
    ) -> None:
        self.catalog = catalog
        self.region = region
        self.account_id = account_id
        self.aliases: list[tuple[str, str]] = []
        self.fallbacks: list[Callable[[str], ModelCard | None]] = []
        """Asked, in order, for a runtime-registered model the catalog does not hold yet
        (an import finished by another process on the same data dir, say)."""
        for pattern, target in aliases or []:
            if not pattern:
                raise ValueError("alias pattern must not be empty")
            if catalog.get(target) is None:
                known = ", ".join(sorted(c.model_id for c in catalog.all()))
                raise ValueError(
                    f"alias {pattern!r} points at unknown model {target!r}; known models: {known}"
                )
            self.aliases.append((pattern, target))

    # ------------------------------------------------------------------ helpers

    def custom_model_arn(self, card: ModelCard) -> str:
        return card.arn or (
            f"arn:aws:bedrock:{self.region}:{self.account_id}:custom-model/{card.model_id}"
        )

    def _alias(self, *candidates: str) -> tuple[str, ModelCard] | None:
        for pattern, target in self.aliases:
            if any(fnmatch.fnmatchcase(c, pattern) for c in candidates):
                card = self.catalog.get(target)
                if card is not None:
                    return pattern, card
        return None

    def _registered(self, text: str, arn: ParsedArn | None) -> ModelCard | None:
        card = self.catalog.find_custom(text)
        if card is not None:
            return card
        if arn is None:
            return self._from_fallbacks(text)
        rid = arn.resource_id
        # custom-model/<base-model-id>/<suffix>, or custom-model/<name>
        for candidate in (rid, rid.rsplit("/", 1)[-1]):
            card = self.catalog.find_custom(candidate)
            if card is not None:
                return card
        for card in self.catalog.all():
            if card.custom and self.custom_model_arn(card) == text:
                return card
        return self._from_fallbacks(text)

    def _from_fallbacks(self, text: str) -> ModelCard | None:
        for fallback in self.fallbacks:
            card = fallback(text)
            if card is not None:
                return card
        return None

    # ------------------------------------------------------------------ resolve

    def resolve(self, model_id_as_sent: str) -> ResolvedModel:
        sent = model_id_as_sent
        if not isinstance(sent, str) or not sent or len(sent) > MAX_MODEL_ID_LENGTH:
            raise ValidationError(INVALID_MODEL_MESSAGE)

        if sent.startswith("arn:"):
            return self._resolve_arn(sent)

        card = self.catalog.get(sent)
        if card is not None:
            return ResolvedModel(sent, card)
        stripped = strip_geo_prefix(sent)
        if stripped != sent:
            card = self.catalog.get(stripped)
            if card is not None:
                return ResolvedModel(sent, card)
        card = self._registered(sent, None)
        if card is not None:
            return ResolvedModel(sent, card)
        hit = self._alias(sent, stripped)
        if hit is not None:
            return ResolvedModel(sent, hit[1], alias=hit[0])
        raise ValidationError(INVALID_MODEL_MESSAGE)

    def _resolve_arn(self, sent: str) -> ResolvedModel:
        arn = parse_arn(sent)
        if arn is None:
            raise ValidationError(INVALID_MODEL_MESSAGE)
        stripped = sent
        if arn.service == "bedrock" and arn.resource_type in _ID_RESOURCE_TYPES:
            stripped = strip_geo_prefix(arn.resource_id)
            card = self.catalog.get(stripped)
            if card is not None:
                return ResolvedModel(sent, card)
        elif arn.service == "bedrock" and arn.resource_type in _REGISTERED_RESOURCE_TYPES:
            card = self._registered(sent, arn)
            if card is not None:
                return ResolvedModel(sent, card)
            stripped = arn.resource_id
        hit = self._alias(sent, stripped)
        if hit is not None:
            return ResolvedModel(sent, hit[1], alias=hit[0])
        if arn.service == "bedrock" and arn.resource_type in (
            _ID_RESOURCE_TYPES + _REGISTERED_RESOURCE_TYPES
        ):
            raise ResourceNotFoundError(f"The specified model {sent!r} could not be found.")
        raise ResourceNotFoundError(f"The resource {sent!r} could not be found.")
