"""Denied topics: a topic's definition and examples against the text, by embedding.

Every topic becomes reference vectors: its definition and each example (unit-length
MiniLM embeddings, computed once per guardrail version). A piece of text (a sentence,
or the whole text) is on the topic when its cosine similarity to an example reaches
``EXAMPLE_THRESHOLD``, or to the definition reaches ``DEFINITION_THRESHOLD``. Vectors
are the static MiniLM token vectors (:mod:`outcrop.guardrails.static`). Both thresholds
were chosen by a grid search for the best F1 on the project's labeled sentences
(tests/data/guardrails/topics_eval.json; precision and recall in docs/guardrails.md):
a definition is long and general, so near-miss sentences come close to it, and its bar
ends up higher. ``tierConfig`` is accepted and does not change scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXAMPLE_THRESHOLD = 0.50
DEFINITION_THRESHOLD = 0.58


@dataclass
class TopicVectors:
    """Reference vectors of one topic: row 0 is the definition, the rest its examples."""

    name: str
    vectors: np.ndarray


def reference_texts(definition: str, examples: list[str]) -> list[str]:
    return [definition, *examples]


def topic_score(topic: TopicVectors, pieces: np.ndarray) -> float:
    """How strongly the pieces are on the topic, in threshold units (>= 1 means yes)."""
    sims = pieces @ topic.vectors.T  # (pieces, 1 + examples)
    best = float(sims[:, 0].max()) / DEFINITION_THRESHOLD
    if sims.shape[1] > 1:
        best = max(best, float(sims[:, 1:].max()) / EXAMPLE_THRESHOLD)
    return best
