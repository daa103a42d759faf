"""What both knowledge-base surfaces share: each knowledge base's open store, and an
embedder bound to its embedding model.

Stores open lazily (loading one rebuilds its vector index from SQLite) and stay open;
``forget`` closes one whose knowledge base is deleted.
"""

from __future__ import annotations

import re
import shutil
import threading
from pathlib import Path

import numpy as np

from outcrop.engines.base import EmbeddingEngine
from outcrop.knowledge.chunking import Offsets, Tokenizer
from outcrop.knowledge.records import KnowledgeBaseRecord
from outcrop.knowledge.store import ChunkStore
from outcrop.service.embeddings import EmbeddingService

_WORD = re.compile(r"\S+")


class _Tokens:
    """Token offsets from the model's tokenizer (words, for an engine without one)."""

    def __init__(self, engine: EmbeddingEngine) -> None:
        self.engine = engine

    def offsets(self, text: str) -> Offsets:
        try:
            return self.engine.token_offsets(text)
        except NotImplementedError:
            return [m.span() for m in _WORD.finditer(text)]


class ModelEmbedder:
    """A knowledge base's embedding model, as :mod:`outcrop.knowledge.ingest` needs it."""

    def __init__(
        self, service: EmbeddingService, model_id: str, dimensions: int, engine: EmbeddingEngine
    ) -> None:
        self.service = service
        self.model_id = model_id
        self.dimensions = dimensions
        self.tokenizer: Tokenizer = _Tokens(engine)

    async def embed(self, texts: list[str]) -> np.ndarray:
        out = await self.service.embed(
            self.model_id, texts, dimensions=self.dimensions, truncate="END"
        )
        return np.asarray(out.vectors, np.float32).reshape(len(texts), self.dimensions)


class KnowledgeStores:
    def __init__(self, root: Path, embeddings: EmbeddingService) -> None:
        self.root = Path(root)
        self.embeddings = embeddings
        self._stores: dict[str, ChunkStore] = {}
        self._lock = threading.Lock()

    def path(self, kb_id: str) -> Path:
        return self.root / kb_id / "chunks.sqlite"

    def store(self, kb: KnowledgeBaseRecord) -> ChunkStore:
        with self._lock:
            store = self._stores.get(kb.kb_id)
            if store is None:
                store = ChunkStore(self.path(kb.kb_id), kb.dimensions)
                self._stores[kb.kb_id] = store
            return store

    def forget(self, kb_id: str) -> None:
        """Close and delete a knowledge base's store."""
        with self._lock:
            store = self._stores.pop(kb_id, None)
        if store is not None:
            store.close()
        shutil.rmtree(self.root / kb_id, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            for store in self._stores.values():
                store.close()
            self._stores.clear()

    async def embedder(self, kb: KnowledgeBaseRecord) -> ModelEmbedder:
        card = self.embeddings.card(kb.embedding_model)
        engine = await self.embeddings.manager.engine(card)
        if not isinstance(engine, EmbeddingEngine):
            raise TypeError(f"{card.model_id} loaded a {type(engine).__name__}")
        return ModelEmbedder(self.embeddings, kb.embedding_model, kb.dimensions, engine)
