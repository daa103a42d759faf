"""The lifecycle of every job, whatever its kind, and the events it went through."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.db import Base

QUEUED = "QUEUED"
RUNNING = "RUNNING"
SUCCEEDED = "SUCCEEDED"
FAILED = "FAILED"
STOPPED = "STOPPED"
STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, STOPPED)
TERMINAL = (SUCCEEDED, FAILED, STOPPED)
ACTIVE = (QUEUED, RUNNING)


class JobRow(Base):
    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    stop_requested_at: Mapped[float | None] = mapped_column(Float, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    updated_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, default=None)
    failure_message: Mapped[str | None] = mapped_column(Text, default=None)
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    work_dir: Mapped[str | None] = mapped_column(Text, default=None)
    lock_key: Mapped[str | None] = mapped_column(String(256), default=None, index=True)
    """Jobs sharing a key never run at once (one ingestion per data source)."""
    owner: Mapped[str | None] = mapped_column(String(128), default=None)
    heartbeat_at: Mapped[float | None] = mapped_column(Float, default=None)

    @property
    def stopping(self) -> bool:
        return self.state in ACTIVE and self.stop_requested_at is not None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL


class JobEvent(Base):
    """One row per state change and per progress phase: real times for status details."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str | None] = mapped_column(String(64), default=None)
    at: Mapped[float] = mapped_column(Float)
