"""Custom Model Import's wire resources: the import job's Bedrock fields and the imported
models, in the shared records database (:mod:`outcrop.db`).

The job's lifecycle (state, progress, times, failure message) lives in the shared ``jobs``
table (:mod:`outcrop.jobs`), keyed by the same job id. An imported model row is written
only when its job succeeds (in the kind's ``on_succeeded``), so a model never exists
half-imported.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.db import Base
from outcrop.db.records import Records

KIND = "model-import"


class ImportJobRecord(Base):
    __tablename__ = "model_import_jobs"

    job_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    job_arn: Mapped[str] = mapped_column(String(1011), unique=True)
    job_name: Mapped[str] = mapped_column(String(63), unique=True)
    model_name: Mapped[str] = mapped_column(String(63))
    model_id: Mapped[str] = mapped_column(String(12))
    #: the imported model's ARN, reserved at creation, live once the job succeeds
    model_arn: Mapped[str] = mapped_column(String(1011))
    client_request_token: Mapped[str | None] = mapped_column(String(256), default=None)
    role_arn: Mapped[str] = mapped_column(String(2048))
    #: what the job reads (``s3://`` or ``file://``)
    source_uri: Mapped[str] = mapped_column(Text)
    #: what the user named (``ollama:smol:latest``); the URI for API jobs
    source_label: Mapped[str] = mapped_column(Text)
    source_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    weight_format: Mapped[str] = mapped_column(String(16), default="auto")
    creation_time: Mapped[float] = mapped_column(Float)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class ImportedModelRecord(Base):
    __tablename__ = "imported_models"

    model_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    model_arn: Mapped[str] = mapped_column(String(1011), unique=True)
    model_name: Mapped[str] = mapped_column(String(63), unique=True)
    job_id: Mapped[str] = mapped_column(String(12))
    source_uri: Mapped[str] = mapped_column(Text)
    architecture: Mapped[str] = mapped_column(String(64))
    #: the Hugging Face class for folders (``LlamaForCausalLM``), the GGUF's name otherwise
    family_hint: Mapped[str | None] = mapped_column(String(200), default=None)
    instruct_supported: Mapped[bool] = mapped_column(Boolean)
    context_length: Mapped[int] = mapped_column(Integer)
    #: the GGUF that is served (inside the model's folder, or a referenced blob)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    #: the weight-format decision (see outcrop.models.formats) and the conversion's numbers
    weights: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_dir: Mapped[str] = mapped_column(Text)
    #: its object in the model bucket (``--model-bucket``) and the file's sha256
    bucket_key: Mapped[str | None] = mapped_column(Text, default=None)
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    creation_time: Mapped[float] = mapped_column(Float)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)


class ImportRecords(Records):
    """Lookups of the two tables above."""

    def jobs(self) -> list[ImportJobRecord]:
        return self.all(ImportJobRecord)

    def job(self, identifier: str) -> ImportJobRecord | None:
        """By ARN, name or ID."""
        return self.find(ImportJobRecord, identifier, "job_arn", "job_name", "job_id")

    def job_by_id(self, job_id: str) -> ImportJobRecord | None:
        return self.get(ImportJobRecord, job_id)

    def models(self) -> list[ImportedModelRecord]:
        return self.all(ImportedModelRecord)

    def model(self, identifier: str) -> ImportedModelRecord | None:
        """By ARN, name or ID."""
        return self.find(ImportedModelRecord, identifier, "model_arn", "model_name", "model_id")

    def add_model(self, model: ImportedModelRecord) -> None:
        with self.db.session() as s:
            s.add(model)

    def delete_model(self, model_id: str) -> None:
        self.remove(ImportedModelRecord, model_id)
