"""Customization's wire resources: the job's Bedrock fields and the custom models.

The job's lifecycle (state, stop request, progress, times, failure) lives in the shared
``jobs`` table (:mod:`outcrop.jobs`), keyed by the same job id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.db import Base
from outcrop.db.records import Records

KIND = "customization"


class JobRecord(Base):
    __tablename__ = "customization_jobs"

    job_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    job_arn: Mapped[str] = mapped_column(String(1011), unique=True)
    job_name: Mapped[str] = mapped_column(String(63), unique=True)
    model_name: Mapped[str] = mapped_column(String(63))
    model_id: Mapped[str] = mapped_column(String(12))
    model_arn: Mapped[str] = mapped_column(String(1011))
    client_request_token: Mapped[str | None] = mapped_column(String(256), default=None)
    role_arn: Mapped[str] = mapped_column(String(2048))
    base_model_id: Mapped[str] = mapped_column(String(200))
    base_model_arn: Mapped[str] = mapped_column(String(1011))
    customization_type: Mapped[str] = mapped_column(String(32))
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    training_uri: Mapped[str] = mapped_column(Text)
    validation_uris: Mapped[list[str]] = mapped_column(JSON, default=list)
    output_uri: Mapped[str] = mapped_column(Text)
    creation_time: Mapped[float] = mapped_column(Float)
    training_loss: Mapped[float | None] = mapped_column(Float, default=None)
    validation_losses: Mapped[list[float]] = mapped_column(JSON, default=list)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CustomModelRecord(Base):
    __tablename__ = "custom_models"

    model_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    model_arn: Mapped[str] = mapped_column(String(1011), unique=True)
    model_name: Mapped[str] = mapped_column(String(63), unique=True)
    job_id: Mapped[str] = mapped_column(String(12))
    base_model_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="Creating")
    failure_message: Mapped[str | None] = mapped_column(Text, default=None)
    creation_time: Mapped[float] = mapped_column(Float)
    path: Mapped[str | None] = mapped_column(Text, default=None)
    """The servable GGUF; set only once the file is complete."""
    bucket_key: Mapped[str | None] = mapped_column(Text, default=None)
    """Its object in the model bucket (``--model-bucket``), when it was pushed there."""
    sha256: Mapped[str | None] = mapped_column(String(64), default=None)


class CustomizationRecords(Records):
    """Lookups and updates of the two tables above."""

    def jobs(self) -> list[JobRecord]:
        return self.all(JobRecord)

    def job(self, identifier: str) -> JobRecord | None:
        """By ARN, name or ID."""
        return self.find(JobRecord, identifier, "job_arn", "job_name", "job_id")

    def job_by_id(self, job_id: str) -> JobRecord | None:
        """By primary key: for the server's own references, which never hold a name."""
        return self.get(JobRecord, job_id)

    def update_job(self, job_id: str, **values: Any) -> JobRecord | None:
        return self.update(JobRecord, job_id, **values)

    def models(self) -> list[CustomModelRecord]:
        return self.all(CustomModelRecord)

    def model(self, identifier: str) -> CustomModelRecord | None:
        """By ARN, name or ID."""
        return self.find(CustomModelRecord, identifier, "model_arn", "model_name", "model_id")

    def update_model(self, model_id: str, **values: Any) -> CustomModelRecord | None:
        return self.update(CustomModelRecord, model_id, **values)

    def delete_model(self, model_id: str) -> None:
        self.remove(CustomModelRecord, model_id)
