"""bedrock-agent's ingestion jobs: Start/Get/List/StopIngestionJob.

A job is a record (STARTING) plus a background task (:class:`~outcrop.knowledge.runner.
IngestionRunner`, owned by :class:`~outcrop.service.knowledge.KnowledgeService`) that runs
:func:`outcrop.knowledge.ingest.sync`. One job at a time per data source (a second start
is a ConflictException); CUSTOM data sources take documents directly instead.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from outcrop.errors import ConflictError, ResourceNotFoundError, ValidationError
from outcrop.knowledge import ingest
from outcrop.knowledge.records import IngestionJobRecord
from outcrop.knowledge.runner import TERMINAL
from outcrop.service.control_fields import client_token, iso, length, new_id, page, request
from outcrop.service.knowledge import KnowledgeService

JOB_STATUSES = ("STARTING", "IN_PROGRESS", "COMPLETE", "FAILED", "STOPPING", "STOPPED")
_STAT_NAMES = {
    "scanned": "numberOfDocumentsScanned",
    "metadata_scanned": "numberOfMetadataDocumentsScanned",
    "new": "numberOfNewDocumentsIndexed",
    "modified": "numberOfModifiedDocumentsIndexed",
    "deleted": "numberOfDocumentsDeleted",
    "failed": "numberOfDocumentsFailed",
}


class IngestionJobs:
    def __init__(self, knowledge: KnowledgeService) -> None:
        self.knowledge = knowledge
        self.db = knowledge.db

    async def start_ingestion_job(
        self, kb_id: str, ds_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        job = await asyncio.to_thread(self._start_ingestion_job, kb_id, ds_id, body)
        if job.status == "STARTING" and not self.knowledge.runner.running(job.job_id):
            self.knowledge.runner.submit(job.job_id)
        return {"ingestionJob": self.job_dict(job)}

    def _start_ingestion_job(
        self, kb_id: str, ds_id: str, body: dict[str, Any]
    ) -> IngestionJobRecord:
        ds = self.knowledge.data_source(kb_id, ds_id)
        self.knowledge.active_knowledge_base(kb_id)
        o = request(body)
        description = length(o, "description", 1, 200)
        token = client_token(o)
        jobs = self.db.jobs(ds_id=ds_id)
        for job in jobs:
            if token is not None and job.client_token == token:
                return job
        if ds.source_type != "S3":
            raise ValidationError(
                f"Data source {ds_id} is {ds.source_type}: add its documents with "
                "IngestKnowledgeBaseDocuments instead of an ingestion job."
            )
        if ds.status != "AVAILABLE":
            raise ConflictError(f"Data source {ds_id} is {ds.status}.")
        for job in jobs:
            if job.status not in TERMINAL:
                raise ConflictError(
                    f"Ingestion job {job.job_id} is already {job.status} on data source {ds_id}."
                )
        now = time.time()
        record = IngestionJobRecord(
            job_id=new_id(), kb_id=kb_id, ds_id=ds_id, description=description,
            status="STARTING", statistics=ingest.Statistics().to_dict(), failure_reasons=[],
            progress={}, client_token=token, started_at=now, updated_at=now,
        )  # fmt: skip
        self.db.add(record)
        return record

    def _job(self, kb_id: str, ds_id: str, job_id: str) -> IngestionJobRecord:
        self.knowledge.data_source(kb_id, ds_id)
        job = self.db.get(IngestionJobRecord, job_id)
        if job is None or job.ds_id != ds_id:
            raise ResourceNotFoundError(f"Ingestion job {job_id} does not exist.")
        return job

    def job_dict(self, job: IngestionJobRecord, summary: bool = False) -> dict[str, Any]:
        stats = ingest.Statistics.from_dict(job.statistics).to_dict()
        out: dict[str, Any] = {
            "knowledgeBaseId": job.kb_id,
            "dataSourceId": job.ds_id,
            "ingestionJobId": job.job_id,
            "status": job.status,
            "statistics": {_STAT_NAMES[k]: v for k, v in stats.items()},
            "startedAt": iso(job.started_at),
            "updatedAt": iso(job.updated_at),
        }
        if job.description:
            out["description"] = job.description
        if job.failure_reasons and not summary:
            out["failureReasons"] = [r[:2048] for r in job.failure_reasons]
        return out

    def get_ingestion_job(self, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
        return {"ingestionJob": self.job_dict(self._job(kb_id, ds_id, job_id))}

    def list_ingestion_jobs(self, kb_id: str, ds_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.knowledge.data_source(kb_id, ds_id)
        o = request(body)
        jobs = self.db.jobs(ds_id=ds_id)
        filters = o.objs("filters")
        if len(filters) > 1:
            raise o.fail("filters", "Member must have length less than or equal to 1")
        for f in filters:
            f.string("attribute", required=True, choices=("STATUS",))
            f.string("operator", required=True, choices=("EQ",))
            values = f.array("values", required=True)
            jobs = [j for j in jobs if j.status in values]
        sort = o.obj("sortBy")
        attribute, order = "STARTED_AT", "DESCENDING"
        if sort is not None:
            attribute = (
                sort.string("attribute", required=True, choices=("STATUS", "STARTED_AT"))
                or attribute
            )
            order = (
                sort.string("order", required=True, choices=("ASCENDING", "DESCENDING")) or order
            )
        key = (lambda j: j.status) if attribute == "STATUS" else (lambda j: j.started_at)
        jobs.sort(key=key, reverse=order == "DESCENDING")
        items, token = page(jobs, o)
        out: dict[str, Any] = {"ingestionJobSummaries": [self.job_dict(j, True) for j in items]}
        if token:
            out["nextToken"] = token
        return out

    def stop_ingestion_job(self, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
        job = self._job(kb_id, ds_id, job_id)
        if job.status in TERMINAL:
            raise ConflictError(f"Ingestion job {job_id} is {job.status}; it cannot be stopped.")
        self.knowledge.runner.request_stop(job_id)
        return {"ingestionJob": self.job_dict(self._job(kb_id, ds_id, job_id))}
