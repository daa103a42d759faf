"""The embedding side of the guardrail policies: one embed function, and what it caches.

The service hands in ``embed`` (texts -> unit-length rows, the local MiniLM model through
the model manager). Vectors that do not depend on the request are computed once: the
content classifier's training set (then the classifier itself) and each guardrail
version's topic references. Request texts are embedded in one call per evaluation.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import numpy as np

from outcrop.guardrails.content import ContentClassifier, labeled, train
from outcrop.guardrails.policies import Topic
from outcrop.guardrails.topics import TopicVectors, reference_texts

EmbedFn = Callable[[list[str]], Awaitable[np.ndarray]]

_TOPIC_CACHE_SIZE = 256


class PolicyVectors:
    def __init__(self, embed: EmbedFn) -> None:
        self.embed = embed
        self._classifier: ContentClassifier | None = None
        self._lock = asyncio.Lock()
        self._topics: OrderedDict[str, list[TopicVectors]] = OrderedDict()

    async def vectors(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, 0), np.float32)
        return await self.embed(texts)

    async def classifier(self) -> ContentClassifier:
        if self._classifier is None:
            async with self._lock:
                if self._classifier is None:
                    rows = labeled()
                    vectors = await self.embed([text for _, text in rows])
                    labels = [label for label, _ in rows]
                    self._classifier = await asyncio.to_thread(train, vectors, labels)
        return self._classifier

    async def topics(self, key: str, topics: list[Topic]) -> list[TopicVectors]:
        """Reference vectors of a guardrail version's topics (``key`` names the version)."""
        cached = self._topics.get(key)
        if cached is not None:
            self._topics.move_to_end(key)
            return cached
        texts: list[str] = []
        for t in topics:
            texts.extend(reference_texts(t.definition, t.examples))
        matrix = await self.embed(texts)
        out, row = [], 0
        for t in topics:
            n = 1 + len(t.examples)
            out.append(TopicVectors(t.name, matrix[row : row + n]))
            row += n
        self._topics[key] = out
        while len(self._topics) > _TOPIC_CACHE_SIZE:
            self._topics.popitem(last=False)
        return out
