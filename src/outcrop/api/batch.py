"""Batch inference (``bedrock``) and async invoke (``bedrock-runtime``) on the wire.

Handlers parse, call :class:`~outcrop.service.batch.BatchService` off the event loop (it
reads input listings and the database) and answer with botocore's status codes.
"""

from __future__ import annotations

import asyncio

from starlette.responses import Response

from outcrop.api.app import Call
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.service.batch import BatchService

_JOB_QUERY = (
    "submitTimeAfter", "submitTimeBefore", "statusEquals", "nameContains", "maxResults",
    "nextToken", "sortBy", "sortOrder",
)  # fmt: skip
_ASYNC_QUERY = (
    "submitTimeAfter", "submitTimeBefore", "statusEquals", "maxResults", "nextToken",
    "sortBy", "sortOrder",
)  # fmt: skip


class BatchApi:
    def __init__(self, service: BatchService) -> None:
        self.service = service

    def register(self, router: Router) -> None:
        job = "/model-invocation-job"
        router.add("POST", job, self.create_job, "CreateModelInvocationJob")
        router.add("GET", job + "/{jobIdentifier}", self.get_job, "GetModelInvocationJob")
        router.add("POST", job + "/{jobIdentifier}/stop", self.stop_job, "StopModelInvocationJob")
        router.add("GET", "/model-invocation-jobs", self.list_jobs, "ListModelInvocationJobs")
        router.add("POST", "/async-invoke", self.start_async, "StartAsyncInvoke")
        router.add("GET", "/async-invoke", self.list_async, "ListAsyncInvokes")
        router.add("GET", "/async-invoke/{invocationArn}", self.get_async, "GetAsyncInvoke")

    async def create_job(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.service.create_job, call.json())
        return json_response(out, call.request_id)

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

    async def start_async(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.service.start_async, call.json())
        return json_response(out, call.request_id)

    async def get_async(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.service.get_async, call.labels["invocationArn"])
        return json_response(out, call.request_id)

    async def list_async(self, call: Call) -> Response:
        query = {k: call.query(k) for k in _ASYNC_QUERY}
        return json_response(
            await asyncio.to_thread(self.service.list_async, query), call.request_id
        )
