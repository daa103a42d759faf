"""Native InvokeModel bodies of embedding models, translated to and from ``EmbedCall``.

Which body applies follows the ID the client sent (after ARN / geo prefix):

* ``amazon.titan-embed-text-v2*`` -> :class:`TitanV2Dialect`
* other ``amazon.titan-embed*`` (``-text-v1``, ``-g1-text-02``) -> :class:`TitanV1Dialect`
* ``cohere.embed*`` -> :class:`CohereEmbedDialect`
* anything else, our own ``sentence-transformers.*`` IDs included -> the Titan V2 body,
  the most capable of the three single-text bodies.

Our models produce fewer dimensions than the hosted ones (MiniLM: 384). A client that does
not ask for a size gets the model's own; one that explicitly asks for more than the model
has gets a ValidationError saying what the model produces: padding or projecting would
hand out vectors that only look like the requested kind. A smaller size (Titan V2's 256)
is served by keeping the leading components and renormalizing (Matryoshka-style). MiniLM
was not trained for that, so some quality is lost; we serve it anyway because code written
for ``dimensions: 256`` then runs unchanged, and on our checks related/unrelated pairs stay
well apart (cosine 0.68 vs <0.1 at 256, 0.67 vs <0.06 at 384).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from outcrop.models.resolve import base_model_id
from outcrop.service.dialects.base import InvokeContext
from outcrop.service.embeddings import EmbedResult, check_dimensions, quantize
from outcrop.service.fields import Obj

COHERE_MAX_TEXTS = 96
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
COHERE_TYPES = ("float", "int8", "uint8", "binary", "ubinary")
TITAN_V2_DIMENSIONS = (1024, 512, 256)
TITAN_V2_TYPES = ("float", "binary")


@dataclass
class EmbedCall:
    """A parsed embedding body: what to pass to ``EmbeddingService.embed``."""

    texts: list[str]
    normalize: bool = True
    dimensions: int | None = None
    truncate: str = "NONE"
    embedding_types: list[str] = field(default_factory=list)
    """Requested representations; empty means the family's plain float answer."""


class EmbedDialect(ABC):
    @abstractmethod
    def parse(self, body: dict[str, Any], *, model_dimensions: int) -> EmbedCall:
        """Validate and translate a request body. Raises ValidationError."""

    @abstractmethod
    def response(
        self, call: EmbedCall, result: EmbedResult, ctx: InvokeContext
    ) -> dict[str, Any]: ...


class TitanV1Dialect(EmbedDialect):
    """``{inputText}`` -> ``{embedding, inputTextTokenCount}``.

    Titan G1 did not truncate and had no ``normalize``; our vectors are unit length (cosine
    similarity is unchanged by that; dot products become cosines)."""

    keys = ("inputText",)

    def parse(self, body: dict[str, Any], *, model_dimensions: int) -> EmbedCall:
        obj = _body(body, self.keys)
        return EmbedCall([_input_text(obj)], normalize=True, truncate="NONE")

    def response(self, call: EmbedCall, result: EmbedResult, ctx: InvokeContext) -> dict[str, Any]:
        return {"embedding": result.vectors[0], "inputTextTokenCount": result.input_tokens}


class TitanV2Dialect(TitanV1Dialect):
    """``{inputText, dimensions, normalize, embeddingTypes}`` ->
    ``{embedding, inputTextTokenCount, embeddingsByType}``.

    ``embeddingsByType.binary`` is one 0/1 per dimension (component > 0)."""

    keys = ("inputText", "dimensions", "normalize", "embeddingTypes")

    def parse(self, body: dict[str, Any], *, model_dimensions: int) -> EmbedCall:
        obj = _body(body, self.keys)
        call = EmbedCall([_input_text(obj)], truncate="NONE")
        dims = obj.integer("dimensions")
        if dims is not None:
            if dims not in TITAN_V2_DIMENSIONS:
                raise obj.fail(
                    "dimensions",
                    f"{dims} is not a valid enum value; expected one of {list(TITAN_V2_DIMENSIONS)}",
                )
            call.dimensions = check_dimensions(dims, model_dimensions)
        normalize = obj.boolean("normalize")
        call.normalize = True if normalize is None else normalize
        call.embedding_types = _types(obj, "embeddingTypes", TITAN_V2_TYPES)
        return call

    def response(self, call: EmbedCall, result: EmbedResult, ctx: InvokeContext) -> dict[str, Any]:
        floats = result.vectors[0]
        by_type: dict[str, Any] = {}
        if not call.embedding_types or "float" in call.embedding_types:
            by_type["float"] = floats
        if "binary" in call.embedding_types:
            by_type["binary"] = quantize([floats], "bits")[0]
        return {
            "embedding": floats,
            "inputTextTokenCount": result.input_tokens,
            "embeddingsByType": by_type,
        }


