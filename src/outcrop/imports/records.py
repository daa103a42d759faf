"""Import jobs and imported models, kept in SQLite (``<data-dir>/imports.db``).

The server and the CLI both write here (WAL mode; every change is one short transaction).
A job's end is a conditional update (``InProgress`` -> ``Completed`` | ``Failed``), and a
Completed job and its imported model are written in the same transaction: an imported
model exists only once its files are complete, and never without its job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

IN_PROGRESS, COMPLETED, FAILED = "InProgress", "Completed", "Failed"
JOB_STATUSES = (IN_PROGRESS, COMPLETED, FAILED)


class Base(DeclarativeBase):
    pass


class ImportJobRecord(Base):
    __tablename__ = "model_import_jobs"

    job_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    job_arn: Mapped[str] = mapped_column(String(1011), unique=True)
    job_name: Mapped[str] = mapped_column(String(63), unique=True)
    model_name: Mapped[str] = mapped_column(String(63))
    model_id: Mapped[str] = mapped_column(String(12))
    #: the imported model's ARN, reserved at creation, live once Completed
    model_arn: Mapped[str] = mapped_column(String(1011))
    client_request_token: Mapped[str | None] = mapped_column(String(256), default=None)
    role_arn: Mapped[str] = mapped_column(String(2048))
    #: what the job reads (``s3://`` or ``file://``)
    source_uri: Mapped[str] = mapped_column(Text)
    #: what the user named (``ollama:smol:latest``); the URI for API jobs
    source_label: Mapped[str] = mapped_column(Text)
    source_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    weight_format: Mapped[str] = mapped_column(String(16), default="auto")
    status: Mapped[str] = mapped_column(String(16), default=IN_PROGRESS)
    failure_message: Mapped[str | None] = mapped_column(Text, default=None)
    creation_time: Mapped[float] = mapped_column(Float)
    last_modified_time: Mapped[float] = mapped_column(Float)
    end_time: Mapped[float | None] = mapped_column(Float, default=None)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    work_dir: Mapped[str] = mapped_column(Text)
    #: the process running the job (a server's worker or a CLI); None while queued
    owner_pid: Mapped[int | None] = mapped_column(Integer, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)


class ImportedModelRecord(Base):
    __tablename__ = "imported_models"

    model_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    model_arn: Mapped[str] = mapped_column(String(1011), unique=True)
    model_name: Mapped[str] = mapped_column(String(63), unique=True)
    job_id: Mapped[str] = mapped_column(String(12))
    source_uri: Mapped[str] = mapped_column(Text)
    architecture: Mapped[str] = mapped_column(String(64))
    #: the Hugging Face class for folders (``LlamaForCausalLM``); the GGUF name otherwise
    family_hint: Mapped[str | None] = mapped_column(String(200), default=None)
    instruct_supported: Mapped[bool] = mapped_column(Boolean)
    context_length: Mapped[int] = mapped_column(Integer)
    #: the GGUF that is served (inside the model's folder, or a referenced blob)
    path: Mapped[str] = mapped_column(Text)
    size_bytes: Mapped[int] = mapped_column(Integer)
    #: the weight-format decision (see outcrop.models.formats)
    weights: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    model_dir: Mapped[str] = mapped_column(Text)
    creation_time: Mapped[float] = mapped_column(Float)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)


class ImportDatabase:
    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.path = data_dir / "imports.db"
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

    def add_job(self, job: ImportJobRecord) -> None:
        with self.session() as s:
            s.add(job)

    def jobs(self) -> list[ImportJobRecord]:
        with self.session() as s:
            return list(s.scalars(select(ImportJobRecord)))

    def job(self, identifier: str) -> ImportJobRecord | None:
        """By ARN, name or ID."""
        return self._find(ImportJobRecord, identifier, "job_arn", "job_name", "job_id")

    def job_by_id(self, job_id: str) -> ImportJobRecord | None:
        with self.session() as s:
            return s.get(ImportJobRecord, job_id)

    def claim(self, job_id: str, pid: int, expect_owner: int | None) -> bool:
        """Take an InProgress job for process *pid*; False when another process got it."""
        where = [ImportJobRecord.job_id == job_id, ImportJobRecord.status == IN_PROGRESS]
        if expect_owner is None:
            where.append(ImportJobRecord.owner_pid.is_(None))
        else:
            where.append(ImportJobRecord.owner_pid == expect_owner)
        with self.session() as s:
            res = s.execute(
                update(ImportJobRecord)
                .where(*where)
                .values(
                    owner_pid=pid,
                    attempts=ImportJobRecord.attempts + 1,
                    last_modified_time=time.time(),
                )
            )
            return res.rowcount == 1

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        with self.session() as s:
            s.execute(
                update(ImportJobRecord)
                .where(ImportJobRecord.job_id == job_id, ImportJobRecord.status == IN_PROGRESS)
                .values(progress=progress, last_modified_time=time.time())
            )

    def release(self, job_id: str) -> None:
        """Back to the queue (its process ended without settling it)."""
        with self.session() as s:
            s.execute(
                update(ImportJobRecord)
                .where(ImportJobRecord.job_id == job_id, ImportJobRecord.status == IN_PROGRESS)
                .values(owner_pid=None, last_modified_time=time.time())
            )

    def fail(self, job_id: str, message: str) -> bool:
        now = time.time()
        with self.session() as s:
            res = s.execute(
                update(ImportJobRecord)
                .where(ImportJobRecord.job_id == job_id, ImportJobRecord.status == IN_PROGRESS)
                .values(
                    status=FAILED,
                    failure_message=message[:2048],
                    end_time=now,
                    last_modified_time=now,
                    owner_pid=None,
                )  # fmt: skip
            )
            return res.rowcount == 1

    def complete(self, job_id: str, model: ImportedModelRecord) -> bool:
        """The job Completed and its model registered, together, or neither."""
        now = time.time()
        with self.session() as s:
            res = s.execute(
                update(ImportJobRecord)
                .where(ImportJobRecord.job_id == job_id, ImportJobRecord.status == IN_PROGRESS)
                .values(status=COMPLETED, end_time=now, last_modified_time=now, owner_pid=None)
            )
            if res.rowcount != 1:
                return False
            s.add(model)
            return True

    # ------------------------------------------------------------------ models

    def models(self) -> list[ImportedModelRecord]:
        with self.session() as s:
            return list(s.scalars(select(ImportedModelRecord)))

    def model(self, identifier: str) -> ImportedModelRecord | None:
        """By ARN, name or ID."""
        return self._find(ImportedModelRecord, identifier, "model_arn", "model_name", "model_id")

    def delete_model(self, model_id: str) -> None:
        with self.session() as s:
            model = s.get(ImportedModelRecord, model_id)
            if model is not None:
                s.delete(model)

    # ------------------------------------------------------------------ shared

    def _find(self, entity: type, identifier: str, *columns: str):  # noqa: ANN202
        with self.session() as s:
            for column in columns:
                hit = s.scalars(select(entity).where(getattr(entity, column) == identifier)).first()
                if hit is not None:
                    return hit
        return None
