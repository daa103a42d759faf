"""Numbered schema steps for tables that already exist (``create_all`` never alters one).

A fresh database gets every table from the models and starts at the newest version.
An existing one records its version in ``schema_version``; a database from before this
table existed is version 1 if it holds the first customization tables. Each step runs in
one transaction with the version bump, so a crash leaves the old version or the new one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

log = logging.getLogger("outcrop.db")

_STATES = {  # customization status -> job state, for rows written before the jobs table
    "InProgress": "RUNNING",
    "Stopping": "RUNNING",
    "Completed": "SUCCEEDED",
    "Failed": "FAILED",
    "Stopped": "STOPPED",
}


def _v2_jobs_table(conn: Connection) -> None:
    """Customization lifecycle columns move to the shared ``jobs`` table."""
    from outcrop.db import Base
    from outcrop.jobs.records import JobEvent, JobRow

    Base.metadata.create_all(conn, tables=[JobRow.__table__, JobEvent.__table__])
    rows = conn.execute(
        text(
            "SELECT job_id, status, failure_message, creation_time, last_modified_time, "
            "end_time, progress, work_dir FROM customization_jobs"
        )
    ).mappings()
    for r in rows:
        state = _STATES.get(r["status"], "FAILED")
        conn.execute(
            text(
                "INSERT INTO jobs (job_id, kind, state, stop_requested_at, attempts, "
                "created_at, started_at, updated_at, ended_at, failure_message, progress, "
                "work_dir) VALUES (:id, 'customization', :state, :stop, 1, :created, "
                ":created, :updated, :ended, :msg, :progress, :work)"
            ),
            {
                "id": r["job_id"], "state": state,
                "stop": r["last_modified_time"] if r["status"] == "Stopping" else None,
                "created": r["creation_time"], "updated": r["last_modified_time"],
                "ended": r["end_time"], "msg": r["failure_message"],
                "progress": r["progress"] or "{}", "work": r["work_dir"],
            },
        )  # fmt: skip
        conn.execute(
            text("INSERT INTO job_events (job_id, state, at) VALUES (:id, :state, :at)"),
            {"id": r["job_id"], "state": state, "at": r["last_modified_time"]},
        )
    for column in ("status", "failure_message", "last_modified_time", "end_time", "progress",
                   "work_dir"):  # fmt: skip
        conn.execute(text(f"ALTER TABLE customization_jobs DROP COLUMN {column}"))


def _v3_model_bucket(conn: Connection) -> None:
    """Custom and imported models may live in the model bucket: its key and the sha256."""
    inspector = inspect(conn)
    tables = inspector.get_table_names()
    for table in ("custom_models", "imported_models"):
        if table not in tables:
            continue  # created later by its package, with the columns
        have = {c["name"] for c in inspector.get_columns(table)}
        if "bucket_key" not in have:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN bucket_key TEXT"))
        if "sha256" not in have:
            conn.execute(text(f"ALTER TABLE {table} ADD COLUMN sha256 VARCHAR(64)"))


STEPS: dict[int, Callable[[Connection], None]] = {2: _v2_jobs_table, 3: _v3_model_bucket}
LATEST = max(STEPS)


def _version(conn: Connection) -> int | None:
    tables = inspect(conn).get_table_names()
    if "schema_version" in tables:
        return int(conn.execute(text("SELECT version FROM schema_version")).scalar_one())
    if "customization_jobs" in tables:
        return 1
    return None


def upgrade(engine: Engine) -> None:
    with engine.begin() as conn:
        version = _version(conn)
        if version is None:  # a new database: the models create it at the newest version
            conn.execute(
                text("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            )
            conn.execute(
                text(
                    "INSERT INTO schema_version SELECT :v "
                    "WHERE NOT EXISTS (SELECT 1 FROM schema_version)"
                ),
                {"v": LATEST},
            )
            return
        if version == 1:
            conn.execute(text("CREATE TABLE schema_version (version INTEGER NOT NULL)"))
            conn.execute(text("INSERT INTO schema_version VALUES (1)"))
    for step in range(version + 1, LATEST + 1):
        started = time.monotonic()
        with engine.begin() as conn:
            STEPS[step](conn)
            conn.execute(text("UPDATE schema_version SET version = :v"), {"v": step})
        log.info("records database upgraded to version %d in %.2fs", step,
                 time.monotonic() - started)  # fmt: skip