class CohereEmbedDialect(EmbedDialect):
    """``{texts, input_type, truncate, embedding_types}`` -> ``{embeddings, id,
    response_type, texts}``.

    ``input_type`` is required and checked, but MiniLM has no query/document prompts, so
    every input type embeds the same way. Vectors are unit length, as Cohere's are."""

    keys = ("texts", "input_type", "truncate", "embedding_types", "images", "output_dimension")

    def parse(self, body: dict[str, Any], *, model_dimensions: int) -> EmbedCall:
        obj = _body(body, self.keys)
        if obj.array("images"):
            raise obj.fail("images", "images are not supported: this model embeds text only")
        if not obj.has("texts"):
            raise obj.fail(None, "required key [texts] not found")
        texts = obj.strings("texts")
        if not texts:
            raise obj.fail("texts", "expected minimum item count: 1, found: 0")
        if len(texts) > COHERE_MAX_TEXTS:
            raise obj.fail(
                "texts", f"expected maximum item count: {COHERE_MAX_TEXTS}, found: {len(texts)}"
            )
        obj.string("input_type", required=True, choices=COHERE_INPUT_TYPES)
        truncate = obj.string("truncate", choices=("NONE", "START", "END")) or "END"
        call = EmbedCall(texts, normalize=True, truncate=truncate)
        dims = obj.integer("output_dimension")
        if dims is not None:
            call.dimensions = check_dimensions(dims, model_dimensions, "output_dimension")
        call.embedding_types = _types(obj, "embedding_types", COHERE_TYPES)
        return call

    def response(self, call: EmbedCall, result: EmbedResult, ctx: InvokeContext) -> dict[str, Any]:
        if not call.embedding_types:
            embeddings: Any = result.vectors
            response_type = "embeddings_floats"
        else:
            embeddings = {
                kind: result.vectors if kind == "float" else quantize(result.vectors, kind)
                for kind in dict.fromkeys(call.embedding_types)
            }
            response_type = "embeddings_by_type"
        return {
            "embeddings": embeddings,
            "id": ctx.request_id,
            "response_type": response_type,
            "texts": call.texts,
        }


_ROUTES: tuple[tuple[str, Callable[[], EmbedDialect]], ...] = (
    ("amazon.titan-embed-text-v2", TitanV2Dialect),
    ("amazon.titan-embed", TitanV1Dialect),
    ("cohere.embed", CohereEmbedDialect),
)


def embed_dialect_for(model_id: str) -> EmbedDialect:
    model = base_model_id(model_id).lower()
    for prefix, factory in _ROUTES:
        if model.startswith(prefix):
            return factory()
    return TitanV2Dialect()


def _body(body: dict[str, Any], allowed: tuple[str, ...]) -> Obj:
    """The body as an ``Obj``; keys the family does not know are refused, as Bedrock does."""
    obj = Obj.of(body)
    extra = sorted(set(body) - set(allowed))
    if extra:
        raise obj.fail(None, f"extraneous key [{extra[0]}] is not permitted")
    return obj


def _input_text(obj: Obj) -> str:
    text = obj.string("inputText", required=True)
    if not text:
        raise obj.fail("inputText", "expected a non-empty string")
    return text


def _types(obj: Obj, key: str, allowed: tuple[str, ...]) -> list[str]:
    if not obj.has(key):
        return []
    value = obj.array(key, non_empty=True)
    for i, item in enumerate(value):
        if item not in allowed:
            raise obj.fail(
                key,
                f"item {i}: {item!r} is not a valid enum value; expected one of {list(allowed)}",
            )
    return list(value)
