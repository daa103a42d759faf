"""One sync of a data source into its knowledge base's store: resumable, incremental.

:func:`sync` lists the source, and for every document whose content hash (bytes, sidecar,
chunking settings, embedding model) differs from what the last sync recorded: parses,
chunks, embeds, and replaces its chunks in one store transaction, then records the new
hash. Documents gone from the source are deleted. A document that cannot be read or
parsed is recorded FAILED with its reason and counted; the sync goes on.

The documents table is the checkpoint: a sync interrupted anywhere (stop, crash, kill -9)
and run again skips what is already recorded and redoes the rest, so a resumed job ends
with the same store as an uninterrupted one. Counters live in the job record and are
updated after every batch; a document this job already handled (same job ID on its
record) is not counted twice. The job machinery (:mod:`outcrop.jobs`) runs it as an
``inline`` kind (see :mod:`outcrop.service.kb_jobs`).

Embedding runs across documents in batches of ``EMBED_BATCH`` chunks, so many small
files cost what a few large ones do (see docs/benchmarks.md for chunks/s against the
engine's own batched throughput).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from outcrop.knowledge.chunking import (
    Chunk,
    ChunkingConfig,
    Tokenizer,
    chunk,
    semantic_chunks,
    semantic_groups,
)
from outcrop.knowledge.metadata import parse_sidecar
from outcrop.knowledge.parsers import DocumentError, parse
from outcrop.knowledge.records import DocumentRecord, IngestionJobRecord, KnowledgeDatabase
from outcrop.knowledge.sources import Bucket, SourceObject
from outcrop.knowledge.store import ChunkStore, NewChunk

log = logging.getLogger("outcrop.knowledge")

EMBED_BATCH = 64
MAX_FAILURE_REASONS = 100


class Embedder(Protocol):
    tokenizer: Tokenizer
    model_id: str

    async def embed(self, texts: list[str]) -> np.ndarray:
        """Unit-length vectors, one per text, in order."""
        ...


class Stopped(Exception):
    """The job was asked to stop (or its knowledge base is being deleted)."""


@dataclass
class Prepared:
    """A document parsed and chunked, waiting for its vectors."""

    key: str
    uri: str
    content_hash: str
    metadata: dict[str, Any]
    chunks: list[Chunk]
    is_new: bool


@dataclass
class Statistics:
    scanned: int = 0
    metadata_scanned: int = 0
    new: int = 0
    modified: int = 0
    deleted: int = 0
    failed: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Statistics:
        return cls(**{k: int(v) for k, v in (d or {}).items() if k in cls.__dataclass_fields__})


@dataclass
class SyncContext:
    db: KnowledgeDatabase
    store: ChunkStore
    embedder: Embedder
    bucket: Bucket
    job: IngestionJobRecord
    config: ChunkingConfig
    should_stop: Callable[[], bool]
    report: Callable[[dict[str, Any]], None] = lambda progress: None
    """Where progress goes (the job's row): documents done of total, chunks stored."""
    failures: list[str] = field(default_factory=list)


def content_hash(data: bytes, sidecar: bytes | None, config: ChunkingConfig, model: str) -> str:
    h = hashlib.sha256()
    for part in (data, sidecar or b"", config.fingerprint().encode(), model.encode()):
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()


async def chunk_document(
    name: str, data: bytes, config: ChunkingConfig, embedder: Embedder
) -> list[Chunk]:
    """Parse and chunk one document (DocumentError if it cannot be read)."""
    text = await asyncio.to_thread(parse, name, data)
    if config.strategy != "semantic":
        chunks = await asyncio.to_thread(chunk, text, config, embedder.tokenizer)
    else:
        spans, groups = semantic_groups(text, config)
        vectors = await embedder.embed(groups) if groups else np.zeros((0, 1), np.float32)
        chunks = await asyncio.to_thread(
            semantic_chunks, text, spans, vectors, config, embedder.tokenizer
        )
    chunks = [c for c in chunks if c.text.strip()]
    if not chunks:
        raise DocumentError("The document has no text to index.")
    return chunks


async def embed_chunks(embedder: Embedder, prepared: list[Prepared]) -> list[np.ndarray]:
    """Vectors for every chunk of ``prepared``, embedded together; one array per document."""
    texts = [c.text for p in prepared for c in p.chunks]
    vectors = await embedder.embed(texts) if texts else np.zeros((0, 1), np.float32)
    out, start = [], 0
    for p in prepared:
        out.append(vectors[start : start + len(p.chunks)])
        start += len(p.chunks)
    return out


def new_chunks(prepared: Prepared, vectors: np.ndarray) -> list[NewChunk]:
    return [NewChunk(c.text, v, c.parent) for c, v in zip(prepared.chunks, vectors, strict=True)]


async def sync(ctx: SyncContext) -> Statistics:
    """Run (or resume) the job's sync; raises Stopped if asked to stop."""
    job = ctx.job
    stats = Statistics.from_dict(job.statistics)
    ctx.failures = list(job.failure_reasons or [])
    objects = await asyncio.to_thread(ctx.bucket.objects)
    stats.scanned = len(objects)
    stats.metadata_scanned = sum(1 for o in objects if o.sidecar)
    known = {d.doc_key: d for d in await asyncio.to_thread(ctx.db.documents, job.ds_id)}
    _save(ctx, stats, done=0, total=len(objects))

    pending: list[Prepared] = []
    done = 0
    for obj in objects:
        _check(ctx)
        prepared = await _prepare(ctx, obj, known.get(obj.uri), stats)
        done += 1
        if prepared is not None:
            pending.append(prepared)
        if sum(len(p.chunks) for p in pending) >= EMBED_BATCH:
            await _write(ctx, pending, stats)
            pending = []
            _save(ctx, stats, done, len(objects))
    await _write(ctx, pending, stats)

    listed = {o.uri for o in objects}
    for key, record in known.items():
        if key in listed:
            continue
        _check(ctx)
        await asyncio.to_thread(ctx.store.delete_document, job.ds_id, key)
        await asyncio.to_thread(ctx.db.delete_documents, job.ds_id, [key])
        if record.status == "INDEXED":
            stats.deleted += 1
    _save(ctx, stats, len(objects), len(objects))
    return stats


def _check(ctx: SyncContext) -> None:
    if ctx.should_stop():
        raise Stopped()


async def _prepare(
    ctx: SyncContext, obj: SourceObject, record: DocumentRecord | None, stats: Statistics
) -> Prepared | None:
    job = ctx.job
    try:
        data = await asyncio.to_thread(ctx.bucket.read, obj.key)
        sidecar = await asyncio.to_thread(ctx.bucket.read, obj.sidecar) if obj.sidecar else None
    except DocumentError as exc:
        await _fail(ctx, obj.uri, exc.reason, None, record, stats)
        return None
    digest = content_hash(data, sidecar, ctx.config, ctx.embedder.model_id)
    if record is not None and record.content_hash == digest:
        if record.status == "INDEXED" or record.job_id == job.job_id:
            return None  # unchanged, or already handled by this job before a restart
    try:
        metadata = parse_sidecar(sidecar) if sidecar is not None else {}
        chunks = await chunk_document(obj.key, data, ctx.config, ctx.embedder)
    except DocumentError as exc:
        await _fail(ctx, obj.uri, exc.reason, digest, record, stats)
        return None
    is_new = record is None or record.status != "INDEXED"
    return Prepared(obj.uri, obj.uri, digest, metadata, chunks, is_new)


async def _fail(
    ctx: SyncContext,
    uri: str,
    reason: str,
    digest: str | None,
    record: DocumentRecord | None,
    stats: Statistics,
) -> None:
    job = ctx.job
    if record is not None and record.job_id == job.job_id and record.status == "FAILED":
        return  # counted before a restart
    log.info("ingestion %s: %s failed: %s", job.job_id, uri, reason)
    stats.failed += 1
    if len(ctx.failures) < MAX_FAILURE_REASONS:
        ctx.failures.append(f"{uri}: {reason}")
    if record is not None and record.status == "INDEXED":
        # The document changed into something unreadable: its old chunks must go too.
        await asyncio.to_thread(ctx.store.delete_document, job.ds_id, uri)
    await asyncio.to_thread(
        ctx.db.put_document,
        ds_id=job.ds_id, doc_key=uri, kb_id=job.kb_id, source_type="S3",
        content_hash=digest, status="FAILED", status_reason=reason, job_id=job.job_id,
        chunks=0,
    )  # fmt: skip


async def _write(ctx: SyncContext, pending: list[Prepared], stats: Statistics) -> None:
    if not pending:
        return
    job = ctx.job
    vectors = await embed_chunks(ctx.embedder, pending)
    for p, v in zip(pending, vectors, strict=True):
        _check(ctx)
        n = await asyncio.to_thread(
            ctx.store.replace_document, job.ds_id, p.key, p.uri, "S3", p.metadata,
            new_chunks(p, v),
        )  # fmt: skip
        await asyncio.to_thread(
            ctx.db.put_document,
            ds_id=job.ds_id, doc_key=p.key, kb_id=job.kb_id, source_type="S3",
            content_hash=p.content_hash, status="INDEXED", status_reason=None,
            job_id=job.job_id, chunks=n,
        )  # fmt: skip
        if p.is_new:
            stats.new += 1
        else:
            stats.modified += 1


def _save(ctx: SyncContext, stats: Statistics, done: int, total: int) -> None:
    ctx.db.update(
        IngestionJobRecord,
        ctx.job.job_id,
        statistics=stats.to_dict(),
        failure_reasons=list(ctx.failures),
    )
    ctx.report({"documents_done": done, "documents_total": total, "chunks": ctx.store.count()})
