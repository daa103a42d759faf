"""What every package's records class does the same way: all rows, one by key, one by
any of several identifying columns (ARN, name or ID), an update, a delete."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import select

from outcrop.db import Database

R = TypeVar("R")


class Records:
    def __init__(self, db: Database) -> None:
        self.db = db
        db.create_tables()  # the subclass's tables are declared by now

    def session(self):  # noqa: ANN201
        return self.db.session()

    def all(self, entity: type[R]) -> list[R]:
        with self.db.session() as s:
            return list(s.scalars(select(entity)))

    def get(self, entity: type[R], key: Any) -> R | None:
        with self.db.session() as s:
            return s.get(entity, key)

    def find(self, entity: type[R], identifier: str, *columns: str) -> R | None:
        """The first record whose column (in the order given) equals ``identifier``."""
        with self.db.session() as s:
            for column in columns:
                where = getattr(entity, column) == identifier
                hit = s.scalars(select(entity).where(where)).first()
                if hit is not None:
                    return hit
        return None

    def update(self, entity: type[R], key: Any, **values: Any) -> R | None:
        with self.db.session() as s:
            record = s.get(entity, key)
            if record is None:
                return None
            for k, v in values.items():
                setattr(record, k, v)
            return record

    def remove(self, entity: type[R], key: Any) -> None:
        with self.db.session() as s:
            record = s.get(entity, key)
            if record is not None:
                s.delete(record)
