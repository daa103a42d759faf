"""Customization's wire resources: the job's Bedrock fields and the custom models.

The job's lifecycle (state, stop request, progress, times, failure) lives in the shared
``jobs`` table (:mod:`outcrop.jobs`), keyed by the same job id.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.db import Base, Database

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


class CustomizationRecords:
    """Lookups and updates of the two tables above."""

    def __init__(self, db: Database) -> None:
        self.db = db
        db.create_tables()

    def session(self):  # noqa: ANN201
        return self.db.session()

    # ------------------------------------------------------------------ jobs

    def jobs(self) -> list[JobRecord]:
        with self.db.session() as s:
            return list(s.scalars(select(JobRecord)))

    def job(self, identifier: str) -> JobRecord | None:
        """By ARN, name or ID."""
        return self._find(JobRecord, identifier, "job_arn", "job_name", "job_id")

    def job_by_id(self, job_id: str) -> JobRecord | None:
        """By primary key: for the server's own references, which never hold a name."""
        with self.db.session() as s:
            return s.get(JobRecord, job_id)

    def update_job(self, job_id: str, **values: Any) -> JobRecord | None:
        return self._update(JobRecord, job_id, values)

    # ------------------------------------------------------------------ models

    def models(self) -> list[CustomModelRecord]:
        with self.db.session() as s:
            return list(s.scalars(select(CustomModelRecord)))

    def model(self, identifier: str) -> CustomModelRecord | None:
        """By ARN, name or ID."""
        return self._find(CustomModelRecord, identifier, "model_arn", "model_name", "model_id")

    def update_model(self, model_id: str, **values: Any) -> CustomModelRecord | None:
        return self._update(CustomModelRecord, model_id, values)

    def delete_model(self, model_id: str) -> None:
        with self.db.session() as s:
            model = s.get(CustomModelRecord, model_id)
            if model is not None:
                s.delete(model)

    # ------------------------------------------------------------------ shared

    def _find(self, entity: type, identifier: str, *columns: str):  # noqa: ANN202
        """The first record whose column (in the order given) equals ``identifier``."""
        with self.db.session() as s:
            for column in columns:
                where = getattr(entity, column) == identifier
                hit = s.scalars(select(entity).where(where)).first()
                if hit is not None:
                    return hit
        return None

    def _update(self, entity: type, key: str, values: dict[str, Any]):  # noqa: ANN202
        with self.db.session() as s:
            record = s.get(entity, key)
            if record is None:
                return None
            for k, v in values.items():
                setattr(record, k, v)
            return record
