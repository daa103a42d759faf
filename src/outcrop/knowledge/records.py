"""Knowledge bases, data sources, ingestion jobs and documents, in the shared records
database (:mod:`outcrop.db`). Only the server writes; ``outcrop kb`` reads.

An ingestion job's lifecycle (state, attempts, stop flag, times, progress) is its row in
the shared ``jobs`` table (:mod:`outcrop.jobs`); :class:`IngestionJobRecord` holds only
what bedrock-agent adds (its knowledge base and data source, counters, failure reasons).
Configurations the client sent are kept as JSON, verbatim, and returned as sent; what the
server acts on (the embedding model, the chunking) is parsed from them by the service.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from outcrop.db import Base, Database
from outcrop.jobs.records import JobRow


class KnowledgeBaseRecord(Base):
    __tablename__ = "knowledge_bases"

    kb_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    arn: Mapped[str] = mapped_column(String(128))
    role_arn: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(200), default=None)
    configuration: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: the storage configuration as sent (every knowledge base uses outcrop's own store)
    storage: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    #: the embedding model's catalog ID and the vector width the store holds
    embedding_model: Mapped[str] = mapped_column(String(2048))
    dimensions: Mapped[int] = mapped_column(Integer)
    #: CREATING, ACTIVE, DELETING, UPDATING, FAILED
    status: Mapped[str] = mapped_column(String(24))
    failure_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    client_token: Mapped[str | None] = mapped_column(String(256), default=None)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class DataSourceRecord(Base):
    __tablename__ = "data_sources"

    ds_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(10), index=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str | None] = mapped_column(String(200), default=None)
    #: S3 or CUSTOM
    source_type: Mapped[str] = mapped_column(String(32))
    configuration: Mapped[dict[str, Any]] = mapped_column(JSON)
    ingestion: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    deletion_policy: Mapped[str] = mapped_column(String(8), default="DELETE")
    #: AVAILABLE, DELETING
    status: Mapped[str] = mapped_column(String(24))
    client_token: Mapped[str | None] = mapped_column(String(256), default=None)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class IngestionJobRecord(Base):
    """bedrock-agent's side of an ingestion job; its lifecycle is the ``jobs`` row."""

    __tablename__ = "ingestion_jobs"

    job_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(10), index=True)
    ds_id: Mapped[str] = mapped_column(String(10), index=True)
    description: Mapped[str | None] = mapped_column(String(200), default=None)
    #: counters, snake_case (scanned, new, modified, deleted, failed, metadata_scanned)
    statistics: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    #: one per failed document ("uri: reason")
    failure_reasons: Mapped[list[str]] = mapped_column(JSON, default=list)
    client_token: Mapped[str | None] = mapped_column(String(256), default=None)


class DocumentRecord(Base):
    """One document of a data source, as last ingested (the incremental sync's memory)."""

    __tablename__ = "kb_documents"

    ds_id: Mapped[str] = mapped_column(String(10), primary_key=True)
    #: the S3 URI, or the custom document ID
    doc_key: Mapped[str] = mapped_column(String(2048), primary_key=True)
    kb_id: Mapped[str] = mapped_column(String(10), index=True)
    #: S3 or CUSTOM
    source_type: Mapped[str] = mapped_column(String(8))
    #: sha256 of the content, its metadata and the chunking settings
    content_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    #: INDEXED, FAILED, IN_PROGRESS
    status: Mapped[str] = mapped_column(String(24))
    status_reason: Mapped[str | None] = mapped_column(Text, default=None)
    #: the ingestion job that last handled it (a resumed job skips what it already did)
    job_id: Mapped[str | None] = mapped_column(String(10), default=None)
    chunks: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[float] = mapped_column(Float)


class KnowledgeDatabase:
    """The knowledge tables of the shared records database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.create_tables()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.db.session() as s:
            yield s

    def add(self, record: Base) -> None:
        with self.session() as s:
            s.add(record)

    def get(self, entity: type, *key: str):  # noqa: ANN201
        with self.session() as s:
            return s.get(entity, key if len(key) > 1 else key[0])

    def update(self, entity: type, key: Any, **values: Any):  # noqa: ANN201
        """Set ``values`` (and ``updated_at``); None if the record is gone."""
        with self.session() as s:
            record = s.get(entity, key)
            if record is None:
                return None
            for k, v in values.items():
                setattr(record, k, v)
            if hasattr(record, "updated_at"):
                record.updated_at = time.time()
            return record

    def delete(self, entity: type, key: Any) -> None:
        with self.session() as s:
            record = s.get(entity, key)
            if record is not None:
                s.delete(record)

    # ------------------------------------------------------------------ queries

    def knowledge_bases(self) -> list[KnowledgeBaseRecord]:
        with self.session() as s:
            return list(s.scalars(select(KnowledgeBaseRecord)))

    def knowledge_base_by_name(self, name: str) -> KnowledgeBaseRecord | None:
        with self.session() as s:
            return s.scalars(
                select(KnowledgeBaseRecord).where(KnowledgeBaseRecord.name == name)
            ).first()

    def data_sources(self, kb_id: str | None = None) -> list[DataSourceRecord]:
        with self.session() as s:
            q = select(DataSourceRecord)
            if kb_id is not None:
                q = q.where(DataSourceRecord.kb_id == kb_id)
            return list(s.scalars(q))

    def jobs(
        self, ds_id: str | None = None, kb_id: str | None = None
    ) -> list[tuple[IngestionJobRecord, JobRow]]:
        """Ingestion jobs with their lifecycle rows, oldest first."""
        with self.session() as s:
            q = select(IngestionJobRecord, JobRow).join(
                JobRow, JobRow.job_id == IngestionJobRecord.job_id
            )
            if ds_id is not None:
                q = q.where(IngestionJobRecord.ds_id == ds_id)
            if kb_id is not None:
                q = q.where(IngestionJobRecord.kb_id == kb_id)
            return [(r, j) for r, j in s.execute(q.order_by(JobRow.created_at)).tuples()]

    def job(self, job_id: str) -> tuple[IngestionJobRecord, JobRow] | None:
        with self.session() as s:
            record, row = s.get(IngestionJobRecord, job_id), s.get(JobRow, job_id)
            return (record, row) if record is not None and row is not None else None

    def documents(self, ds_id: str) -> list[DocumentRecord]:
        with self.session() as s:
            return list(s.scalars(select(DocumentRecord).where(DocumentRecord.ds_id == ds_id)))

    def put_document(self, **values: Any) -> None:
        with self.session() as s:
            record = s.get(DocumentRecord, (values["ds_id"], values["doc_key"]))
            if record is None:
                s.add(DocumentRecord(updated_at=time.time(), **values))
                return
            for k, v in values.items():
                setattr(record, k, v)
            record.updated_at = time.time()

    def delete_documents(self, ds_id: str, keys: list[str] | None = None) -> None:
        with self.session() as s:
            q = select(DocumentRecord).where(DocumentRecord.ds_id == ds_id)
            if keys is not None:
                q = q.where(DocumentRecord.doc_key.in_(keys))
            for record in s.scalars(q):
                s.delete(record)
