"""bedrock-agent on the wire: knowledge bases, data sources, ingestion jobs, documents.

Parse, call :mod:`outcrop.service.knowledge` / :mod:`outcrop.service.kb_documents` (DB
work off the event loop), answer with botocore's responseCode. Errors take their HTTP
status from bedrock-agent's model (:data:`AGENT_STATUS`), not from the shared class.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from outcrop.api.app import Call
from outcrop.api.responses import json_response
from outcrop.api.routing import Router
from outcrop.errors import OutcropError, with_service_status
from outcrop.service.kb_documents import KnowledgeDocuments
from outcrop.service.kb_jobs import IngestionJobs
from outcrop.service.knowledge import KnowledgeService

#: botocore bedrock-agent: ConflictException 409, ServiceQuotaExceededException 402.
AGENT_STATUS = {"ConflictException": 409, "ServiceQuotaExceededException": 402}

KB = "/knowledgebases/{knowledgeBaseId}"
DS = KB + "/datasources/{dataSourceId}"
JOBS = DS + "/ingestionjobs"
DOCS = DS + "/documents"


def agent_errors(
    handler: Callable[[Any, Call], Awaitable[Response]],
) -> Callable[[Any, Call], Awaitable[Response]]:
    @functools.wraps(handler)
    async def wrapped(self: Any, call: Call) -> Response:
        try:
            return await handler(self, call)
        except OutcropError as exc:
            raise with_service_status(exc, AGENT_STATUS) from None

    return wrapped


class AgentApi:
    def __init__(
        self, knowledge: KnowledgeService, jobs: IngestionJobs, documents: KnowledgeDocuments
    ) -> None:
        self.knowledge = knowledge
        self.jobs = jobs
        self.documents = documents

    def register(self, router: Router) -> None:
        add = router.add
        add("PUT", "/knowledgebases/", self.create_knowledge_base, "CreateKnowledgeBase")
        add("POST", "/knowledgebases/", self.list_knowledge_bases, "ListKnowledgeBases")
        add("GET", KB, self.get_knowledge_base, "GetKnowledgeBase")
        add("PUT", KB, self.update_knowledge_base, "UpdateKnowledgeBase")
        add("DELETE", KB, self.delete_knowledge_base, "DeleteKnowledgeBase")
        add("PUT", KB + "/datasources/", self.create_data_source, "CreateDataSource")
        add("POST", KB + "/datasources/", self.list_data_sources, "ListDataSources")
        add("GET", DS, self.get_data_source, "GetDataSource")
        add("PUT", DS, self.update_data_source, "UpdateDataSource")
        add("DELETE", DS, self.delete_data_source, "DeleteDataSource")
        add("PUT", JOBS + "/", self.start_ingestion_job, "StartIngestionJob")
        add("POST", JOBS + "/", self.list_ingestion_jobs, "ListIngestionJobs")
        add("GET", JOBS + "/{ingestionJobId}", self.get_ingestion_job, "GetIngestionJob")
        add("POST", JOBS + "/{ingestionJobId}/stop", self.stop_ingestion_job, "StopIngestionJob")
        add("PUT", DOCS, self.ingest_knowledge_base_documents, "IngestKnowledgeBaseDocuments")
        add("POST", DOCS, self.list_knowledge_base_documents, "ListKnowledgeBaseDocuments")
        add(
            "POST", DOCS + "/deleteDocuments", self.delete_knowledge_base_documents,
            "DeleteKnowledgeBaseDocuments",
        )  # fmt: skip
        add(
            "POST", DOCS + "/getDocuments", self.get_knowledge_base_documents,
            "GetKnowledgeBaseDocuments",
        )  # fmt: skip

    # ------------------------------------------------------------------ knowledge bases

    @agent_errors
    async def create_knowledge_base(self, call: Call) -> Response:
        out = await self.knowledge.create_knowledge_base(call.json())
        return json_response(out, call.request_id, status=202)

    @agent_errors
    async def list_knowledge_bases(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.knowledge.list_knowledge_bases, call.json())
        return json_response(out, call.request_id)

    @agent_errors
    async def get_knowledge_base(self, call: Call) -> Response:
        kb_id = call.labels["knowledgeBaseId"]
        out = await asyncio.to_thread(self.knowledge.get_knowledge_base, kb_id)
        return json_response(out, call.request_id)

    @agent_errors
    async def update_knowledge_base(self, call: Call) -> Response:
        kb_id = call.labels["knowledgeBaseId"]
        out = await asyncio.to_thread(self.knowledge.update_knowledge_base, kb_id, call.json())
        return json_response(out, call.request_id, status=202)

    @agent_errors
    async def delete_knowledge_base(self, call: Call) -> Response:
        out = await self.knowledge.delete_knowledge_base(call.labels["knowledgeBaseId"])
        return json_response(out, call.request_id, status=202)

    # ------------------------------------------------------------------ data sources

    @agent_errors
    async def create_data_source(self, call: Call) -> Response:
        kb_id = call.labels["knowledgeBaseId"]
        out = await asyncio.to_thread(self.knowledge.create_data_source, kb_id, call.json())
        return json_response(out, call.request_id)

    @agent_errors
    async def list_data_sources(self, call: Call) -> Response:
        kb_id = call.labels["knowledgeBaseId"]
        out = await asyncio.to_thread(self.knowledge.list_data_sources, kb_id, call.json())
        return json_response(out, call.request_id)

    @agent_errors
    async def get_data_source(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.knowledge.get_data_source, *self._ds(call))
        return json_response(out, call.request_id)

    @agent_errors
    async def update_data_source(self, call: Call) -> Response:
        out = await asyncio.to_thread(
            self.knowledge.update_data_source, *self._ds(call), call.json()
        )
        return json_response(out, call.request_id)

    @agent_errors
    async def delete_data_source(self, call: Call) -> Response:
        out = await self.knowledge.delete_data_source(*self._ds(call))
        return json_response(out, call.request_id, status=202)

    @staticmethod
    def _ds(call: Call) -> tuple[str, str]:
        return call.labels["knowledgeBaseId"], call.labels["dataSourceId"]

    # ------------------------------------------------------------------ ingestion jobs

    @agent_errors
    async def start_ingestion_job(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.jobs.start_ingestion_job, *self._ds(call), call.json())
        return json_response(out, call.request_id, status=202)

    @agent_errors
    async def list_ingestion_jobs(self, call: Call) -> Response:
        out = await asyncio.to_thread(self.jobs.list_ingestion_jobs, *self._ds(call), call.json())
        return json_response(out, call.request_id)

    @agent_errors
    async def get_ingestion_job(self, call: Call) -> Response:
        out = await asyncio.to_thread(
            self.jobs.get_ingestion_job, *self._ds(call), call.labels["ingestionJobId"]
        )
        return json_response(out, call.request_id)

    @agent_errors
    async def stop_ingestion_job(self, call: Call) -> Response:
        out = await asyncio.to_thread(
            self.jobs.stop_ingestion_job, *self._ds(call), call.labels["ingestionJobId"]
        )
        return json_response(out, call.request_id, status=202)

    # ------------------------------------------------------------------ documents

    @agent_errors
    async def ingest_knowledge_base_documents(self, call: Call) -> Response:
        out = await self.documents.ingest_knowledge_base_documents(*self._ds(call), call.json())
        return json_response(out, call.request_id, status=202)

    @agent_errors
    async def delete_knowledge_base_documents(self, call: Call) -> Response:
        out = await self.documents.delete_knowledge_base_documents(*self._ds(call), call.json())
        return json_response(out, call.request_id, status=202)

    @agent_errors
    async def list_knowledge_base_documents(self, call: Call) -> Response:
        out = await asyncio.to_thread(
            self.documents.list_knowledge_base_documents, *self._ds(call), call.json()
        )
        return json_response(out, call.request_id)

    @agent_errors
    async def get_knowledge_base_documents(self, call: Call) -> Response:
        out = await asyncio.to_thread(
            self.documents.get_knowledge_base_documents, *self._ds(call), call.json()
        )
        return json_response(out, call.request_id)
