"""Contextual grounding: GROUNDING and RELEVANCE scores in 0..1.

GROUNDING asks whether each sentence of the answer is supported by the source. A
sentence's support is the product of:

* meaning: its best cosine similarity to any source sentence (static MiniLM vectors),
  rescaled so 0.3 and below is 0 and 0.75 and above is 1;
* facts: ``0.4 + 0.6 x`` the share of its key words (numbers, and words of four or more
  letters minus stop words, a plural "s" dropped) that the source contains;
* numbers: a number the source does not contain multiplies the support by 0.35, because
  embeddings barely see "30 days" against "90 days".

The answer's score is the mean support of its sentences, weighted by their key words
(so "Sure, here you go." weighs little). Contradictions that reuse the source's words
("only in person" against "online or by phone") are not caught: docs/guardrails.md.

RELEVANCE asks whether the answer addresses the query: the best cosine similarity
between the query and the answer's sentences, rescaled from 0.2..0.7 to 0..1.

A filter intervenes when the score is below its threshold, as on Bedrock.
"""

from __future__ import annotations

import re

import numpy as np

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}|\d+(?:[.,]\d+)*")
_STOP = set(
    """this that these those with from have has had will would could should about there
    their they them then than what when where which while your yours also into only very
    just more most some such each other over under after before because being been were
    here does doing done make made like sure please thanks thank know help need want""".split()
)


def _rescale(value: float, lo: float, hi: float) -> float:
    return float(min(1.0, max(0.0, (value - lo) / (hi - lo))))


def key_words(text: str) -> list[str]:
    words = [w.casefold() for w in _WORD.findall(text)]
    return [w[:-1] if len(w) > 4 and w.endswith("s") else w for w in words if w not in _STOP]


def grounding_score(
    answer_sentences: list[str],
    answer_vectors: np.ndarray,
    source_text: str,
    source_vectors: np.ndarray,
) -> float:
    if not answer_sentences or source_vectors.shape[0] == 0:
        return 0.0
    source_words = set(key_words(source_text))
    source_numbers = {w for w in source_words if w[0].isdigit()}
    sims = answer_vectors @ source_vectors.T
    total = weight_sum = 0.0
    for i, sentence in enumerate(answer_sentences):
        words = key_words(sentence)
        meaning = _rescale(float(sims[i].max()), 0.3, 0.75)
        found = sum(w in source_words for w in words) / len(words) if words else 1.0
        support = meaning * (0.4 + 0.6 * found)
        if any(w[0].isdigit() and w not in source_numbers for w in words):
            support *= 0.35
        weight = max(1, len(words))
        total += support * weight
        weight_sum += weight
    return round(total / weight_sum, 4)


def relevance_score(query_vector: np.ndarray, answer_vectors: np.ndarray) -> float:
    if answer_vectors.shape[0] == 0:
        return 0.0
    return round(_rescale(float((answer_vectors @ query_vector).max()), 0.2, 0.7), 4)
