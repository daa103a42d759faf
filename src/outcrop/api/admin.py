"""outcrop's own operational endpoints (not part of Bedrock's API): what is loaded."""

from __future__ import annotations

from dataclasses import asdict

from starlette.responses import Response

from outcrop.api.app import Call
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.models.manager import ModelManager


class AdminApi:
    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def register(self, router: Router) -> None:
        router.add("GET", "/outcrop/ps", self.ps, "OutcropListLoadedModels")

    async def ps(self, call: Call) -> Response:
        models = [
            {
                "modelId": item.card.model_id,
                "memoryBytes": item.memory_bytes,
                "loadedAt": item.loaded_at,
                "idleSeconds": round(item.idle_seconds(), 1),
                **asdict(item.engine.stats()),
            }
            for item in self.manager.loaded()
        ]
        return json_response(
            {"models": models, "loading": self.manager.loading(), "unloads": self.manager.unloads},
            call.request_id,
        )
