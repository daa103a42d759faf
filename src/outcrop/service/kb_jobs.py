"""bedrock-agent's ingestion jobs: Start/Get/List/StopIngestionJob, and the job kind
that runs them.

A job is a row in the shared ``jobs`` table (lifecycle, stop flag, attempts, progress;
:mod:`outcrop.jobs`) plus its :class:`~outcrop.knowledge.records.IngestionJobRecord`
(bedrock-agent's fields), written in one transaction. The ``kb-ingestion`` kind is
``inline``: the runner calls :meth:`IngestionJobs.run` on a thread, which runs
:func:`outcrop.knowledge.ingest.sync` on the server's event loop (the embedding engine
lives there and batches with live requests). The lock key is the data source: one job
at a time per data source, so a second start is a ConflictException.

States map to Bedrock's words: QUEUED -> STARTING, RUNNING -> IN_PROGRESS (STOPPING once a
stop is requested), SUCCEEDED -> COMPLETE, FAILED, STOPPED.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from outcrop.errors import ConflictError, OutcropError, ResourceNotFoundError, ValidationError
from outcrop.jobs.files import JobFailure
from outcrop.jobs.kinds import JobContext, JobKind
from outcrop.jobs.records import ACTIVE, JobRow
from outcrop.knowledge import ingest
from outcrop.knowledge.parsers import DocumentError
from outcrop.knowledge.records import IngestionJobRecord
from outcrop.service.agent_fields import client_token, iso, length, new_id, page, request
from outcrop.service.fields import Obj
from outcrop.service.kb_config import parse_chunking
from outcrop.service.knowledge import KnowledgeService

KIND = "kb-ingestion"
JOB_STATUSES = ("STARTING", "IN_PROGRESS", "COMPLETE", "FAILED", "STOPPING", "STOPPED")
_STATES = {"QUEUED": "STARTING", "SUCCEEDED": "COMPLETE", "FAILED": "FAILED", "STOPPED": "STOPPED"}
_STAT_NAMES = {
    "scanned": "numberOfDocumentsScanned",
    "metadata_scanned": "numberOfMetadataDocumentsScanned",
    "new": "numberOfNewDocumentsIndexed",
    "modified": "numberOfModifiedDocumentsIndexed",
    "deleted": "numberOfDocumentsDeleted",
    "failed": "numberOfDocumentsFailed",
}


def status(row: JobRow) -> str:
    if row.state == "RUNNING":
        return "STOPPING" if row.stop_requested_at is not None else "IN_PROGRESS"
    return _STATES[row.state]


class IngestionJobs:
    def __init__(self, knowledge: KnowledgeService) -> None:
        self.knowledge = knowledge
        self.db = knowledge.db
        self.runner = knowledge.runner

    def kind(self) -> JobKind:
        return JobKind(KIND, "inline", run=self.run, max_running=1, max_attempts=3)

    # ------------------------------------------------------------------ operations

    def start_ingestion_job(self, kb_id: str, ds_id: str, body: dict[str, Any]) -> dict[str, Any]:
        ds = self.knowledge.data_source(kb_id, ds_id)
        self.knowledge.active_knowledge_base(kb_id)
        o = request(body)
        description = length(o, "description", 1, 200)
        token = client_token(o)
        jobs = self.db.jobs(ds_id=ds_id)
        for record, row in jobs:
            if token is not None and record.client_token == token:
                return {"ingestionJob": self.job_dict(record, row)}
        if ds.source_type != "S3":
            raise ValidationError(
                f"Data source {ds_id} is {ds.source_type}: add its documents with "
                "IngestKnowledgeBaseDocuments instead of an ingestion job."
            )
        if ds.status != "AVAILABLE":
            raise ConflictError(f"Data source {ds_id} is {ds.status}.")
        for record, row in jobs:
            if row.state in ACTIVE:
                raise ConflictError(
                    f"Ingestion job {record.job_id} is already {status(row)} on data source "
                    f"{ds_id}."
                )
        job_id = new_id()
        with self.db.session() as s:
            self.runner.store.add(s, job_id, KIND, lock_key=ds_id)
            s.add(
                IngestionJobRecord(
                    job_id=job_id, kb_id=kb_id, ds_id=ds_id, description=description,
                    statistics=ingest.Statistics().to_dict(), failure_reasons=[],
                    client_token=token,
                )
            )  # fmt: skip
        found = self.db.job(job_id)
        assert found is not None
        return {"ingestionJob": self.job_dict(*found)}

    def _job(self, kb_id: str, ds_id: str, job_id: str) -> tuple[IngestionJobRecord, JobRow]:
        self.knowledge.data_source(kb_id, ds_id)
        found = self.db.job(job_id)
        if found is None or found[0].ds_id != ds_id:
            raise ResourceNotFoundError(f"Ingestion job {job_id} does not exist.")
        return found

    def job_dict(self, record: IngestionJobRecord, row: JobRow, summary: bool = False) -> dict:
        stats = ingest.Statistics.from_dict(record.statistics).to_dict()
        out: dict[str, Any] = {
            "knowledgeBaseId": record.kb_id,
            "dataSourceId": record.ds_id,
            "ingestionJobId": record.job_id,
            "status": status(row),
            "statistics": {_STAT_NAMES[k]: v for k, v in stats.items()},
            "startedAt": iso(row.created_at),
            "updatedAt": iso(row.updated_at),
        }
        if record.description:
            out["description"] = record.description
        reasons = list(record.failure_reasons or [])
        if row.failure_message:
            reasons.append(row.failure_message)
        if reasons and not summary:
            out["failureReasons"] = [r[:2048] for r in reasons]
        return out

    def get_ingestion_job(self, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
        return {"ingestionJob": self.job_dict(*self._job(kb_id, ds_id, job_id))}

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
            jobs = [(r, j) for r, j in jobs if status(j) in values]
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
        if attribute == "STATUS":
            jobs.sort(key=lambda rj: status(rj[1]), reverse=order == "DESCENDING")
        else:
            jobs.sort(key=lambda rj: rj[1].created_at, reverse=order == "DESCENDING")
        items, token = page(jobs, o)
        out: dict[str, Any] = {
            "ingestionJobSummaries": [self.job_dict(r, j, True) for r, j in items]
        }
        if token:
            out["nextToken"] = token
        return out

    def stop_ingestion_job(self, kb_id: str, ds_id: str, job_id: str) -> dict[str, Any]:
        self._job(kb_id, ds_id, job_id)
        if not self.runner.stop(job_id):
            _, row = self._job(kb_id, ds_id, job_id)
            raise ConflictError(f"Ingestion job {job_id} is {status(row)}; it cannot be stopped.")
        return {"ingestionJob": self.job_dict(*self._job(kb_id, ds_id, job_id))}

    # ------------------------------------------------------------------ the job kind

    def run(self, ctx: JobContext) -> dict[str, Any]:
        """One attempt at a job, on a runner thread; the sync itself runs on the loop.

        A sync ended by the server shutting down must not return before the runner has
        stopped watching (it would settle the job as finished): it waits for the runner's
        stop signal, and the runner queues the job again to resume on the next start.
        """
        try:
            stats = ctx.call(self._tracked(self._sync(ctx)))
        except DocumentError as exc:  # the source itself cannot be listed
            raise JobFailure(f"The ingestion failed: {exc.reason}") from None
        except OutcropError as exc:  # its data source or knowledge base is gone
            raise JobFailure(f"The ingestion failed: {exc.message}") from None
        except ingest.Stopped:
            if self.knowledge.closing:
                deadline = time.monotonic() + 30
                while not ctx.should_stop() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return {}
        return stats.to_dict()

    async def _tracked(self, work) -> Any:  # noqa: ANN001
        task = asyncio.current_task()
        assert task is not None
        self.knowledge.live.add(task)
        try:
            return await work
        finally:
            self.knowledge.live.discard(task)

    async def _sync(self, ctx: JobContext) -> ingest.Statistics:
        found = await asyncio.to_thread(self.db.job, ctx.job_id)
        if found is None:
            raise ingest.Stopped()  # its knowledge base was deleted
        record, _ = found
        kb = self.knowledge.knowledge_base(record.kb_id)
        ds = self.knowledge.data_source(record.kb_id, record.ds_id)
        config = parse_chunking(Obj.of(ds.ingestion, (), "converse") if ds.ingestion else None)
        sync = ingest.SyncContext(
            db=self.db,
            store=await asyncio.to_thread(self.knowledge.stores.store, kb),
            embedder=await self.knowledge.stores.embedder(kb),
            bucket=self.knowledge.bucket(ds),
            job=record,
            config=config,
            should_stop=lambda: (
                ctx.should_stop() or self.knowledge.closing or self.knowledge.kb_going(kb.kb_id)
            ),
            report=lambda progress: ctx.progress(**progress),
        )
        return await ingest.sync(sync)
