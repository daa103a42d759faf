"""Batch inference jobs and async invocations: their Bedrock fields and counters.

Their lifecycle (state, stop request, times, failure) is in the shared ``jobs`` table.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.db import Base
from outcrop.db.records import Records

BATCH_KIND = "model-invocation"
ASYNC_KIND = "async-invoke"


class InvocationJobRecord(Base):
    __tablename__ = "invocation_jobs"

    job_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    job_arn: Mapped[str] = mapped_column(String(1011), unique=True)
    job_name: Mapped[str] = mapped_column(String(63), index=True)
    model_id: Mapped[str] = mapped_column(String(2048))
    """As the client sent it (Bedrock returns it so)."""
    resolved_model_id: Mapped[str] = mapped_column(String(256))
    role_arn: Mapped[str] = mapped_column(String(2048))
    client_request_token: Mapped[str | None] = mapped_column(String(256), default=None)
    invocation_type: Mapped[str | None] = mapped_column(String(16), default=None)
    input_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    output_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    vpc_config: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    input_uri: Mapped[str] = mapped_column(Text)
    output_uri: Mapped[str] = mapped_column(Text)
    timeout_hours: Mapped[int] = mapped_column(Integer)
    submit_time: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    expired: Mapped[bool] = mapped_column(Boolean, default=False)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    total_records: Mapped[int | None] = mapped_column(Integer, default=None)
    processed_records: Mapped[int] = mapped_column(Integer, default=0)
    success_records: Mapped[int] = mapped_column(Integer, default=0)
    error_records: Mapped[int] = mapped_column(Integer, default=0)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)


class AsyncInvokeRecord(Base):
    __tablename__ = "async_invokes"

    invocation_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    invocation_arn: Mapped[str] = mapped_column(String(2048), unique=True)
    model_id: Mapped[str] = mapped_column(String(256))
    model_arn: Mapped[str] = mapped_column(String(2048))
    client_request_token: Mapped[str | None] = mapped_column(String(256), default=None)
    model_input: Mapped[Any] = mapped_column(JSON)
    output_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    output_uri: Mapped[str] = mapped_column(Text)
    submit_time: Mapped[float] = mapped_column(Float)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)


class BatchRecords(Records):
    def jobs(self) -> list[InvocationJobRecord]:
        return self.all(InvocationJobRecord)

    def job(self, job_id: str) -> InvocationJobRecord | None:
        return self.get(InvocationJobRecord, job_id)

    def update_job(self, job_id: str, **values: Any) -> InvocationJobRecord | None:
        return self.update(InvocationJobRecord, job_id, **values)

    def invocations(self) -> list[AsyncInvokeRecord]:
        return self.all(AsyncInvokeRecord)

    def invocation(self, invocation_id: str) -> AsyncInvokeRecord | None:
        return self.get(AsyncInvokeRecord, invocation_id)
