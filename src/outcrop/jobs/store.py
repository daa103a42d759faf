"""Jobs in the database: creation, conditional transitions, stop flags, progress.

Every state change is ``UPDATE ... WHERE state IN (expected)`` plus its event, in one
transaction; ``transition`` answers False when another writer got there first. So a stop
landing as a job completes leaves exactly one outcome (whichever wrote first), and a
terminal state is never left.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from outcrop.db import Database
from outcrop.jobs.records import (
    ACTIVE,
    QUEUED,
    RUNNING,
    STATES,
    TERMINAL,
    JobEvent,
    JobRow,
)


class JobStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.create_tables()

    # ------------------------------------------------------------------ create / read

    def add(
        self,
        session: Session,
        job_id: str,
        kind: str,
        work_dir: str | None = None,
        lock_key: str | None = None,
        progress: dict[str, Any] | None = None,
    ) -> JobRow:
        """A QUEUED job, in the caller's transaction (with the kind's own wire row)."""
        now = time.time()
        row = JobRow(
            job_id=job_id, kind=kind, state=QUEUED, attempts=0, created_at=now,
            updated_at=now, progress=progress or {}, work_dir=work_dir, lock_key=lock_key,
        )  # fmt: skip
        session.add(row)
        session.add(JobEvent(job_id=job_id, state=QUEUED, at=now))
        return row

    def get(self, job_id: str) -> JobRow | None:
        with self.db.session() as s:
            return s.get(JobRow, job_id)

    def many(self, job_ids: Iterable[str]) -> dict[str, JobRow]:
        ids = list(job_ids)
        if not ids:
            return {}
        with self.db.session() as s:
            return {r.job_id: r for r in s.scalars(select(JobRow).where(JobRow.job_id.in_(ids)))}

    def of_kind(self, kind: str | None = None, states: Iterable[str] | None = None) -> list[JobRow]:
        q = select(JobRow)
        if kind is not None:
            q = q.where(JobRow.kind == kind)
        if states is not None:
            q = q.where(JobRow.state.in_(list(states)))
        with self.db.session() as s:
            return list(s.scalars(q.order_by(JobRow.created_at)))

    def events(self, job_id: str) -> list[JobEvent]:
        with self.db.session() as s:
            q = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)
            return list(s.scalars(q))

    # ------------------------------------------------------------------ changes

    def transition(self, job_id: str, to: str, expect: Iterable[str], **values: Any) -> bool:
        """Move ``job_id`` to ``to`` if it is in one of ``expect``; False on a lost race."""
        expected = [s for s in expect if s not in TERMINAL]  # a terminal state is final
        if to not in STATES:
            raise ValueError(f"unknown job state {to!r}")
        now = time.time()
        stamps: dict[str, Any] = {"state": to, "updated_at": now}
        if to == RUNNING:
            stamps["started_at"] = values.pop("started_at", now)
        if to in TERMINAL:
            stamps["ended_at"] = now
        with self.db.session() as s:
            done = s.execute(
                update(JobRow)
                .where(JobRow.job_id == job_id, JobRow.state.in_(expected))
                .values(**values, **stamps)
            )
            if done.rowcount != 1:
                return False
            s.add(JobEvent(job_id=job_id, state=to, at=now))
        return True

    def request_stop(self, job_id: str) -> bool:
        """Flag an active job for stopping (once); False if it already ended."""
        now = time.time()
        with self.db.session() as s:
            done = s.execute(
                update(JobRow)
                .where(
                    JobRow.job_id == job_id,
                    JobRow.state.in_(ACTIVE),
                    JobRow.stop_requested_at.is_(None),
                )
                .values(stop_requested_at=now, updated_at=now)
            )
            if done.rowcount == 1:
                s.add(JobEvent(job_id=job_id, state=RUNNING, phase="stop requested", at=now))
                return True
            row = s.get(JobRow, job_id)
            return row is not None and row.state in ACTIVE  # already flagged: still stopping

    def set_owner(self, job_id: str, owner: str, expect: str | None) -> bool:
        """A RUNNING job's watching server becomes ``owner`` if it still is ``expect``
        (its worker lives on elsewhere; not a state change); False on a lost race."""
        with self.db.session() as s:
            done = s.execute(
                update(JobRow)
                .where(JobRow.job_id == job_id, JobRow.state == RUNNING)
                .where(JobRow.owner.is_(None) if expect is None else JobRow.owner == expect)
                .values(owner=owner, updated_at=time.time())
            )
            return done.rowcount == 1

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> None:
        """Store the latest progress; a new ``phase`` also becomes an event."""
        now = time.time()
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is None or row.state not in ACTIVE or row.progress == progress:
                return
            phase = progress.get("phase")
            if phase and phase != (row.progress or {}).get("phase"):
                s.add(JobEvent(job_id=job_id, state=row.state, phase=str(phase), at=now))
            row.progress = progress
            row.updated_at = now
            row.heartbeat_at = now

    def delete(self, job_id: str) -> None:
        with self.db.session() as s:
            row = s.get(JobRow, job_id)
            if row is not None:
                s.delete(row)
            for ev in s.scalars(select(JobEvent).where(JobEvent.job_id == job_id)):
                s.delete(ev)
