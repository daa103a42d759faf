"""What an embedding call means: resolve the model, validate, embed, shape the vectors.

Every wire format (InvokeModel's Titan and Cohere bodies, OpenAI's /v1/embeddings) comes
through :meth:`EmbeddingService.embed`; the quantizations Bedrock's families offer are here
too, as plain functions of the float vectors::

    result = await service.embed("sentence-transformers.all-minilm-l6-v2-v1:0", ["hi"])
    len(result.vectors[0]), result.input_tokens     # (384, 3): [CLS] hi [SEP]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from outcrop.engines.base import EmbeddingEngine
from outcrop.errors import ValidationError
from outcrop.models.catalog import ModelCard
from outcrop.models.manager import ModelManager
from outcrop.models.resolve import ModelResolver

TRUNCATE_MODES = ("NONE", "START", "END")


@dataclass
class EmbedResult:
    vectors: list[list[float]]
    input_tokens: int
    per_text_tokens: list[int]
    """Tokens the model read for each text (after truncation, special tokens included)."""


class EmbeddingService:
    def __init__(self, resolver: ModelResolver, manager: ModelManager) -> None:
        self.resolver = resolver
        self.manager = manager

    def card(self, model_id: str) -> ModelCard:
        """The card ``model_id`` resolves to (raises for unknown IDs, like every operation)."""
        return self.resolver.resolve(model_id).card

    def is_embedding_model(self, model_id: str) -> bool:
        return self.card(model_id).is_embedding

    async def embed(
        self,
        model_id: str,
        texts: list[str],
        *,
        normalize: bool = True,
        dimensions: int | None = None,
        truncate: str = "END",
    ) -> EmbedResult:
        """Embed ``texts`` (one vector each, in order).

        ``dimensions`` below the model's keeps the leading components (Matryoshka-style;
        renormalized when ``normalize``); above it is a ValidationError. ``truncate`` is
        ``NONE`` (a text over the model's token limit is a ValidationError), ``START`` or
        ``END`` (drop tokens from that end).
        """
        card = self.card(model_id)
        if not card.is_embedding:
            raise ValidationError(
                f"Model {card.model_id} produces {', '.join(card.output_modalities)}, not "
                "embeddings; this operation needs an embedding model."
            )
        _check_texts(texts)
        mode = truncate.upper() if isinstance(truncate, str) else truncate
        if mode not in TRUNCATE_MODES:
            raise ValidationError(f"truncate must be one of {', '.join(TRUNCATE_MODES)}.")
        full = card.embedding_dimensions or 0
        if dimensions is not None:
            check_dimensions(dimensions, full)
        engine = await self.manager.engine(card)
        if not isinstance(engine, EmbeddingEngine):  # a card/engine mismatch is our bug
            raise TypeError(f"{card.model_id} loaded a {type(engine).__name__}")
        out = await engine.embed(texts, truncate=mode)  # type: ignore[arg-type]
        vectors = out.vectors
        if dimensions is not None and dimensions < vectors.shape[1]:
            vectors = vectors[:, :dimensions]
        if normalize:
            vectors = l2_normalize(vectors)
        return EmbedResult(vectors.tolist(), sum(out.tokens), out.tokens)


def check_dimensions(dimensions: object, model_dimensions: int, field: str = "dimensions") -> int:
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise ValidationError(f"{field} must be a positive integer.")
    if dimensions > model_dimensions:
        raise ValidationError(
            f"{field}={dimensions} cannot be served: this model produces "
            f"{model_dimensions}-dimensional embeddings. Ask for {model_dimensions} or fewer."
        )
    return dimensions


def _check_texts(texts: object) -> None:
    if not isinstance(texts, list) or not texts:
        raise ValidationError("texts must be a non-empty list of strings.")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValidationError(f"texts[{i}] must be a string.")
        if not text:
            raise ValidationError(f"texts[{i}] must not be empty.")


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# --------------------------------------------------------------------------- quantization


def quantize(vectors: Sequence[Sequence[float]] | np.ndarray, kind: str) -> list[list[int]]:
    """Integer forms of unit-length float vectors.

    * ``int8`` / ``uint8``: one byte per component on a fixed grid, so integer dot products
      stay proportional to the float ones across texts (a per-vector scale would distort
      them). A component of a random unit vector in d dimensions has standard deviation
      1/sqrt(d); the grid spans +-6 of those (+-0.306 at d=384, where MiniLM's largest
      component seen is ~0.28) and clips beyond. ``uint8`` is the same grid shifted by 128.
    * ``binary`` / ``ubinary`` (Cohere): sign bits (component > 0), packed 8 per byte, first
      component in the most significant bit; ``binary`` is the byte minus 128 (int8),
      ``ubinary`` the byte itself. 384 dimensions give 48 values.
    * ``bits`` (Titan Text Embeddings V2's ``binary``): one 0/1 per component.
    """
    v = np.asarray(vectors, dtype=np.float32)
    if kind in ("int8", "uint8"):
        scale = 127 / (6 / math.sqrt(v.shape[1]))
        q = np.clip(np.rint(v * scale), -128, 127).astype(np.int16)
        return (q + 128 if kind == "uint8" else q).tolist()
    if kind in ("binary", "ubinary"):
        packed = np.packbits(v > 0, axis=1).astype(np.int16)
        return (packed - 128 if kind == "binary" else packed).tolist()
    if kind == "bits":
        return (v > 0).astype(np.int8).tolist()
    raise ValueError(f"unknown quantization {kind!r}")
