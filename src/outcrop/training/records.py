"""Customization jobs and custom models, kept in SQLite (``<data-dir>/customization.db``).

Only the server process writes here; the training worker reports through files in its
job folder (see :mod:`outcrop.training.runner`). The CLI reads the same file.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, Float, String, Text, create_engine, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


class Base(DeclarativeBase):
    pass


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
    status: Mapped[str] = mapped_column(String(16), default="InProgress")
    failure_message: Mapped[str | None] = mapped_column(Text, default=None)
    creation_time: Mapped[float] = mapped_column(Float)
    last_modified_time: Mapped[float] = mapped_column(Float)
    end_time: Mapped[float | None] = mapped_column(Float, default=None)
    training_loss: Mapped[float | None] = mapped_column(Float, default=None)
    validation_losses: Mapped[list[float]] = mapped_column(JSON, default=list)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    work_dir: Mapped[str] = mapped_column(Text)


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


class Database:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "customization.db"
        self.engine = create_engine(
            f"sqlite:///{self.path}", connect_args={"timeout": 30, "check_same_thread": False}
        )

        @event.listens_for(self.engine, "connect")
        def _pragmas(conn, _record) -> None:  # noqa: ANN001
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        Base.metadata.create_all(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    # ------------------------------------------------------------------ jobs

    def jobs(self) -> list[JobRecord]:
        with self.session() as s:
            return list(s.scalars(select(JobRecord)))

    def job(self, identifier: str) -> JobRecord | None:
        """By ARN, name or ID."""
        return self._find(JobRecord, identifier, "job_arn", "job_name", "job_id")

    def job_by_id(self, job_id: str) -> JobRecord | None:
        """By primary key: for the server's own references, which never hold a name."""
        with self.session() as s:
            return s.get(JobRecord, job_id)

    def update_job(self, job_id: str, **values: Any) -> JobRecord | None:
        return self._update(JobRecord, job_id, values, last_modified_time=time.time())

    # ------------------------------------------------------------------ models

    def models(self) -> list[CustomModelRecord]:
        with self.session() as s:
            return list(s.scalars(select(CustomModelRecord)))

    def model(self, identifier: str) -> CustomModelRecord | None:
        """By ARN, name or ID."""
        return self._find(CustomModelRecord, identifier, "model_arn", "model_name", "model_id")

    def update_model(self, model_id: str, **values: Any) -> CustomModelRecord | None:
        return self._update(CustomModelRecord, model_id, values)

    # ------------------------------------------------------------------ shared

    def _find(self, entity: type, identifier: str, *columns: str):  # noqa: ANN202
        """The first record whose column (in the order given) equals ``identifier``."""
        with self.session() as s:
            for column in columns:
                where = getattr(entity, column) == identifier
                hit = s.scalars(select(entity).where(where)).first()
                if hit is not None:
                    return hit
        return None

    def _update(self, entity: type, key: str, values: dict[str, Any], **stamps: Any):  # noqa: ANN202
        with self.session() as s:
            record = s.get(entity, key)
            if record is None:
                return None
            for k, v in {**values, **stamps}.items():
                setattr(record, k, v)
            return record

    def delete_model(self, model_id: str) -> None:
        with self.session() as s:
            model = s.get(CustomModelRecord, model_id)
            if model is not None:
                s.delete(model)
