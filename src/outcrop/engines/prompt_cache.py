"""Host-memory prompt cache: saved KV state of token prefixes, LRU-bounded.

One cache per server, shared by every loaded text engine under one byte budget
(``--prompt-cache-mb``). An entry belongs to one *owner* — an engine instance, named
from the model ID and its weights' identity — and is only ever offered back to that
owner, so nothing leaks between models, custom models or reloads of a file. Unloading
a model drops its entries.

The engine decides what an entry holds (an opaque state blob plus the tokens it
encodes); this module only indexes, bounds and evicts. Dedup follows llama-server's
host prompt cache: a prefix already contained in an entry is not stored again, and an
entry contained in a new one is replaced by it (when the owner can truncate states).
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def default_capacity_mb() -> int:
    """1/16 of physical memory, at most 4 GiB (1.5 GiB on a 24 GB machine): room for
    dozens of long prefixes of a small model without crowding out the models."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (OSError, ValueError):
        return 1024
    return max(64, min(4096, total // 16 // 2**20))


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists (slice compares run in C)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    i = 0
    while i + 64 <= n and a[i : i + 64] == b[i : i + 64]:
        i += 64
    while i < n and a[i] == b[i]:
        i += 1
    return i


@dataclass(eq=False)
class CachedPrefix:
    owner: str
    tokens: list[int]
    data: Any
    """The engine's state blob (a ctypes buffer or bytes)."""
    size: int
    pos_min: int = 0
    """Smallest position every layer's saved state still holds (sliding-window models
    keep only the window): the entry is only usable at lengths the window allows."""
    ttl: float | None = None
    """Seconds an explicit cache point lives after its last use; None: LRU only."""
    last_used: float = field(default_factory=time.monotonic)

    def expired(self, now: float) -> bool:
        return self.ttl is not None and now - self.last_used > self.ttl


@dataclass
class OwnerStats:
    entries: int = 0
    bytes: int = 0
    stored: int = 0
    evictions: int = 0


class PromptCache:
    """A byte-bounded LRU of saved prefixes. Thread-safe: engines run in their own threads."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = max(0, capacity_bytes)
        self._entries: OrderedDict[int, CachedPrefix] = OrderedDict()
        self._lock = threading.Lock()
        self._owners: dict[str, OwnerStats] = {}
        self.bytes = 0

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    def stats(self, owner: str) -> OwnerStats:
        with self._lock:
            s = self._owners.get(owner)
            return OwnerStats(**vars(s)) if s else OwnerStats()

    def _owner(self, owner: str) -> OwnerStats:
        return self._owners.setdefault(owner, OwnerStats())

    def _remove(self, entry: CachedPrefix, *, evicted: bool) -> None:
        del self._entries[id(entry)]
        self.bytes -= entry.size
        s = self._owner(entry.owner)
        s.entries -= 1
        s.bytes -= entry.size
        if evicted:
            s.evictions += 1

    def _expire(self, now: float) -> None:
        for entry in [e for e in self._entries.values() if e.expired(now)]:
            self._remove(entry, evicted=True)

    def lookup(
        self, owner: str, tokens: list[int], usable: Callable[[CachedPrefix, int], int]
    ) -> tuple[CachedPrefix | None, int]:
        """The owner's entry sharing the longest usable prefix with ``tokens``.

        ``usable(entry, common)`` says how many of the ``common`` leading tokens the
        engine can really take from that entry (0 if none).
        """
        best: CachedPrefix | None = None
        best_n = 0
        with self._lock:
            self._expire(time.monotonic())
            for entry in self._entries.values():
                if entry.owner != owner:
                    continue
                n = usable(entry, common_prefix(entry.tokens, tokens))
                if n > best_n:
                    best, best_n = entry, n
        return best, best_n

    def touch(self, entry: CachedPrefix) -> None:
        """A hit: most recently used again, and its TTL starts over."""
        with self._lock:
            if id(entry) in self._entries:
                entry.last_used = time.monotonic()
                self._entries.move_to_end(id(entry))

    def contains(self, owner: str, tokens: list[int], *, truncatable: bool) -> bool:
        with self._lock:
            return self._holder(owner, tokens, truncatable) is not None

    def _holder(self, owner: str, tokens: list[int], truncatable: bool) -> CachedPrefix | None:
        n = len(tokens)
        for entry in self._entries.values():
            if entry.owner != owner:
                continue
            if entry.tokens == tokens or (
                truncatable and len(entry.tokens) > n and entry.tokens[:n] == tokens
            ):
                return entry
        return None

    def put(
        self,
        owner: str,
        tokens: list[int],
        data: Any,
        size: int,
        *,
        pos_min: int = 0,
        ttl: float | None = None,
        truncatable: bool = True,
    ) -> bool:
        """Store a prefix; evicts least recently used entries to make room.

        Returns True when a new entry was written; False when the entry alone exceeds
        the budget (nothing evicted) or another entry already holds the prefix (that
        entry is refreshed instead).
        """
        if size > self.capacity_bytes or not tokens:
            return False
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            holder = self._holder(owner, tokens, truncatable)
            if holder is not None:
                holder.last_used = now
                if ttl is not None:
                    holder.ttl = max(holder.ttl or 0.0, ttl)
                self._entries.move_to_end(id(holder))
                return False
            if truncatable:
                n = len(tokens)
                for old in [
                    e
                    for e in self._entries.values()
                    if e.owner == owner
                    and len(e.tokens) < n
                    and tokens[: len(e.tokens)] == e.tokens
                ]:
                    if old.ttl is not None:
                        ttl = max(ttl or 0.0, old.ttl)
                    self._remove(old, evicted=False)
            while self._entries and self.bytes + size > self.capacity_bytes:
                _, victim = next(iter(self._entries.items()))
                self._remove(victim, evicted=True)
            entry = CachedPrefix(owner, list(tokens), data, size, pos_min, ttl)
            self._entries[id(entry)] = entry
            self.bytes += size
            s = self._owner(owner)
            s.entries += 1
            s.bytes += size
            s.stored += 1
            return True

    def drop(self, owner: str) -> int:
        """Forget every entry of ``owner`` (its model was unloaded); returns the count."""
        with self._lock:
            mine = [e for e in self._entries.values() if e.owner == owner]
            for entry in mine:
                self._remove(entry, evicted=False)
            self._owners.pop(owner, None)
            return len(mine)
