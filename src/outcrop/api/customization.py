"""The ``bedrock`` control plane on the wire: model customization jobs and custom models.

Parses the request, calls :class:`~outcrop.service.customization.CustomizationService`
(off the event loop: it reads data files and the database), shapes the response.
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response

from outcrop.api.app import Call
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.service.customization import CustomizationService

_JOB_QUERY = (
    "creationTimeAfter", "creationTimeBefore", "statusEquals", "nameContains",
    "maxResults", "nextToken", "sortBy", "sortOrder",
)  # fmt: skip
_MODEL_QUERY = (
    "creationTimeBefore", "creationTimeAfter", "nameContains", "baseModelArnEquals",
    "foundationModelArnEquals", "maxResults", "nextToken", "sortBy", "sortOrder", "isOwned",
    "modelStatus",
)  # fmt: skip


class CustomizationApi:
    def __init__(self, service: CustomizationService) -> None:
        self.service = service

    def register(self, router: Router) -> None:
        jobs = "/model-customization-jobs"
        router.add("POST", jobs, self.create_job, "CreateModelCustomizationJob")
        router.add("GET", jobs, self.list_jobs, "ListModelCustomizationJobs")
        router.add("GET", jobs + "/{jobIdentifier}", self.get_job, "GetModelCustomizationJob")
        router.add(
            "POST", jobs + "/{jobIdentifier}/stop", self.stop_job, "StopModelCustomizationJob"
        )
        router.add("GET", "/custom-models", self.list_models, "ListCustomModels")
        router.add("GET", "/custom-models/{modelIdentifier}", self.get_model, "GetCustomModel")
        router.add(
            "DELETE", "/custom-models/{modelIdentifier}", self.delete_model, "DeleteCustomModel"
        )

    async def create_job(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.service.create_job, call.json())
        return json_response(out, call.request_id, status=201)

    async def get_job(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.service.get_job, call.labels["jobIdentifier"])
        return json_response(out, call.request_id)

    async def list_jobs(self, call: Call) -> Response:
        query = {k: call.query(k) for k in _JOB_QUERY}
        return json_response(
            await asyncio.to_thread(self.service.list_jobs, query), call.request_id
        )

    async def stop_job(self, call: Call) -> Response:
        await asyncio.to_thread(self.service.stop_job, call.labels["jobIdentifier"])
        return json_response({}, call.request_id)

    async def get_model(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.service.get_model, call.labels["modelIdentifier"])
        return json_response(out, call.request_id)

    async def list_models(self, call: Call) -> Response:
        query = {k: call.query(k) for k in _MODEL_QUERY}
        out = await asyncio.to_thread(self.service.list_models, query)
        return json_response(out, call.request_id)

    async def delete_model(self, call: Call) -> Response:
        await asyncio.to_thread(self.service.delete_model, call.labels["modelIdentifier"])
        return json_response({}, call.request_id)
