"""Guardrails: what the control-plane operations and ApplyGuardrail mean, as Bedrock-shaped
dicts, with no HTTP in sight.

A guardrail is a DRAFT that UpdateGuardrail rewrites, plus numbered versions that
CreateGuardrailVersion copies from the DRAFT and that never change. Runtime callers
(ApplyGuardrail, Converse's ``guardrailConfig``, InvokeModel's guardrail headers) name a
guardrail and a version; :meth:`GuardrailService.resolve` turns that into a compiled
:class:`~outcrop.guardrails.evaluate.Guardrail`, cached until the version changes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from outcrop.errors import (
    ConflictError,
    ResourceNotFoundError,
    ServiceQuotaExceededError,
    ValidationError,
)
from outcrop.guardrails.evaluate import Block, Guardrail, evaluate
from outcrop.guardrails.findings import Assessment
from outcrop.guardrails.policies import Source, from_json, to_json
from outcrop.guardrails.records import (
    DRAFT,
    GuardrailRecord,
    GuardrailStore,
    GuardrailVersionRecord,
    NameTaken,
)
from outcrop.guardrails.static import StaticEmbedder, load_or_distill
from outcrop.guardrails.vectors import EmbedFn, PolicyVectors
from outcrop.service import control_fields
from outcrop.service import guardrail_wire as wire
from outcrop.service.guardrail_config import (
    enum,
    invalid,
    items,
    parse_policies,
    render_policies,
    text,
)

EMBEDDING_MODEL = "sentence-transformers.all-minilm-l6-v2-v1:0"
MAX_GUARDRAILS = 100  # Bedrock's default quota per account and region
MAX_VERSIONS = 20  # numbered versions per guardrail, likewise

_NAME = re.compile(r"[0-9a-zA-Z-_]+")
_ID = re.compile(r"[a-z0-9]+")
_ARN = re.compile(r"arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/([a-z0-9]+)")
_VERSION = re.compile(r"[1-9][0-9]{0,7}|DRAFT")
_NUMERIC = re.compile(r"[1-9][0-9]{0,7}")
_TOKEN = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,254}[a-zA-Z0-9])?")
_KMS = re.compile(
    r"(arn:aws(-[^:]+)?:kms:[a-zA-Z0-9-]*:[0-9]{12}:((key/[a-zA-Z0-9-]{36})|"
    r"(alias/[a-zA-Z0-9-_/]+)))|([a-zA-Z0-9-]{36})|(alias/[a-zA-Z0-9-_/]+)"
)
_TAG = re.compile(r"[a-zA-Z0-9\s._:/=+@-]*")


class GuardrailService:
    def __init__(self, store: GuardrailStore, region: str, account_id: str, embed: EmbedFn):
        self.store = store
        self.region = region
        self.account_id = account_id
        self.embed = embed
        self.vectors = PolicyVectors(embed)
        self._compiled: dict[tuple[str, str, float], Guardrail] = {}
        if any(
            self._needs_vectors(v.policies)
            for g in store.guardrails()
            for v in store.versions(g.guardrail_id)
        ):
            self._warm()

    @staticmethod
    def _needs_vectors(policies: dict[str, Any]) -> bool:
        p = from_json(policies)
        return bool(p.topics or p.content_filters or p.grounding_filters)

    def _warm(self) -> None:
        warm = getattr(self.embed, "warm", None)
        if warm is not None:
            warm()

    def arn(self, guardrail_id: str) -> str:
        return f"arn:aws:bedrock:{self.region}:{self.account_id}:guardrail/{guardrail_id}"

    # ------------------------------------------------------------------ identifiers

    def _guardrail(self, identifier: str, member: str = "guardrailIdentifier") -> GuardrailRecord:
        if not isinstance(identifier, str) or len(identifier) > 2048:
            raise invalid(member, identifier, "Member must have length less than or equal to 2048")
        arn = _ARN.fullmatch(identifier)
        if arn is None and not _ID.fullmatch(identifier):
            raise invalid(
                member,
                identifier,
                "Member must satisfy regular expression pattern: "
                "(([a-z0-9]+)|(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+))",
            )
        guardrail_id = arn.group(2) if arn else identifier
        record = self.store.guardrail(guardrail_id)
        if record is None or (arn is not None and record.arn != identifier):
            raise ResourceNotFoundError(f"Guardrail {identifier} was not found.")
        return record

    def _version(self, record: GuardrailRecord, version: str | None) -> GuardrailVersionRecord:
        version = version or DRAFT
        if not _VERSION.fullmatch(version):
            raise invalid(
                "guardrailVersion",
                version,
                "Member must satisfy regular expression pattern: (([1-9][0-9]{0,7})|(DRAFT))",
            )
        row = self.store.version(record.guardrail_id, version)
        if row is None:
            raise ResourceNotFoundError(
                f"Guardrail {record.guardrail_id} has no version {version}."
            )
        return row

    # ------------------------------------------------------------------ control plane

    def _common(self, body: dict[str, Any]) -> dict[str, Any]:
        name = text(body, "name", "name", required=True, hi=50, pattern=_NAME)
        kms = text(body, "kmsKeyId", "kmsKeyId", hi=2048, pattern=_KMS)
        return {
            "name": name,
            "description": text(body, "description", "description", hi=200),
            "blocked_input_messaging": text(
                body, "blockedInputMessaging", "blockedInputMessaging", required=True, hi=500
            ),
            "blocked_outputs_messaging": text(
                body, "blockedOutputsMessaging", "blockedOutputsMessaging", required=True, hi=500
            ),
            "kms_key_id": kms,
            "policies": to_json(parse_policies(body)),
        }

    def create_guardrail(self, body: dict[str, Any]) -> dict[str, Any]:
        values = self._common(body)
        tags = _tags(body)
        token = text(body, "clientRequestToken", "clientRequestToken", hi=256, pattern=_TOKEN)
        if token is not None and (same := self.store.by_token(token)) is not None:
            return self._created(same)
        if len(self.store.guardrails()) >= MAX_GUARDRAILS:
            raise ServiceQuotaExceededError(
                f"This account already has {MAX_GUARDRAILS} guardrails, the most allowed."
            )
        now = time.time()
        guardrail_id = control_fields.new_id()
        record = GuardrailRecord(
            guardrail_id=guardrail_id,
            arn=self.arn(guardrail_id),
            name=values["name"],
            created_at=now,
            tags=tags,
            client_request_token=token,
            next_version=1,
        )
        draft = GuardrailVersionRecord(
            guardrail_id=guardrail_id, version=DRAFT, status="READY",
            created_at=now, updated_at=now, **values,
        )  # fmt: skip
        if not self.store.create(record, draft):
            raise ConflictError(f"A guardrail named {values['name']} already exists.")
        if self._needs_vectors(values["policies"]):
            self._warm()
        return self._created(record)

    def _created(self, record: GuardrailRecord) -> dict[str, Any]:
        return {
            "guardrailId": record.guardrail_id,
            "guardrailArn": record.arn,
            "version": DRAFT,
            "createdAt": record.created_at,
        }

    def get_guardrail(self, identifier: str, version: str | None) -> dict[str, Any]:
        record = self._guardrail(identifier)
        row = self._version(record, version)
        out: dict[str, Any] = {
            "name": row.name,
            "guardrailId": record.guardrail_id,
            "guardrailArn": record.arn,
            "version": row.version,
            "status": row.status,
            **render_policies(from_json(row.policies)),
            "createdAt": record.created_at if row.version == DRAFT else row.created_at,
            "updatedAt": row.updated_at,
            "blockedInputMessaging": row.blocked_input_messaging,
            "blockedOutputsMessaging": row.blocked_outputs_messaging,
        }
        if row.description:
            out["description"] = row.description
        if row.kms_key_id:
            out["kmsKeyArn"] = row.kms_key_id
        return out

    def list_guardrails(self, query: dict[str, str | None]) -> dict[str, Any]:
        identifier = query.get("guardrailIdentifier")
        rows: list[tuple[GuardrailRecord, GuardrailVersionRecord]] = []
        if identifier:
            record = self._guardrail(identifier)
            rows = [(record, v) for v in self.store.versions(record.guardrail_id)]
        else:
            for record in self.store.guardrails():
                draft = self.store.version(record.guardrail_id, DRAFT)
                if draft is not None:
                    rows.append((record, draft))
        page, token = control_fields.page(rows, query.get("maxResults"), query.get("nextToken"))
        summaries = []
        for record, row in page:
            summary = {
                "id": record.guardrail_id,
                "arn": record.arn,
                "status": row.status,
                "name": row.name,
                "version": row.version,
                "createdAt": record.created_at if row.version == DRAFT else row.created_at,
                "updatedAt": row.updated_at,
            }
            if row.description:
                summary["description"] = row.description
            summaries.append(summary)
        out: dict[str, Any] = {"guardrails": summaries}
        if token:
            out["nextToken"] = token
        return out

    def update_guardrail(self, identifier: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self._guardrail(identifier)
        values = self._common(body)
        now = time.time()
        try:
            draft = self.store.update_draft(record.guardrail_id, **values, updated_at=now)
        except NameTaken:
            raise ConflictError(f"A guardrail named {values['name']} already exists.") from None
        if draft is None:
            raise ResourceNotFoundError(f"Guardrail {identifier} was not found.")
        if self._needs_vectors(values["policies"]):
            self._warm()
        return {
            "guardrailId": record.guardrail_id,
            "guardrailArn": record.arn,
            "version": DRAFT,
            "updatedAt": now,
        }

    def delete_guardrail(self, identifier: str, version: str | None) -> None:
        record = self._guardrail(identifier)
        if version is not None and not _NUMERIC.fullmatch(version):
            raise invalid(
                "guardrailVersion",
                version,
                "Member must satisfy regular expression pattern: [1-9][0-9]{0,7}",
            )
        if not self.store.delete(record.guardrail_id, version):
            raise ResourceNotFoundError(
                f"Guardrail {identifier} has no version {version}."
                if version
                else f"Guardrail {identifier} was not found."
            )
        self._compiled = {k: v for k, v in self._compiled.items() if k[0] != record.guardrail_id}

    def create_guardrail_version(self, identifier: str, body: dict[str, Any]) -> dict[str, Any]:
        record = self._guardrail(identifier)
        description = text(body, "description", "description", hi=200)
        text(body, "clientRequestToken", "clientRequestToken", hi=256, pattern=_TOKEN)
        numbered = [v for v in self.store.versions(record.guardrail_id) if v.version != DRAFT]
        if len(numbered) >= MAX_VERSIONS:
            raise ServiceQuotaExceededError(
                f"Guardrail {record.guardrail_id} already has {MAX_VERSIONS} versions, the "
                "most allowed; delete one first."
            )
        number = self.store.snapshot(record.guardrail_id, description, time.time())
        if number is None:
            raise ResourceNotFoundError(f"Guardrail {identifier} was not found.")
        return {"guardrailId": record.guardrail_id, "version": number}

    # ------------------------------------------------------------------ runtime

    def resolve(self, identifier: str, version: str | None) -> Guardrail:
        """The compiled guardrail version a runtime request names."""
        record = self._guardrail(identifier)
        row = self._version(record, version)
        key = (record.guardrail_id, row.version, row.updated_at)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = Guardrail(
                guardrail_id=record.guardrail_id,
                version=row.version,
                arn=record.arn,
                blocked_input_messaging=row.blocked_input_messaging,
                blocked_outputs_messaging=row.blocked_outputs_messaging,
                policies=from_json(row.policies),
                key=f"{record.guardrail_id}:{row.version}:{row.updated_at}",
            )
            self._compiled = {k: v for k, v in self._compiled.items() if k[:2] != key[:2]}
            self._compiled[key] = compiled
        return compiled

    async def check(
        self, guardrail: Guardrail, blocks: list[Block], source: Source, *, full: bool = False
    ) -> Assessment:
        return await evaluate(guardrail, blocks, source, self.vectors, full=full)

    async def apply_guardrail(
        self, identifier: str, version: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        source = enum(body, "source", "source", ("INPUT", "OUTPUT"), None) or "INPUT"
        scope = enum(body, "outputScope", "outputScope", ("INTERVENTIONS", "FULL"), "INTERVENTIONS")
        blocks, images = _content_blocks(body)
        if not version:
            raise invalid("guardrailVersion", version, "Member must not be empty")
        guardrail = await asyncio.to_thread(self.resolve, identifier, version)
        full = scope == "FULL"
        a = await self.check(guardrail, blocks, source, full=full)  # type: ignore[arg-type]
        return wire.apply_response(a, guardrail, source, full=full, images_total=images)


def _content_blocks(body: dict[str, Any]) -> tuple[list[Block], int]:
    entries = items(body, "content", "content", 0, None, required=True)
    blocks: list[Block] = []
    images = 0
    for i, entry in enumerate(entries):
        member = f"content.{i + 1}"
        present = [k for k, v in entry.items() if v is not None]
        if len(present) != 1 or present[0] not in ("text", "image"):
            raise ValidationError(
                f"{member} must set exactly one of text, image (found: {', '.join(present) or 'none'})."
            )
        if present[0] == "image":
            images += 1
            continue
        block = entry["text"]
        if not isinstance(block, dict):
            raise invalid(f"{member}.text", block, "Member must be a structure")
        value = text(block, "text", f"{member}.text.text", required=True, lo=0)
        qualifiers = block.get("qualifiers") or []
        if not isinstance(qualifiers, list):
            raise invalid(f"{member}.text.qualifiers", qualifiers, "Member must be a list")
        for q in qualifiers:
            enum(
                {"q": q},
                "q",
                f"{member}.text.qualifiers",
                ("grounding_source", "query", "guard_content"),
                None,
            )
        blocks.append(Block(value or "", frozenset(qualifiers)))
    return blocks, images


def _tags(body: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, tag in enumerate(items(body, "tags", "tags", 0, 200)):
        key = text(tag, "key", f"tags.{i + 1}.key", required=True, hi=128, pattern=_TAG)
        value = text(tag, "value", f"tags.{i + 1}.value", required=True, lo=0, hi=256, pattern=_TAG)
        out[key or ""] = value or ""
    return out


class StaticEmbedding:
    """The policies' embed function: static MiniLM token vectors (:mod:`outcrop.guardrails.static`).

    Loading takes about a second, but the first distillation of a model file takes minutes,
    so it starts in the background as soon as a guardrail needs vectors (created, updated,
    or found at start-up) rather than inside the first request that evaluates one.
    """

    def __init__(self, store: Any, card: Any, cache_dir: Path) -> None:
        self.store = store
        self.card = card
        self.cache_dir = cache_dir
        self._loading: concurrent.futures.Future[StaticEmbedder] | None = None
        self._guard = threading.Lock()

    def warm(self) -> concurrent.futures.Future[StaticEmbedder]:
        """Start loading (or distilling) in a background thread; idempotent."""
        with self._guard:
            if self._loading is None or (
                self._loading.done() and self._loading.exception() is not None
            ):
                self._loading = concurrent.futures.Future()
                threading.Thread(
                    target=self._load, args=(self._loading,), name="guardrail-vectors", daemon=True
                ).start()
            return self._loading

    async def __call__(self, texts: list[str]) -> np.ndarray:
        loading = self.warm()
        embedder = loading.result() if loading.done() else await asyncio.wrap_future(loading)
        return embedder.embed(texts)

    def _load(self, future: concurrent.futures.Future[StaticEmbedder]) -> None:
        try:
            future.set_result(load_or_distill(self.store.ensure(self.card), self.cache_dir))
        except BaseException as exc:  # the waiting requests get the error, a later call retries
            future.set_exception(exc)
