"""Denied topics: a topic's definition and examples against the text, by embedding.

Every topic becomes reference vectors: its definition and each example (unit-length
MiniLM embeddings, computed once per guardrail version). A piece of text (a sentence,
or the whole text) is on the topic when its cosine similarity to an example reaches
``EXAMPLE_THRESHOLD``, or to the definition reaches ``DEFINITION_THRESHOLD``: a
definition is a description ("Questions about ...") and sits further from any one
sentence than an example does, so its bar is lower. Both were calibrated on the
project's labeled sentences (tests/data/guardrails/topics_eval.json; precision and
recall in docs/guardrails.md). ``tierConfig`` is accepted and does not change scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

EXAMPLE_THRESHOLD = 0.55
DEFINITION_THRESHOLD = 0.45


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
