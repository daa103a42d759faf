"""The ``bedrock`` control plane on the wire: Custom Model Import (model import jobs and
imported models). Parses, calls :class:`~outcrop.service.imports.ImportService` off the
event loop (it touches the database and the disk), shapes the response.
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response

from outcrop.api.app import Call
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.service.imports import ImportService

_JOB_QUERY = (
    "creationTimeAfter", "creationTimeBefore", "statusEquals", "nameContains",
    "maxResults", "nextToken", "sortBy", "sortOrder",
)  # fmt: skip
_MODEL_QUERY = (
    "creationTimeBefore", "creationTimeAfter", "nameContains", "maxResults", "nextToken",
    "sortBy", "sortOrder",
)  # fmt: skip


class ImportApi:
    def __init__(self, service: ImportService) -> None:
        self.service = service

    def register(self, router: Router) -> None:
        jobs = "/model-import-jobs"
        models = "/imported-models"
        router.add("POST", jobs, self.create_model_import_job, "CreateModelImportJob")
        router.add("GET", jobs, self.list_model_import_jobs, "ListModelImportJobs")
        router.add("GET", jobs + "/{jobIdentifier}", self.get_model_import_job, "GetModelImportJob")
        router.add("GET", models, self.list_imported_models, "ListImportedModels")
        router.add(
            "GET", models + "/{modelIdentifier}", self.get_imported_model, "GetImportedModel"
        )
        router.add(
            "DELETE", models + "/{modelIdentifier}", self.delete_imported_model,
            "DeleteImportedModel",
        )  # fmt: skip

    async def create_model_import_job(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.service.create_model_import_job, call.json())
        return json_response(out, call.request_id, status=201)

    async def get_model_import_job(self, call: Call) -> Response:
        job = call.labels["jobIdentifier"]
        out = await asyncio.to_thread(self.service.get_model_import_job, job)
        return json_response(out, call.request_id)

    async def list_model_import_jobs(self, call: Call) -> Response:
        query = {k: call.query(k) for k in _JOB_QUERY}
        out = await asyncio.to_thread(self.service.list_model_import_jobs, query)
        return json_response(out, call.request_id)

    async def get_imported_model(self, call: Call) -> Response:
        model = call.labels["modelIdentifier"]
        out = await asyncio.to_thread(self.service.get_imported_model, model)
        return json_response(out, call.request_id)

    async def list_imported_models(self, call: Call) -> Response:
        query = {k: call.query(k) for k in _MODEL_QUERY}
        out = await asyncio.to_thread(self.service.list_imported_models, query)
        return json_response(out, call.request_id)

    async def delete_imported_model(self, call: Call) -> Response:
        model = call.labels["modelIdentifier"]
        await asyncio.to_thread(self.service.delete_imported_model, model)
        return json_response({}, call.request_id)
