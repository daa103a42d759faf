"""Search one store: semantic (vectors) or hybrid (vectors + BM25), with filters.

Hybrid follows OpenSearch's normalization processor, which Bedrock's hybrid search
uses: each list of candidates is min-max normalized, and a chunk's score is the mean
of its two normalized scores (0 where a list lacks it). Semantic scores are cosine
similarity mapped to [0, 1] as ``(1 + cos) / 2``, OpenSearch's ``cosinesimil`` score.

Hierarchical chunks return their parent's text; several children of one parent
become one result (the best child's score).
"""

from __future__ import annotations

import numpy as np

from outcrop.knowledge.filters import Filter
from outcrop.knowledge.store import ChunkStore, Hit

CANDIDATES_PER_RESULT = 4
MIN_CANDIDATES = 50


def retrieve(
    store: ChunkStore,
    vector: np.ndarray,
    text: str,
    k: int,
    *,
    hybrid: bool = False,
    where: Filter | None = None,
) -> list[Hit]:
    pool = max(k * CANDIDATES_PER_RESULT, MIN_CANDIDATES)
    semantic = store.vector_search(vector, pool, where)
    if hybrid:
        scored = fuse(semantic, store.keyword_search(text, pool, where))
    else:
        scored = [(cid, (1.0 + cos) / 2.0) for cid, cos in semantic]
    out: list[Hit] = []
    seen: set[tuple[str, str]] = set()
    # Fetch k rows at a time: usually the first k are the answer (only children of one
    # parent collapse), and each fetched row costs a SQLite read and a JSON parse.
    for lo in range(0, len(scored), k):
        for hit in store.hits(scored[lo : lo + k]):
            key = (hit.doc_key, hit.text)  # children of one parent share its text
            if key in seen:
                continue
            seen.add(key)
            out.append(hit)
            if len(out) == k:
                return out
    return out


def fuse(
    semantic: list[tuple[int, float]], keyword: list[tuple[int, float]]
) -> list[tuple[int, float]]:
    """Mean of min-max normalized scores, best first."""
    total: dict[int, float] = {}
    for results in (semantic, keyword):
        if not results:
            continue
        scores = [s for _, s in results]
        lo, hi = min(scores), max(scores)
        for cid, s in results:
            norm = (s - lo) / (hi - lo) if hi > lo else 1.0
            total[cid] = total.get(cid, 0.0) + norm / 2.0
    return sorted(total.items(), key=lambda kv: -kv[1])
