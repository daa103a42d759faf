"""bedrock-agent's knowledge bases, data sources and ingestion jobs: what they mean,
with no HTTP in sight. Answers are Bedrock's shapes as plain dicts.

A knowledge base is created CREATING and turns ACTIVE once its store is open; deleting
one stops its ingestion jobs (waiting for them to end) before its store and records go.
``storageConfiguration`` is kept and returned as sent: outcrop's own store
(:mod:`outcrop.knowledge.store`) serves every knowledge base. Ingestion jobs run in the
background as the ``inline`` job kind of :mod:`outcrop.service.kb_jobs` and resume after a
restart; the job operations are in :mod:`outcrop.service.kb_jobs`, direct ingestion
(the ``*KnowledgeBaseDocuments`` operations) in :mod:`outcrop.service.kb_documents`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path
from typing import Any

from outcrop.db import Database
from outcrop.errors import ConflictError, OutcropError, ResourceNotFoundError, ValidationError
from outcrop.jobs.records import ACTIVE
from outcrop.jobs.runner import JobRunner
from outcrop.knowledge.records import (
    DataSourceRecord,
    IngestionJobRecord,
    KnowledgeBaseRecord,
    KnowledgeDatabase,
)
from outcrop.knowledge.sources import Bucket
from outcrop.service.agent_fields import (
    client_token,
    iso,
    length,
    new_id,
    paged,
    pattern,
    request,
)
from outcrop.service.embeddings import check_dimensions
from outcrop.service.fields import Obj
from outcrop.service.kb_config import parse_chunking
from outcrop.service.kb_stores import KnowledgeStores

log = logging.getLogger("outcrop.knowledge")

NAME = re.compile(r"([0-9a-zA-Z][_-]?){1,100}")
ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
BUCKET_ARN = re.compile(r"arn:aws(|-cn|-us-gov):s3:::([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])")
ID = re.compile(r"[0-9a-zA-Z]{10}")
KB_TYPES = ("VECTOR", "KENDRA", "SQL", "MANAGED")
SOURCE_TYPES = (
    "S3", "WEB", "CONFLUENCE", "SALESFORCE", "SHAREPOINT", "CUSTOM", "REDSHIFT_METADATA",
    "MANAGED_KNOWLEDGE_BASE_CONNECTOR",
)  # fmt: skip


class KnowledgeService:
    def __init__(
        self,
        data_dir: Path,
        stores: KnowledgeStores,
        db: Database,
        runner: JobRunner,
        region: str,
        account_id: str,
        s3_endpoint_url: str | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.stores = stores
        self.embeddings = stores.embeddings
        self.region = region
        self.account_id = account_id
        self.s3_endpoint_url = s3_endpoint_url
        self.db = KnowledgeDatabase(db)
        self.runner = runner
        self._background: set[asyncio.Task[None]] = set()
        self.closing = False
        """Set at shutdown: running syncs end at their next check and are resumed later."""
        self.live: set[asyncio.Future[Any]] = set()
        """The running syncs' coroutines (on the server's loop)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """On the server's loop: finish what a previous server left (creates, deletes);
        the job runner resumes interrupted ingestion jobs itself."""
        for kb in self.db.knowledge_bases():
            if kb.status == "CREATING":
                self._spawn(self._activate(kb.kb_id))
            elif kb.status == "DELETING":
                self._spawn(self._delete_knowledge_base(kb.kb_id))

    async def close(self) -> None:
        """Before the job runner closes: end running syncs at their next check, so the
        runner's join is quick (they stay resumable: see
        :meth:`outcrop.service.kb_jobs.IngestionJobs.run`)."""
        self.closing = True
        if self.live:
            await asyncio.wait(list(self.live), timeout=15)
        for task in list(self._background):
            task.cancel()
        self.stores.close()

    def _spawn(self, work) -> None:  # noqa: ANN001
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ------------------------------------------------------------------ lookups

    def kb_arn(self, kb_id: str) -> str:
        return f"arn:aws:bedrock:{self.region}:{self.account_id}:knowledge-base/{kb_id}"

    def knowledge_base(self, identifier: str) -> KnowledgeBaseRecord:
        """By ID (or ARN, as Retrieve's path accepts)."""
        kb_id = identifier.rsplit("/", 1)[-1] if identifier.startswith("arn:") else identifier
        kb = self.db.get(KnowledgeBaseRecord, kb_id) if kb_id else None
        if kb is None:
            raise ResourceNotFoundError(f"Knowledge base {identifier} does not exist.")
        return kb

    def active_knowledge_base(self, identifier: str) -> KnowledgeBaseRecord:
        """The knowledge base, if it can serve. One still CREATING is finished here (its
        store opens in milliseconds), so a client that does not poll for ACTIVE between
        CreateKnowledgeBase and its first sync or query is not refused for it."""
        kb = self.knowledge_base(identifier)
        if kb.status == "CREATING":
            self.activate(kb.kb_id)
            kb = self.knowledge_base(identifier)
        if kb.status not in ("ACTIVE", "UPDATING"):
            raise ConflictError(f"Knowledge base {kb.kb_id} is {kb.status}, not ACTIVE.")
        return kb

    def data_source(self, kb_id: str, ds_id: str) -> DataSourceRecord:
        self.knowledge_base(kb_id)
        ds = self.db.get(DataSourceRecord, ds_id)
        if ds is None or ds.kb_id != kb_id:
            raise ResourceNotFoundError(
                f"Data source {ds_id} does not exist in knowledge base {kb_id}."
            )
        return ds

    # ------------------------------------------------------------------ knowledge bases

    def _embedding(self, config: Obj) -> tuple[str, int]:
        """The knowledge base's embedding model (as sent) and the vector width it stores."""
        kb_type = config.string("type", required=True, choices=KB_TYPES)
        if kb_type != "VECTOR":
            raise config.fail("type", f"{kb_type} knowledge bases are not supported; use VECTOR")
        vector = config.obj("vectorKnowledgeBaseConfiguration", required=True)
        assert vector is not None
        model = vector.string("embeddingModelArn", required=True) or ""
        try:
            card = self.embeddings.card(model)
        except OutcropError:
            raise ValidationError(
                f"The embedding model {model} is not available on this server."
            ) from None
        if not card.is_embedding:
            raise ValidationError(
                f"The model {model} ({card.model_id}) is not an embedding model; "
                "knowledge bases need one for embeddingModelArn."
            )
        dims = card.embedding_dimensions or 0
        emc = vector.obj("embeddingModelConfiguration")
        bedrock = emc.obj("bedrockEmbeddingModelConfiguration") if emc else None
        if bedrock is not None:
            if bedrock.string("embeddingDataType", choices=("FLOAT32", "BINARY")) == "BINARY":
                raise bedrock.fail("embeddingDataType", "BINARY is not supported; use FLOAT32")
            asked = bedrock.integer("dimensions", minimum=0, maximum=4096)
            if asked:
                dims = check_dimensions(asked, dims, "dimensions")
        return model, dims

    async def create_knowledge_base(self, body: dict[str, Any]) -> dict[str, Any]:
        kb = await asyncio.to_thread(self._create_knowledge_base, body)
        if kb.status == "CREATING":
            self._spawn(self._activate(kb.kb_id))
        return {"knowledgeBase": self.kb_dict(kb)}

    def _create_knowledge_base(self, body: dict[str, Any]) -> KnowledgeBaseRecord:
        o = request(body)
        name = pattern(o, "name", NAME, required=True, max_len=100) or ""
        role = pattern(o, "roleArn", ROLE_ARN, required=True) or ""
        description = length(o, "description", 1, 200)
        token = client_token(o)
        config = o.obj("knowledgeBaseConfiguration", required=True)
        assert config is not None
        storage = o.obj("storageConfiguration")
        o.value("tags")
        if token is not None:
            for kb in self.db.knowledge_bases():
                if kb.client_token == token:
                    if kb.name != name:
                        raise ConflictError(f"The client token {token} was used for {kb.name}.")
                    return kb
        model, dims = self._embedding(config)
        if self.db.knowledge_base_by_name(name) is not None:
            raise ConflictError(f"A knowledge base named {name} already exists.")
        kb_id = new_id()
        now = time.time()
        record = KnowledgeBaseRecord(
            kb_id=kb_id, name=name, arn=self.kb_arn(kb_id), role_arn=role,
            description=description, configuration=config.data,
            storage=storage.data if storage else None, tags=body.get("tags") or {},
            embedding_model=model, dimensions=dims, status="CREATING", failure_reasons=[],
            client_token=token, created_at=now, updated_at=now,
        )  # fmt: skip
        self.db.add(record)
        return record

    async def _activate(self, kb_id: str) -> None:
        await asyncio.to_thread(self.activate, kb_id)

    def activate(self, kb_id: str) -> None:
        """CREATING -> ACTIVE once the store is open (FAILED, with the reason, if not)."""
        kb = self.db.get(KnowledgeBaseRecord, kb_id)
        if kb is None or kb.status != "CREATING":
            return
        try:
            self.stores.store(kb)
        except Exception as exc:
            log.exception("knowledge base %s: store failed to open", kb_id)
            self.db.update(KnowledgeBaseRecord, kb_id, status="FAILED", failure_reasons=[str(exc)])
            return
        with self.db.session() as s:
            record = s.get(KnowledgeBaseRecord, kb_id)
            if record is not None and record.status == "CREATING":
                record.status = "ACTIVE"
                record.updated_at = time.time()

    def kb_dict(self, kb: KnowledgeBaseRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "knowledgeBaseId": kb.kb_id,
            "name": kb.name,
            "knowledgeBaseArn": kb.arn,
            "roleArn": kb.role_arn,
            "knowledgeBaseConfiguration": kb.configuration,
            "status": kb.status,
            "createdAt": iso(kb.created_at),
            "updatedAt": iso(kb.updated_at),
        }
        if kb.description:
            out["description"] = kb.description
        if kb.storage:
            out["storageConfiguration"] = kb.storage
        if kb.failure_reasons:
            out["failureReasons"] = kb.failure_reasons
        return out

    def get_knowledge_base(self, kb_id: str) -> dict[str, Any]:
        return {"knowledgeBase": self.kb_dict(self.knowledge_base(kb_id))}

    def update_knowledge_base(self, kb_id: str, body: dict[str, Any]) -> dict[str, Any]:
        kb = self.knowledge_base(kb_id)
        if kb.status == "DELETING":
            raise ConflictError(f"Knowledge base {kb_id} is being deleted.")
        o = request(body)
        name = pattern(o, "name", NAME, required=True, max_len=100) or ""
        role = pattern(o, "roleArn", ROLE_ARN, required=True) or ""
        description = length(o, "description", 1, 200)
        config = o.obj("knowledgeBaseConfiguration", required=True)
        assert config is not None
        model, dims = self._embedding(config)
        if (
            self.embeddings.card(model).model_id
            != self.embeddings.card(kb.embedding_model).model_id
            or dims != kb.dimensions
        ):
            raise ValidationError(
                "The embedding model of a knowledge base cannot be changed; create a new one."
            )
        other = self.db.knowledge_base_by_name(name)
        if other is not None and other.kb_id != kb.kb_id:
            raise ConflictError(f"A knowledge base named {name} already exists.")
        storage = o.obj("storageConfiguration")
        kb = self.db.update(
            KnowledgeBaseRecord, kb.kb_id, name=name, role_arn=role, description=description,
            configuration=config.data, storage=storage.data if storage else kb.storage,
        )  # fmt: skip
        return {"knowledgeBase": self.kb_dict(kb)}

    def list_knowledge_bases(self, body: dict[str, Any]) -> dict[str, Any]:
        kbs = sorted(self.db.knowledge_bases(), key=lambda k: k.created_at)
        return paged(
            "knowledgeBaseSummaries",
            kbs,
            request(body),
            lambda k: {
                "knowledgeBaseId": k.kb_id,
                "name": k.name,
                "status": k.status,
                "updatedAt": iso(k.updated_at),
                **({"description": k.description} if k.description else {}),
            },
        )

    async def delete_knowledge_base(self, kb_id: str) -> dict[str, Any]:
        kb = await asyncio.to_thread(self.knowledge_base, kb_id)
        if kb.status != "DELETING":
            self.db.update(KnowledgeBaseRecord, kb.kb_id, status="DELETING")
            self._spawn(self._delete_knowledge_base(kb.kb_id))
        return {"knowledgeBaseId": kb.kb_id, "status": "DELETING"}

    async def _delete_knowledge_base(self, kb_id: str) -> None:
        """Stop its jobs (and wait for them), then remove the store and every record."""
        await self.stop_jobs(kb_id=kb_id)
        await asyncio.to_thread(self.stores.forget, kb_id)
        await asyncio.to_thread(self._delete_records, kb_id)

    def _delete_records(self, kb_id: str) -> None:
        for ds in self.db.data_sources(kb_id):
            self.db.delete_documents(ds.ds_id)
            self.db.delete(DataSourceRecord, ds.ds_id)
        for record, row in self.db.jobs(kb_id=kb_id):
            self.db.delete(IngestionJobRecord, record.job_id)
            self.runner.store.delete(row.job_id)
        self.db.delete(KnowledgeBaseRecord, kb_id)

    # ------------------------------------------------------------------ data sources

    def _source_config(self, o: Obj) -> tuple[str, dict[str, Any]]:
        config = o.obj("dataSourceConfiguration", required=True)
        assert config is not None
        kind = config.string("type", required=True, choices=SOURCE_TYPES) or ""
        if kind == "S3":
            s3 = config.obj("s3Configuration", required=True)
            assert s3 is not None
            pattern(s3, "bucketArn", BUCKET_ARN, required=True)
            prefixes = s3.array("inclusionPrefixes")
            if len(prefixes) > 1:
                raise s3.fail(
                    "inclusionPrefixes", "Member must have length less than or equal to 1"
                )
            for p in prefixes:
                if not isinstance(p, str) or not 1 <= len(p) <= 300:
                    raise s3.fail("inclusionPrefixes", "each prefix must be 1 to 300 characters")
        elif kind != "CUSTOM":
            raise config.fail("type", f"{kind} data sources are not supported; use S3 or CUSTOM")
        return kind, config.data

    def create_data_source(self, kb_id: str, body: dict[str, Any]) -> dict[str, Any]:
        kb = self.knowledge_base(kb_id)
        if kb.status == "DELETING":
            raise ConflictError(f"Knowledge base {kb_id} is being deleted.")
        o = request(body)
        name = pattern(o, "name", NAME, required=True, max_len=100) or ""
        description = length(o, "description", 1, 200)
        token = client_token(o)
        policy = o.string("dataDeletionPolicy", choices=("RETAIN", "DELETE")) or "DELETE"
        kind, config = self._source_config(o)
        ingestion = o.obj("vectorIngestionConfiguration")
        parse_chunking(ingestion)
        existing = self.db.data_sources(kb.kb_id)
        for ds in existing:
            if token is not None and ds.client_token == token:
                return {"dataSource": self.ds_dict(ds)}
            if ds.name == name:
                raise ConflictError(f"A data source named {name} already exists in {kb_id}.")
        now = time.time()
        record = DataSourceRecord(
            ds_id=new_id(), kb_id=kb.kb_id, name=name, description=description,
            source_type=kind, configuration=config,
            ingestion=ingestion.data if ingestion else None, deletion_policy=policy,
            status="AVAILABLE", client_token=token, created_at=now, updated_at=now,
        )  # fmt: skip
        self.db.add(record)
        return {"dataSource": self.ds_dict(record)}

    def ds_dict(self, ds: DataSourceRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "knowledgeBaseId": ds.kb_id,
            "dataSourceId": ds.ds_id,
            "name": ds.name,
            "status": ds.status,
            "dataSourceConfiguration": ds.configuration,
            "dataDeletionPolicy": ds.deletion_policy,
            "createdAt": iso(ds.created_at),
            "updatedAt": iso(ds.updated_at),
        }
        if ds.description:
            out["description"] = ds.description
        if ds.ingestion:
            out["vectorIngestionConfiguration"] = ds.ingestion
        return out

    def get_data_source(self, kb_id: str, ds_id: str) -> dict[str, Any]:
        return {"dataSource": self.ds_dict(self.data_source(kb_id, ds_id))}

    def update_data_source(self, kb_id: str, ds_id: str, body: dict[str, Any]) -> dict[str, Any]:
        ds = self.data_source(kb_id, ds_id)
        o = request(body)
        name = pattern(o, "name", NAME, required=True, max_len=100) or ""
        description = length(o, "description", 1, 200)
        policy = o.string("dataDeletionPolicy", choices=("RETAIN", "DELETE")) or ds.deletion_policy
        kind, config = self._source_config(o)
        if kind != ds.source_type:
            raise ValidationError("The type of a data source cannot be changed.")
        ingestion = o.obj("vectorIngestionConfiguration")
        new = parse_chunking(ingestion)
        old = parse_chunking(Obj.of(ds.ingestion, (), "converse") if ds.ingestion else None)
        if ingestion is not None and new != old:
            raise ValidationError(
                "The chunking configuration of a data source cannot be changed after it is "
                "created; create a new data source."
            )
        for other in self.db.data_sources(kb_id):
            if other.name == name and other.ds_id != ds_id:
                raise ConflictError(f"A data source named {name} already exists in {kb_id}.")
        ds = self.db.update(
            DataSourceRecord, ds_id, name=name, description=description,
            deletion_policy=policy, configuration=config,
        )  # fmt: skip
        return {"dataSource": self.ds_dict(ds)}

    def list_data_sources(self, kb_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.knowledge_base(kb_id)
        sources = sorted(self.db.data_sources(kb_id), key=lambda d: d.created_at)
        return paged(
            "dataSourceSummaries",
            sources,
            request(body),
            lambda d: {
                "knowledgeBaseId": d.kb_id,
                "dataSourceId": d.ds_id,
                "name": d.name,
                "status": d.status,
                "updatedAt": iso(d.updated_at),
                **({"description": d.description} if d.description else {}),
            },
        )

    async def delete_data_source(self, kb_id: str, ds_id: str) -> dict[str, Any]:
        ds = await asyncio.to_thread(self.data_source, kb_id, ds_id)
        self.db.update(DataSourceRecord, ds_id, status="DELETING")
        await self.stop_jobs(ds_id=ds_id)
        if ds.deletion_policy == "DELETE":
            kb = self.knowledge_base(kb_id)
            await asyncio.to_thread(self.stores.store(kb).delete_data_source, ds_id)
        self.db.delete_documents(ds_id)
        self.db.delete(DataSourceRecord, ds_id)
        return {"knowledgeBaseId": kb_id, "dataSourceId": ds_id, "status": "DELETING"}

    # ------------------------------------------------------------------ ingestion

    async def stop_jobs(
        self, *, kb_id: str | None = None, ds_id: str | None = None, timeout: float = 60
    ) -> None:
        """Stop the active ingestion jobs of a knowledge base or data source, and wait
        until each has ended."""
        active = [
            row.job_id
            for _, row in await asyncio.to_thread(self.db.jobs, ds_id=ds_id, kb_id=kb_id)
            if row.state in ACTIVE
        ]
        for job_id in active:
            await asyncio.to_thread(self.runner.stop, job_id)
        deadline = time.monotonic() + timeout
        while active and time.monotonic() < deadline:
            rows = await asyncio.to_thread(self.runner.store.many, active)
            active = [j for j, row in rows.items() if row.state in ACTIVE]
            if active:
                await asyncio.sleep(0.1)
        if active:
            log.warning("ingestion jobs %s did not stop within %.0f s", active, timeout)

    def kb_going(self, kb_id: str) -> bool:
        kb = self.db.get(KnowledgeBaseRecord, kb_id)
        return kb is None or kb.status == "DELETING"

    def bucket(self, ds: DataSourceRecord) -> Bucket:
        s3 = ds.configuration.get("s3Configuration") or {}
        match = BUCKET_ARN.fullmatch(s3.get("bucketArn", ""))
        if match is None:
            raise ValidationError(f"Data source {ds.ds_id} has no valid bucketArn.")
        prefixes = s3.get("inclusionPrefixes") or [""]
        return Bucket(
            match.group(2), prefixes[0], data_dir=self.data_dir, endpoint_url=self.s3_endpoint_url
        )
