"""The records database: one SQLAlchemy engine, one declarative Base for every package.

SQLite in ``<data-dir>/outcrop.db`` by default (WAL, so the CLI reads while the server
writes); any SQLAlchemy URL otherwise (PostgreSQL when several servers share state).
Each domain package declares its tables on :class:`Base` and calls
:meth:`Database.create_tables` once its record module is imported; changes to tables that
already exist go through the numbered steps in :mod:`outcrop.db.migrations`, never through
``create_all`` (which only creates what is missing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

FILE_NAME = "outcrop.db"
LEGACY_FILE_NAME = "customization.db"  # before the job machinery was shared


class Base(DeclarativeBase):
    pass


def sqlite_url(data_dir: Path) -> str:
    """The default database in the data dir, adopting the pre-jobs file if it is there."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / FILE_NAME
    legacy = data_dir / LEGACY_FILE_NAME
    if not path.exists() and legacy.exists():
        for suffix in ("", "-wal", "-shm"):
            old = legacy.with_name(legacy.name + suffix)
            if old.exists():
                os.replace(old, path.with_name(path.name + suffix))
    return f"sqlite:///{path}"


class Database:
    def __init__(self, data_dir: Path | None = None, url: str | None = None) -> None:
        if url is None:
            if data_dir is None:
                raise ValueError("a Database needs a data dir or a URL")
            url = sqlite_url(Path(data_dir))
        self.url = url
        self.engine: Engine
        if url.startswith("sqlite"):
            self.engine = create_engine(
                url, connect_args={"timeout": 30, "check_same_thread": False}
            )

            @event.listens_for(self.engine, "connect")
            def _pragmas(conn, _record) -> None:  # noqa: ANN001
                cur = conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
                cur.close()

            if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
                self._owner_only(Path(url.removeprefix("sqlite:///")))
        else:
            self.engine = create_engine(url, pool_pre_ping=True)
        from outcrop.db import migrations

        migrations.upgrade(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @staticmethod
    def _owner_only(path: Path) -> None:
        """Records hold ARNs, paths and prompts in job data: readable by the owner alone."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            path.touch(mode=0o600)
        else:
            path.chmod(0o600)

    def create_tables(self) -> None:
        """Create every table declared so far that does not exist yet (idempotent)."""
        Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed on leaving, rolled back on an exception."""
        with self._sessions() as s, s.begin():
            yield s
