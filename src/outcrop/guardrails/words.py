"""Word filters: custom words and phrases, and the managed PROFANITY list.

Matching is case-insensitive and on whole words: text and configured phrases are cut into
``\\w+`` tokens and a phrase matches a run of consecutive tokens ("ass" never matches
inside "class"; "hot dog" matches "Hot  Dog"). Tokens joined by punctuation in a phrase
("ass-fucker") match with any non-word separator. Lookup is a dict of token tuples, so a
10,000-word list costs the same per text as a ten-word one (a regex alternation of that
size scans every alternative at every position: tens of ms per 1,000 characters).

The PROFANITY list is the word list that ships with the ``better-profanity`` package
(917 entries, English; its last release is 0.7.0, 2020) minus the few entries that are not
profanity in ordinary text (names and ethnonyms the list over-reaches on, see
``_NOT_PROFANITY``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

_TOKEN = re.compile(r"\w+")
MAX_PHRASE_TOKENS = 12

# Entries of better-profanity's list that name people or peoples rather than swear.
_NOT_PROFANITY = {"asanchez", "arian", "aryan", "jesus", "god", "bimbo", "bimbos", "hell"}


@dataclass(frozen=True)
class WordHit:
    key: int  # index into the configured list
    start: int
    end: int


def tokens(text: str) -> list[tuple[str, int, int]]:
    return [(m.group(0).casefold(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


class WordMatcher:
    """Finds configured phrases in texts; built once per guardrail version."""

    def __init__(self, phrases: list[str]) -> None:
        self._index: dict[tuple[str, ...], int] = {}
        self._longest = 1
        for i, phrase in enumerate(phrases):
            key = tuple(t for t, _, _ in tokens(phrase))[:MAX_PHRASE_TOKENS]
            if key and key not in self._index:
                self._index[key] = i
                self._longest = max(self._longest, len(key))
        self._first = {key[0] for key in self._index}

    def __len__(self) -> int:
        return len(self._index)

    def find(self, text: str) -> list[WordHit]:
        """Every match, longest phrase first at each position, without overlaps."""
        toks = tokens(text)
        hits: list[WordHit] = []
        i = 0
        while i < len(toks):
            if toks[i][0] not in self._first:
                i += 1
                continue
            for n in range(min(self._longest, len(toks) - i), 0, -1):
                key = tuple(t for t, _, _ in toks[i : i + n])
                found = self._index.get(key)
                if found is not None:
                    hits.append(WordHit(found, toks[i][1], toks[i + n - 1][2]))
                    i += n
                    break
            else:
                i += 1
        return hits


@lru_cache(maxsize=1)
def profanity_words() -> tuple[str, ...]:
    """The managed PROFANITY list (from the ``better-profanity`` package's data)."""
    data = resources.files("better_profanity").joinpath("profanity_wordlist.txt").read_text()
    words = [w.strip() for w in data.splitlines() if w.strip()]
    return tuple(w for w in words if w.casefold() not in _NOT_PROFANITY)


@lru_cache(maxsize=1)
def profanity_matcher() -> WordMatcher:
    return WordMatcher(list(profanity_words()))
