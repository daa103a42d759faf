"""Stop-sequence matching over streamed text.

Text that might be the start of a stop sequence is held back until the next piece
decides it, so a client never sees part of a stop sequence.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self._pending = ""

    def feed(self, text: str) -> tuple[str, str | None]:
        """Add text; return (text safe to emit, the stop sequence hit or None)."""
        if not self.stops:
            return text, None
        buf = self._pending + text
        hit_at, hit = -1, None
        for stop in self.stops:
            i = buf.find(stop)
            if i != -1 and (hit_at == -1 or i < hit_at):
                hit_at, hit = i, stop
        if hit is not None:
            self._pending = ""
            return buf[:hit_at], hit
        keep = self._held_suffix(buf)
        self._pending = buf[len(buf) - keep :] if keep else ""
        return buf[: len(buf) - keep], None

    def flush(self) -> str:
        """At the end of generation, held-back text was not a stop after all."""
        out, self._pending = self._pending, ""
        return out

    def _held_suffix(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of a stop."""
        best = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
