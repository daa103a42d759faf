"""Shared state: two servers (separate data dirs, as on two machines) keep their records
in one real PostgreSQL 15 (``--database-url``), started by the test in a temp dir from
Debian's package: ``apt-get install -y postgresql-15``."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_port, start_server, stop_server

PG_BIN = Path(os.environ.get("OUTCROP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))

pytestmark = pytest.mark.slow


def _as_postgres_user() -> list[str]:
    """initdb refuses to run as root: run the server as Debian's ``postgres`` user then."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL as")
    return ["runuser", "-u", "postgres", "--"]


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install -y postgresql-15)")
    pytest.importorskip("psycopg", reason="the psycopg driver is not installed (outcrop[ray])")
    prefix = _as_postgres_user()
    # Not under pytest's tmp dirs: they are private to this user, and the server may run
    # as ``postgres``.
    root = Path(tempfile.mkdtemp(prefix="outcrop-pg-"))
    data = root / "data"
    data.mkdir()
    if prefix:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    init = subprocess.run(
        [*prefix, str(PG_BIN / "initdb"), "-D", str(data), "-U", "outcrop", "-A", "trust"],
        capture_output=True, text=True,
    )  # fmt: skip
    if init.returncode:
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
    port = free_port()
    proc = subprocess.Popen(
        [*prefix, str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
         "-h", "127.0.0.1", "-k", str(root), "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=(root / "pg.log").open("wb"),
    )  # fmt: skip
    import psycopg

    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(
                    f"host=127.0.0.1 port={port} user=outcrop dbname=postgres", autocommit=True
                ) as conn:
                    conn.execute("CREATE DATABASE records")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError((root / "pg.log").read_text()[-2000:]) from None
                time.sleep(0.3)
        yield f"postgresql+psycopg://outcrop@127.0.0.1:{port}/records"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


def test_database_url_runs_migrations_on_postgres(postgres):
    from sqlalchemy import inspect

    from outcrop.db import Database
    from outcrop.jobs.store import JobStore

    db = Database(url=postgres)
    JobStore(db)
    tables = set(inspect(db.engine).get_table_names())
    assert {"schema_version", "jobs"} <= tables, tables
    Database(url=postgres)  # a second server starting on the same records: no-op upgrade


def test_two_servers_share_records_through_postgres(postgres, tmp_path):
    a = start_server(tmp_path / "a", "--database-url", postgres)
    b = start_server(tmp_path / "b", "--database-url", postgres)
    try:
        made = a.client("bedrock").create_guardrail(
            name="shared-guard",
            blockedInputMessaging="blocked",
            blockedOutputsMessaging="blocked",
            wordPolicyConfig={"wordsConfig": [{"text": "pineapple"}]},
        )
        seen = b.client("bedrock").get_guardrail(guardrailIdentifier=made["guardrailId"])
        assert seen["name"] == "shared-guard"
        applied = b.client().apply_guardrail(
            guardrailIdentifier=made["guardrailId"], guardrailVersion="DRAFT", source="INPUT",
            content=[{"text": {"text": "I like pineapple on pizza"}}],
        )  # fmt: skip
        assert applied["action"] == "GUARDRAIL_INTERVENED"
        names = [g["name"] for g in a.client("bedrock").list_guardrails()["guardrails"]]
        assert "shared-guard" in names
        # Neither server kept records of its own.
        assert not list(tmp_path.glob("*/server-*/data/outcrop.db"))
    finally:
        stop_server(a)
        stop_server(b)
