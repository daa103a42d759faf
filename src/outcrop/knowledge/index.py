"""The in-memory vector index of one knowledge base: exact below a size, IVF above.

Rows are unit vectors (cosine = dot product), each with its chunk id and a document
slot (filters are evaluated once per document, not per chunk). Up to ``exact_limit``
rows every query scans them all (numpy BLAS: ~1 ms per 10k rows at d=384). Past that, an
inverted-file index (k-means lists, ``sqrt(n)`` of them) narrows the scan to the
``nprobe`` lists nearest the query; rows added since the last training sit in a tail that
is always scanned exactly, and the lists are retrained in the background of ``add``
once the tail outgrows a quarter of the trained rows. Filtered queries are exact over
the rows that pass the filter. See docs/benchmarks.md for latency and recall@10.

The index is a cache: :class:`~outcrop.knowledge.store.ChunkStore` rebuilds it from
SQLite on open, so nothing here needs to survive a crash.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

EXACT_LIMIT = 20_000
NPROBE_FRACTION = 0.08  # share of lists probed; recall@10 >= 0.95 measured at 100k
_KMEANS_SAMPLE = 16_384
_KMEANS_ITERATIONS = 8


@dataclass
class _Ivf:
    centroids: np.ndarray  # (nlist, d)
    order: np.ndarray  # positions sorted by list
    bounds: np.ndarray  # (nlist + 1,) start of each list in ``order``
    trained: int  # rows [0, trained) are in the lists; the rest is the tail
    vectors: np.ndarray  # rows in ``order``: a probed list is one contiguous slice


class VectorIndex:
    def __init__(self, dimensions: int, exact_limit: int = EXACT_LIMIT) -> None:
        self.dimensions = dimensions
        self.exact_limit = exact_limit
        self._vectors = np.zeros((1024, dimensions), np.float32)
        self._ids = np.zeros(1024, np.int64)
        self._slots = np.zeros(1024, np.int32)
        self._alive = np.zeros(1024, bool)
        self._n = 0
        self._live = 0
        self._position: dict[int, int] = {}
        self._ivf: _Ivf | None = None
        self._lock = threading.RLock()
        self._training = False
        self._trainer: threading.Thread | None = None
        self._blas = None

    def _one_blas_thread(self):  # noqa: ANN202
        """One BLAS thread for a query's matrix-vector products: on a busy 2-core machine
        OpenBLAS's threads measured 2x slower than one (10k x 384: 9.8 vs 4.7 ms)."""
        if self._blas is None:
            from threadpoolctl import ThreadpoolController

            self._blas = ThreadpoolController()
        return self._blas.limit(limits=1, user_api="blas")

    def __len__(self) -> int:
        return self._live

    # ------------------------------------------------------------------ writes

    def add(self, ids: Sequence[int], vectors: np.ndarray, slots: Sequence[int]) -> None:
        m = len(ids)
        if m == 0:
            return
        v = np.asarray(vectors, np.float32).reshape(m, self.dimensions)
        with self._lock:
            self._grow(self._n + m)
            lo, hi = self._n, self._n + m
            self._vectors[lo:hi] = v
            self._ids[lo:hi] = ids
            self._slots[lo:hi] = slots
            self._alive[lo:hi] = True
            for k, chunk_id in enumerate(ids):
                self._position[int(chunk_id)] = lo + k
            self._n = hi
            self._live += m
        self._maybe_train()

    def remove(self, ids: Sequence[int]) -> None:
        with self._lock:
            for chunk_id in ids:
                pos = self._position.pop(int(chunk_id), None)
                if pos is not None and self._alive[pos]:
                    self._alive[pos] = False
                    self._live -= 1

    def _grow(self, need: int) -> None:
        cap = len(self._ids)
        if need <= cap:
            return
        while cap < need:
            cap *= 2
        for name in ("_vectors", "_ids", "_slots", "_alive"):
            old = getattr(self, name)
            new = np.zeros((cap,) + old.shape[1:], old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)

    # ------------------------------------------------------------------ training

    def _maybe_train(self, wait: bool = False) -> None:
        with self._lock:
            trained = self._ivf.trained if self._ivf else 0
            due = self._live > self.exact_limit and (self._n - trained) * 4 > max(trained, 1)
            if not due or self._training:
                return
            self._training = True
            n = self._n
            snapshot = self._vectors[:n].copy()
        if wait:
            self._train(snapshot, n)
        else:
            self._trainer = threading.Thread(target=self._train, args=(snapshot, n), daemon=True)
            self._trainer.start()

    def train_now(self) -> None:
        """Finish any training under way, then train now if due (benchmarks, tests)."""
        if self._trainer is not None:
            self._trainer.join()
        self._maybe_train(wait=True)

    def _train(self, vectors: np.ndarray, n: int) -> None:
        try:
            ivf = build_ivf(vectors)
            with self._lock:
                self._ivf = ivf
        finally:
            self._training = False

    # ------------------------------------------------------------------ search

    def search(
        self, query: np.ndarray, k: int, slot_mask: np.ndarray | None = None
    ) -> list[tuple[int, float]]:
        """Up to ``k`` ``(chunk id, cosine)`` pairs, best first.

        ``slot_mask[slot]`` False drops every row of that document (a filter), and makes
        the search exact over what is left.
        """
        q = np.asarray(query, np.float32).reshape(self.dimensions)
        with self._lock, self._one_blas_thread():
            n = self._n
            if n == 0 or k <= 0:
                return []
            keep = self._alive[:n]
            if slot_mask is not None:
                keep = keep & slot_mask[self._slots[:n]]
            if slot_mask is None and self._ivf is not None:
                positions, scores = self._probe(q, self._ivf, n)
                alive = keep[positions]
                positions, scores = positions[alive], scores[alive]
            elif bool(keep.all()):
                positions, scores = np.arange(n), self._vectors[:n] @ q
            else:
                positions = np.flatnonzero(keep)
                scores = self._vectors[positions] @ q
            if len(positions) == 0:
                return []
            top = _top(scores, k)
            return [(int(self._ids[positions[t]]), float(scores[t])) for t in top]

    def _probe(self, q: np.ndarray, ivf: _Ivf, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Positions and scores of the rows in the nearest lists, plus the tail."""
        nlist = len(ivf.centroids)
        nprobe = max(1, int(round(nlist * NPROBE_FRACTION)))
        near = _top(ivf.centroids @ q, nprobe)
        pos = [ivf.order[ivf.bounds[c] : ivf.bounds[c + 1]] for c in near]
        sco = [ivf.vectors[ivf.bounds[c] : ivf.bounds[c + 1]] @ q for c in near]
        pos.append(np.arange(ivf.trained, n))
        sco.append(self._vectors[ivf.trained : n] @ q)
        return np.concatenate(pos), np.concatenate(sco)

    def exact(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Brute force over every live row (the recall baseline)."""
        mask = np.ones(int(self._slots[: self._n].max(initial=0)) + 1, bool)
        return self.search(query, k, slot_mask=mask)


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    if k >= len(scores):
        return np.argsort(-scores)
    part = np.argpartition(-scores, k)[:k]
    return part[np.argsort(-scores[part])]


def build_ivf(vectors: np.ndarray, seed: int = 0) -> _Ivf:
    """k-means (``sqrt(n)`` lists) on a sample, then every row assigned to its nearest."""
    n = len(vectors)
    nlist = max(1, int(np.sqrt(n)))
    rng = np.random.default_rng(seed)
    sample = vectors[rng.choice(n, min(n, _KMEANS_SAMPLE), replace=False)]
    centroids = sample[rng.choice(len(sample), nlist, replace=False)].copy()
    for _ in range(_KMEANS_ITERATIONS):
        assign = np.argmax(sample @ centroids.T, axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, sample)
        counts = np.bincount(assign, minlength=nlist)
        empty = counts == 0
        sums[empty] = sample[rng.choice(len(sample), int(empty.sum()))]
        centroids = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    assign = np.empty(n, np.int64)
    for lo in range(0, n, 8192):  # bounded memory: (8192, nlist) scores at a time
        assign[lo : lo + 8192] = np.argmax(vectors[lo : lo + 8192] @ centroids.T, axis=1)
    order = np.argsort(assign, kind="stable")
    bounds = np.searchsorted(assign[order], np.arange(nlist + 1))
    return _Ivf(centroids.astype(np.float32), order, bounds, n, vectors[order])
