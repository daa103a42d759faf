"""The ``bedrock`` control plane on the wire: model discovery."""

from __future__ import annotations

from starlette.responses import Response

from outcrop.api.app import Call
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.errors import ResourceNotFoundError, ValidationError
from outcrop.models.catalog import Catalog, filter_summaries, to_foundation_model_summary
from outcrop.models.resolve import base_model_id

_MODALITIES = {"TEXT", "IMAGE", "EMBEDDING"}
_CUSTOMIZATIONS = {"FINE_TUNING", "CONTINUED_PRE_TRAINING", "DISTILLATION"}
_INFERENCE_TYPES = {"ON_DEMAND", "PROVISIONED"}


class ControlApi:
    def __init__(self, catalog: Catalog, region: str) -> None:
        self.catalog = catalog
        self.region = region

    def register(self, router: Router) -> None:
        router.add("GET", "/foundation-models", self.list_foundation_models, "ListFoundationModels")
        router.add(
            "GET",
            "/foundation-models/{modelIdentifier}",
            self.get_foundation_model,
            "GetFoundationModel",
        )

    def _foundation_cards(self):
        return [c for c in self.catalog.all() if not c.custom]

    async def list_foundation_models(self, call: Call) -> Response:
        filters = {
            "byProvider": call.query("byProvider"),
            "byCustomizationType": _enum(call, "byCustomizationType", _CUSTOMIZATIONS),
            "byOutputModality": _enum(call, "byOutputModality", _MODALITIES),
            "byInferenceType": _enum(call, "byInferenceType", _INFERENCE_TYPES),
        }
        cards = filter_summaries(self._foundation_cards(), **filters)
        summaries = [to_foundation_model_summary(c, self.region) for c in cards]
        return json_response({"modelSummaries": summaries}, call.request_id)

    async def get_foundation_model(self, call: Call) -> Response:
        ident = call.labels["modelIdentifier"]
        card = self.catalog.get(ident) or self.catalog.get(base_model_id(ident))
        if card is None or card.custom:
            raise ResourceNotFoundError(f"Could not find foundation model {ident}.")
        return json_response(
            {"modelDetails": to_foundation_model_summary(card, self.region)}, call.request_id
        )


def _enum(call: Call, name: str, allowed: set[str]) -> str | None:
    value = call.query(name)
    if value is not None and value not in allowed:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{name}' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{', '.join(sorted(allowed))}]"
        )
    return value
