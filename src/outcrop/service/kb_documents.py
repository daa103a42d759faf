"""Direct ingestion: Ingest/Delete/List/GetKnowledgeBaseDocuments.

Documents given inline (text or bytes) or by S3 location are parsed, chunked and embedded
within the request (at most 10 per call), so the answer already says INDEXED or FAILED
with the reason. Identifiers: a custom document's ``id``, or an S3 object's URI.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from typing import Any

from outcrop.errors import ValidationError
from outcrop.knowledge import ingest
from outcrop.knowledge.metadata import check_value, parse_sidecar, sidecar_name
from outcrop.knowledge.parsers import MIME_EXTENSIONS, DocumentError
from outcrop.knowledge.records import DataSourceRecord, DocumentRecord
from outcrop.knowledge.sources import Bucket, split_s3_uri
from outcrop.service.agent_fields import iso, page
from outcrop.service.fields import Obj
from outcrop.service.kb_config import parse_chunking
from outcrop.service.knowledge import KnowledgeService

MAX_DOCUMENTS = 10
_VALUE_MEMBERS = {
    "STRING": "stringValue",
    "NUMBER": "numberValue",
    "BOOLEAN": "booleanValue",
    "STRING_LIST": "stringListValue",
}


class _Doc:
    """One requested document: where it is, and (once read) its bytes and metadata."""

    def __init__(self, key: str, kind: str, name: str) -> None:
        self.key = key
        self.kind = kind  # S3 or CUSTOM
        self.name = name
        self.data = b""
        self.metadata: dict[str, Any] = {}
        self.source_uri: str | None = None
        """Where a CUSTOM document's bytes are (S3_LOCATION); an S3 document's own key."""
        self.metadata_uri: str | None = None
        self.error: str | None = None


class KnowledgeDocuments:
    def __init__(self, knowledge: KnowledgeService) -> None:
        self.knowledge = knowledge
        self.db = knowledge.db

    def _bucket_for(self, uri: str) -> tuple[Bucket, str]:
        try:
            bucket, key = split_s3_uri(uri)
        except ValueError as exc:
            raise ValidationError(str(exc)) from None
        return (
            Bucket(
                bucket,
                data_dir=self.knowledge.data_dir,
                endpoint_url=self.knowledge.s3_endpoint_url,
            ),
            key,
        )

    # ------------------------------------------------------------------ ingest

    async def ingest_knowledge_base_documents(
        self, kb_id: str, ds_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        ds = await asyncio.to_thread(self.knowledge.data_source, kb_id, ds_id)
        kb = self.knowledge.active_knowledge_base(kb_id)
        o = Obj.of(body, (), "converse")
        entries = o.objs("documents", required=True, non_empty=True)
        if len(entries) > MAX_DOCUMENTS:
            raise o.fail(
                "documents", f"Member must have length less than or equal to {MAX_DOCUMENTS}"
            )
        docs = [self._parse_document(ds, e) for e in entries]
        await asyncio.gather(*(asyncio.to_thread(self._read, d) for d in docs))
        config = parse_chunking(Obj.of(ds.ingestion, (), "converse") if ds.ingestion else None)
        store = await asyncio.to_thread(self.knowledge.stores.store, kb)
        embedder = await self.knowledge.stores.embedder(kb)
        prepared: list[tuple[_Doc, ingest.Prepared]] = []
        for d in docs:
            if d.error is not None:
                continue
            try:
                chunks = await ingest.chunk_document(d.name, d.data, config, embedder)
            except DocumentError as exc:
                d.error = exc.reason
                continue
            digest = ingest.content_hash(
                d.data, repr(d.metadata).encode(), config, embedder.model_id
            )
            prepared.append((d, ingest.Prepared(d.key, d.key, digest, d.metadata, chunks, True)))
        vectors = await ingest.embed_chunks(embedder, [p for _, p in prepared])
        for (d, p), v in zip(prepared, vectors, strict=True):
            n = await asyncio.to_thread(
                store.replace_document, ds_id, d.key, d.key, d.kind, d.metadata,
                ingest.new_chunks(p, v),
            )  # fmt: skip
            self.db.put_document(
                ds_id=ds_id, doc_key=d.key, kb_id=kb_id, source_type=d.kind,
                content_hash=p.content_hash, status="INDEXED", status_reason=None, job_id=None,
                chunks=n,
            )  # fmt: skip
        for d in docs:
            if d.error is not None:
                await asyncio.to_thread(store.delete_document, ds_id, d.key)
                self.db.put_document(
                    ds_id=ds_id, doc_key=d.key, kb_id=kb_id, source_type=d.kind,
                    content_hash=None, status="FAILED", status_reason=d.error, job_id=None,
                    chunks=0,
                )  # fmt: skip
        return {"documentDetails": [self._detail(kb_id, ds_id, d.kind, d.key) for d in docs]}

    def _parse_document(self, ds: DataSourceRecord, e: Obj) -> _Doc:
        content = e.obj("content", required=True)
        assert content is not None
        kind = content.string("dataSourceType", required=True, choices=("CUSTOM", "S3")) or ""
        if kind != ds.source_type:
            raise content.fail(
                "dataSourceType", f"must be {ds.source_type}, the type of data source {ds.ds_id}"
            )
        metadata = e.obj("metadata")
        if kind == "S3":
            s3 = content.obj("s3", required=True)
            loc = s3.obj("s3Location", required=True) if s3 else None
            uri = loc.string("uri", required=True) if loc else ""
            doc = _Doc(uri or "", "S3", uri or "")
            doc.source_uri = doc.key
            doc.metadata_uri = sidecar_name(doc.key)
        else:
            custom = content.obj("custom", required=True)
            assert custom is not None
            ident = custom.obj("customDocumentIdentifier", required=True)
            doc_id = (ident.string("id", required=True, non_empty=True) if ident else "") or ""
            if len(doc_id or "") > 2048:
                raise ident.fail("id", "Member must have length less than or equal to 2048")  # type: ignore[union-attr]
            source = custom.string("sourceType", required=True, choices=("IN_LINE", "S3_LOCATION"))
            doc = _Doc(doc_id or "", "CUSTOM", doc_id or "")
            if source == "IN_LINE":
                inline = custom.obj("inlineContent", required=True)
                assert inline is not None
                itype = inline.string("type", required=True, choices=("BYTE", "TEXT"))
                if itype == "TEXT":
                    text = inline.obj("textContent", required=True)
                    data = text.string("data", required=True, non_empty=True) if text else ""
                    doc.data, doc.name = (data or "").encode(), doc_id + ".txt"
                else:
                    byte = inline.obj("byteContent", required=True)
                    assert byte is not None
                    mime = byte.string("mimeType", required=True) or ""
                    ext = MIME_EXTENSIONS.get(mime.split(";")[0].strip().lower())
                    if ext is None:
                        raise byte.fail(
                            "mimeType",
                            f"{mime} is not supported; use one of {', '.join(MIME_EXTENSIONS)}",
                        )
                    try:
                        doc.data = base64.b64decode(
                            byte.string("data", required=True) or "", validate=True
                        )
                    except (binascii.Error, ValueError):
                        raise byte.fail("data", "must be base64-encoded") from None
                    doc.name = doc_id + ext
            else:
                loc = custom.obj("s3Location", required=True)
                uri = loc.string("uri", required=True) if loc else ""
                doc.source_uri = uri
                doc.name = uri or ""
        if metadata is not None:
            mtype = metadata.string(
                "type", required=True, choices=("IN_LINE_ATTRIBUTE", "S3_LOCATION")
            )
            if mtype == "IN_LINE_ATTRIBUTE":
                doc.metadata = _inline_attributes(metadata)
            else:
                loc = metadata.obj("s3Location", required=True)
                doc.metadata_uri = loc.string("uri", required=True) if loc else None
        return doc

    def _read(self, doc: _Doc) -> None:
        """Fetch what lives in S3 (content, metadata file); errors become the doc's reason."""
        try:
            if doc.source_uri:
                bucket, key = self._bucket_for(doc.source_uri)
                doc.data = bucket.read(key)
            meta_uri = doc.metadata_uri
            if meta_uri and not doc.metadata:
                bucket, key = self._bucket_for(meta_uri)
                try:
                    raw = bucket.read(key)
                except DocumentError:
                    if doc.kind == "S3" and meta_uri == sidecar_name(doc.key):
                        return  # an S3 document's sidecar is optional
                    raise
                doc.metadata = parse_sidecar(raw)
        except (DocumentError, ValidationError) as exc:
            doc.error = getattr(exc, "reason", None) or getattr(exc, "message", str(exc))

    # ------------------------------------------------------------------ the rest

    def _detail(self, kb_id: str, ds_id: str, kind: str, key: str) -> dict[str, Any]:
        record = self.db.get(DocumentRecord, ds_id, key)
        out: dict[str, Any] = {
            "knowledgeBaseId": kb_id,
            "dataSourceId": ds_id,
            "status": record.status if record else "NOT_FOUND",
            "identifier": _identifier(kind, key),
        }
        if record is not None:
            out["updatedAt"] = iso(record.updated_at)
            if record.status_reason:
                out["statusReason"] = record.status_reason
        return out

    def _identifiers(self, ds: DataSourceRecord, o: Obj) -> list[tuple[str, str]]:
        out = []
        for ident in o.objs("documentIdentifiers", required=True, non_empty=True):
            kind = ident.string("dataSourceType", required=True, choices=("CUSTOM", "S3")) or ""
            if kind == "S3":
                s3 = ident.obj("s3", required=True)
                key = s3.string("uri", required=True) if s3 else ""
            else:
                custom = ident.obj("custom", required=True)
                key = custom.string("id", required=True) if custom else ""
            out.append((kind, key or ""))
        if len(out) > MAX_DOCUMENTS:
            raise o.fail(
                "documentIdentifiers",
                f"Member must have length less than or equal to {MAX_DOCUMENTS}",
            )
        return out

    async def delete_knowledge_base_documents(
        self, kb_id: str, ds_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        ds = await asyncio.to_thread(self.knowledge.data_source, kb_id, ds_id)
        kb = self.knowledge.knowledge_base(kb_id)
        idents = self._identifiers(ds, Obj.of(body, (), "converse"))
        store = await asyncio.to_thread(self.knowledge.stores.store, kb)
        out = []
        for kind, key in idents:
            await asyncio.to_thread(store.delete_document, ds_id, key)
            known = self.db.get(DocumentRecord, ds_id, key) is not None
            self.db.delete_documents(ds_id, [key])
            detail = {
                "knowledgeBaseId": kb_id,
                "dataSourceId": ds_id,
                "status": "DELETE_IN_PROGRESS" if known else "NOT_FOUND",
                "identifier": _identifier(kind, key),
                "updatedAt": iso(time.time()),
            }
            out.append(detail)
        return {"documentDetails": out}

    def get_knowledge_base_documents(
        self, kb_id: str, ds_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        ds = self.knowledge.data_source(kb_id, ds_id)
        idents = self._identifiers(ds, Obj.of(body, (), "converse"))
        return {"documentDetails": [self._detail(kb_id, ds_id, k, key) for k, key in idents]}

    def list_knowledge_base_documents(
        self, kb_id: str, ds_id: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        self.knowledge.data_source(kb_id, ds_id)
        docs = sorted(self.db.documents(ds_id), key=lambda d: d.doc_key)
        items, token = page(docs, Obj.of(body, (), "converse"))
        out: dict[str, Any] = {
            "documentDetails": [
                {
                    "knowledgeBaseId": kb_id,
                    "dataSourceId": ds_id,
                    "status": d.status,
                    "identifier": _identifier(d.source_type, d.doc_key),
                    "updatedAt": iso(d.updated_at),
                    **({"statusReason": d.status_reason} if d.status_reason else {}),
                }
                for d in items
            ]
        }
        if token:
            out["nextToken"] = token
        return out


def _identifier(kind: str, key: str) -> dict[str, Any]:
    if kind == "S3":
        return {"dataSourceType": "S3", "s3": {"uri": key}}
    return {"dataSourceType": "CUSTOM", "custom": {"id": key}}


def _inline_attributes(metadata: Obj) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for attr in metadata.objs("inlineAttributes", required=True, non_empty=True):
        key = attr.string("key", required=True, non_empty=True) or ""
        value = attr.obj("value", required=True)
        assert value is not None
        vtype = value.string("type", required=True, choices=tuple(_VALUE_MEMBERS)) or ""
        member = _VALUE_MEMBERS[vtype]
        raw = value.value(member, required=True)
        try:
            out[key] = check_value(key, raw)
        except DocumentError as exc:
            raise value.fail(member, exc.reason) from None
    return out
