"""Guardrails and their versions, kept in the records database (:mod:`outcrop.db`).

One row per guardrail (identity, name, tags, the next version number) and one row per
version: ``DRAFT`` is edited in place by UpdateGuardrail; numbered versions are copies of
the DRAFT taken by CreateGuardrailVersion and never change afterwards.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column

from outcrop.db import Base, Database

DRAFT = "DRAFT"


class GuardrailRecord(Base):
    __tablename__ = "guardrails"

    guardrail_id: Mapped[str] = mapped_column(String(12), primary_key=True)
    arn: Mapped[str] = mapped_column(String(2048), unique=True)
    #: Unique per account, as on Bedrock (CreateGuardrail with a taken name is a Conflict).
    name: Mapped[str] = mapped_column(String(50), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    tags: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    client_request_token: Mapped[str | None] = mapped_column(String(256), default=None)
    #: The number CreateGuardrailVersion hands out next; never reused after a delete.
    next_version: Mapped[int] = mapped_column(Integer, default=1)


class GuardrailVersionRecord(Base):
    __tablename__ = "guardrail_versions"

    guardrail_id: Mapped[str] = mapped_column(
        String(12), ForeignKey("guardrails.guardrail_id", ondelete="CASCADE"), primary_key=True
    )
    #: ``DRAFT`` or a decimal number as a string ("1", "2", ...).
    version: Mapped[str] = mapped_column(String(8), primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    status: Mapped[str] = mapped_column(String(16), default="READY")
    blocked_input_messaging: Mapped[str] = mapped_column(Text)
    blocked_outputs_messaging: Mapped[str] = mapped_column(Text)
    kms_key_id: Mapped[str | None] = mapped_column(String(2048), default=None)
    #: :func:`outcrop.guardrails.policies.to_json` of the version's policies.
    policies: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class GuardrailStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.session = db.session
        db.create_tables()

    def create(self, guardrail: GuardrailRecord, draft: GuardrailVersionRecord) -> bool:
        """Insert a guardrail with its DRAFT; False when the name is taken."""
        try:
            with self.session() as s:
                s.add(guardrail)
                s.flush()
                s.add(draft)
        except IntegrityError:
            return False
        return True

    def guardrail(self, guardrail_id: str) -> GuardrailRecord | None:
        with self.session() as s:
            return s.get(GuardrailRecord, guardrail_id)

    def by_token(self, token: str) -> GuardrailRecord | None:
        with self.session() as s:
            where = GuardrailRecord.client_request_token == token
            return s.scalars(select(GuardrailRecord).where(where)).first()

    def guardrails(self) -> list[GuardrailRecord]:
        with self.session() as s:
            order = (GuardrailRecord.created_at, GuardrailRecord.guardrail_id)
            return list(s.scalars(select(GuardrailRecord).order_by(*order)))

    def version(self, guardrail_id: str, version: str) -> GuardrailVersionRecord | None:
        with self.session() as s:
            return s.get(GuardrailVersionRecord, (guardrail_id, version))

    def versions(self, guardrail_id: str) -> list[GuardrailVersionRecord]:
        """DRAFT first, then numbered versions in ascending order."""
        with self.session() as s:
            where = GuardrailVersionRecord.guardrail_id == guardrail_id
            rows = list(s.scalars(select(GuardrailVersionRecord).where(where)))
        return sorted(rows, key=lambda r: -1 if r.version == DRAFT else int(r.version))

    def update_draft(self, guardrail_id: str, **values: Any) -> GuardrailVersionRecord | None:
        """Rewrite the DRAFT (and the guardrail's name); None when it vanished meanwhile."""
        try:
            with self.session() as s:
                draft = s.get(GuardrailVersionRecord, (guardrail_id, DRAFT))
                guardrail = s.get(GuardrailRecord, guardrail_id)
                if draft is None or guardrail is None:
                    return None
                for key, value in values.items():
                    setattr(draft, key, value)
                guardrail.name = draft.name
                return draft
        except IntegrityError:
            raise NameTaken(values.get("name", "")) from None

    def snapshot(self, guardrail_id: str, description: str | None, now: float) -> str | None:
        """Copy the DRAFT to the next numbered version, atomically; the new number."""
        with self.session() as s:
            guardrail = s.get(GuardrailRecord, guardrail_id)
            draft = s.get(GuardrailVersionRecord, (guardrail_id, DRAFT))
            if guardrail is None or draft is None:
                return None
            number = str(guardrail.next_version)
            guardrail.next_version += 1
            s.add(
                GuardrailVersionRecord(
                    guardrail_id=guardrail_id,
                    version=number,
                    name=draft.name,
                    description=description if description is not None else draft.description,
                    status="READY",
                    blocked_input_messaging=draft.blocked_input_messaging,
                    blocked_outputs_messaging=draft.blocked_outputs_messaging,
                    kms_key_id=draft.kms_key_id,
                    policies=draft.policies,
                    created_at=now,
                    updated_at=now,
                )
            )
            return number

    def delete(self, guardrail_id: str, version: str | None) -> bool:
        """Delete one numbered version, or (``version=None``) the guardrail and all versions."""
        with self.session() as s:
            if version is None:
                for row in s.scalars(
                    select(GuardrailVersionRecord).where(
                        GuardrailVersionRecord.guardrail_id == guardrail_id
                    )
                ):
                    s.delete(row)
                guardrail = s.get(GuardrailRecord, guardrail_id)
                if guardrail is None:
                    return False
                s.delete(guardrail)
                return True
            row = s.get(GuardrailVersionRecord, (guardrail_id, version))
            if row is None:
                return False
            s.delete(row)
            return True


class NameTaken(Exception):
    """Another guardrail already has this name."""
