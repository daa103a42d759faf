"""Content filters: HATE, INSULTS, SEXUAL, VIOLENCE, MISCONDUCT, PROMPT_ATTACK.

A classifier per category over sentence embeddings of the local MiniLM model: logistic
regression, one category against the benign sentences (``data/content_train.tsv``,
written by the project; many benign lines are near-misses such as "kill a process"),
trained in a few milliseconds the first time a guardrail needs it and kept for the
process. A text's score for a category is the highest probability over its pieces
(sentences and the whole text).

Bedrock reports a *confidence* (NONE/LOW/MEDIUM/HIGH) and blocks by *strength*: HIGH
strength blocks LOW, MEDIUM and HIGH confidence; MEDIUM blocks MEDIUM and HIGH; LOW
blocks HIGH only; NONE blocks nothing. The probability cut-offs between the confidence
levels (``CONFIDENCE_CUTS``) were chosen on the training exemplars and their precision
and recall measured on the held-out set (docs/guardrails.md, benchmarks/guardrail_quality.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np

CATEGORIES = ("HATE", "INSULTS", "SEXUAL", "VIOLENCE", "MISCONDUCT", "PROMPT_ATTACK")
CONFIDENCE_CUTS = (("HIGH", 0.85), ("MEDIUM", 0.6), ("LOW", 0.35))
_LEVEL = {"NONE": 0, "LOW": 1, "MEDIUM": 2, "HIGH": 3}
# The lowest confidence each strength blocks.
_BLOCKS_FROM = {"HIGH": "LOW", "MEDIUM": "MEDIUM", "LOW": "HIGH"}


def confidence(probability: float) -> str:
    for level, cut in CONFIDENCE_CUTS:
        if probability >= cut:
            return level
    return "NONE"


def blocks(strength: str, level: str) -> bool:
    """Whether a filter at ``strength`` acts on a detection at confidence ``level``."""
    floor = _BLOCKS_FROM.get(strength)
    return floor is not None and _LEVEL[level] >= _LEVEL[floor]


@lru_cache(maxsize=4)
def labeled(name: str = "content_train.tsv") -> tuple[tuple[str, str], ...]:
    """``(label, text)`` pairs of a packaged TSV (``#`` lines are comments)."""
    raw = resources.files("outcrop.guardrails").joinpath("data", name).read_text()
    return tuple(parse_tsv(raw))


def parse_tsv(raw: str) -> list[tuple[str, str]]:
    rows = []
    for line in raw.splitlines():
        if line.strip() and not line.startswith("#"):
            label, _, text = line.partition("\t")
            rows.append((label.strip(), text.strip()))
    return rows


@dataclass
class ContentClassifier:
    """One weight vector and bias per category, over unit-length embeddings."""

    weights: np.ndarray  # (categories, dims)
    bias: np.ndarray  # (categories,)

    def probabilities(self, vectors: np.ndarray) -> np.ndarray:
        """(pieces, categories) probabilities for unit-length piece vectors."""
        return 1.0 / (1.0 + np.exp(-(vectors @ self.weights.T + self.bias)))


def train(vectors: np.ndarray, labels: list[str], *, l2: float = 1e-3) -> ContentClassifier:
    """Logistic regression per category: its sentences vs the benign (NONE) ones.

    Full-batch gradient descent on the mean log-loss plus an L2 penalty; positives are
    weighted to balance the classes. Deterministic (zero start), a few ms for 200 rows.
    """
    dims = vectors.shape[1]
    weights = np.zeros((len(CATEGORIES), dims), np.float64)
    bias = np.zeros(len(CATEGORIES), np.float64)
    y_all = np.array(labels)
    for k, category in enumerate(CATEGORIES):
        rows = (y_all == category) | (y_all == "NONE")
        x = vectors[rows].astype(np.float64)
        y = (y_all[rows] == category).astype(np.float64)
        sample_w = np.where(y == 1, 0.5 / max(y.mean(), 1e-9), 0.5 / max(1 - y.mean(), 1e-9))
        w, b = np.zeros(dims), 0.0
        for _ in range(800):
            p = 1.0 / (1.0 + np.exp(-(x @ w + b)))
            g = (p - y) * sample_w / len(y)
            w -= 4.0 * (x.T @ g + l2 * w)
            b -= 4.0 * g.sum()
        weights[k], bias[k] = w, b
    return ContentClassifier(weights.astype(np.float32), bias.astype(np.float32))
