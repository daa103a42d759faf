"""What an import source holds, checked from headers before any work is done.

A source is a GGUF file, a folder holding exactly one GGUF file, or a Hugging Face folder
(``config.json``, ``*.safetensors`` or ``pytorch_model*.bin``, tokenizer files), which is
what Bedrock itself imports. Every check reads headers and sizes only, so a 40 GB model
is judged in milliseconds; each failure says what is wrong and what to do, because it
becomes the job's ``failureMessage`` as is.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

GGUF_MAGIC = b"GGUF"
MAX_SAFETENSORS_HEADER = 100 << 20


class ImportFailure(Exception):
    """A failure whose message is the import job's failureMessage, as is."""


@dataclass(frozen=True)
class GgufFacts:
    path: Path
    architecture: str
    name: str | None
    chat_template: str | None
    context_length: int | None
    size_bytes: int
    n_tensors: int


@dataclass(frozen=True)
class HfFacts:
    path: Path
    architecture: str
    """``config.json``'s ``architectures[0]``, e.g. ``LlamaForCausalLM``."""
    model_type: str | None
    weights: tuple[Path, ...]
    weight_bytes: int
    chat_template: bool


@dataclass(frozen=True)
class Layout:
    kind: Literal["gguf", "hf"]
    gguf: GgufFacts | None = None
    hf: HfFacts | None = None
    notes: list[str] = field(default_factory=list)


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # a field of a type contents() cannot decode: treat as absent
        return None


def read_gguf(path: Path) -> GgufFacts:
    """The facts an import needs from a GGUF file; raises ImportFailure for a bad file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise ImportFailure(f"The GGUF file {path} could not be read: {exc.strerror}.") from None
    if head[:4] != GGUF_MAGIC:
        raise ImportFailure(
            f"{path.name} is not a GGUF file (its first bytes are {head[:4]!r}, not b'GGUF'). "
            "Import a .gguf file or a Hugging Face folder (config.json + *.safetensors)."
        )
    import gguf

    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:
        if "reshape" in str(exc) or "mmap length" in str(exc):  # tensor data cut short
            raise ImportFailure(
                f"{path.name} is truncated: its tensor data ends early ({size:,} bytes; an "
                "interrupted download?); download it again."
            ) from None
        raise ImportFailure(
            f"{path.name} is a corrupt GGUF file ({type(exc).__name__}: {exc}); download it again."
        ) from None
    end = max((t.data_offset + t.n_bytes for t in reader.tensors), default=0)
    if end > size:
        raise ImportFailure(
            f"{path.name} is truncated: its tensors need {end:,} bytes but the file has "
            f"{size:,} (an interrupted download?); download it again."
        )
    if not reader.tensors:
        raise ImportFailure(f"{path.name} holds no tensors: it is not a model file.")
    arch = _field(reader, "general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ImportFailure(f"{path.name} has no general.architecture: it is not a model GGUF.")
    ctx = _field(reader, f"{arch}.context_length")
    template = _field(reader, "tokenizer.chat_template")
    name = _field(reader, "general.name")
    return GgufFacts(
        path=path,
        architecture=arch,
        name=name if isinstance(name, str) else None,
        chat_template=template if isinstance(template, str) and template.strip() else None,
        context_length=int(ctx) if isinstance(ctx, int | float) and ctx > 0 else None,
        size_bytes=size,
        n_tensors=len(reader.tensors),
    )


def _check_safetensors(path: Path) -> None:
    """Header, and that the file is as long as its header says (truncated downloads)."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ImportFailure(f"{path.name} is truncated: it is only {size} bytes long.")
            (n,) = struct.unpack("<Q", raw)
            if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
                raise ImportFailure(
                    f"{path.name} is not a valid safetensors file (corrupt header); "
                    "download it again."
                )
            header = json.loads(fh.read(n))
    except OSError as exc:
        raise ImportFailure(f"{path.name} could not be read: {exc.strerror}.") from None
    except (ValueError, UnicodeDecodeError):
        raise ImportFailure(
            f"{path.name} is not a valid safetensors file (its header is not JSON); "
            "download it again."
        ) from None
    if not isinstance(header, dict):
        raise ImportFailure(f"{path.name} is not a valid safetensors file.")
    end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise ImportFailure(f"{path.name}: tensor {key} has no valid data_offsets.")
        end = max(end, int(offsets[1]))
    if 8 + n + end > size:
        raise ImportFailure(
            f"{path.name} is truncated: its tensors need {8 + n + end:,} bytes but the file "
            f"has {size:,} (an interrupted upload or download?); copy it again."
        )


def read_hf_folder(path: Path) -> HfFacts:
    """Checks a Hugging Face model folder; raises ImportFailure saying what is missing."""
    config_path = path / "config.json"
    if not config_path.is_file():
        raise ImportFailure(
            f"The folder {path} has no config.json. A Hugging Face model folder needs "
            "config.json, its weights (*.safetensors) and its tokenizer files "
            "(tokenizer.json or tokenizer.model, tokenizer_config.json); or import a .gguf file."
        )
    try:
        config = json.loads(config_path.read_text("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ImportFailure(f"{config_path} is not valid JSON ({exc}).") from None
    archs = config.get("architectures") if isinstance(config, dict) else None
    if not (isinstance(archs, list) and archs and isinstance(archs[0], str)):
        raise ImportFailure(
            f"{config_path} names no model class in 'architectures' (for example "
            '["LlamaForCausalLM"]); it is not a causal language model checkpoint.'
        )
    weights = sorted(p for p in path.glob("*.safetensors") if not p.name.startswith("."))
    if not weights:
        weights = sorted(path.glob("pytorch_model*.bin"))
    if not weights:
        raise ImportFailure(
            f"The folder {path} has config.json but no weights: expected *.safetensors "
            "(or pytorch_model*.bin) files next to it."
        )
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text("utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ImportFailure(f"{index.name} is not a valid safetensors index.") from None
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            raise ImportFailure(
                f"The folder {path} is missing weight shards listed in {index.name}: "
                f"{', '.join(missing[:5])}."
            )
    for w in weights:
        if w.suffix == ".safetensors":
            _check_safetensors(w)
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer.model").is_file()):
        raise ImportFailure(
            f"The folder {path} has no tokenizer: expected tokenizer.json or tokenizer.model "
            "(save the tokenizer with the model: tokenizer.save_pretrained(folder))."
        )
    template = (path / "chat_template.jinja").is_file() or (path / "chat_template.json").is_file()
    tc = path / "tokenizer_config.json"
    if not template and tc.is_file():
        try:
            template = bool(json.loads(tc.read_text("utf-8")).get("chat_template"))
        except (OSError, ValueError, AttributeError):
            template = False
    return HfFacts(
        path=path,
        architecture=archs[0],
        model_type=config.get("model_type"),
        weights=tuple(weights),
        weight_bytes=sum(w.stat().st_size for w in weights),
        chat_template=template,
    )


def _gguf_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.suffix.lower() == ".gguf" and not p.name.startswith(".")
    )


def classify(path: Path) -> Layout:
    """What *path* holds; raises ImportFailure if it is nothing importable."""
    if not os.path.lexists(path):
        raise ImportFailure(f"{path} does not exist.")
    if path.is_file():
        if path.suffix == ".safetensors" or path.name == "config.json":
            raise ImportFailure(
                f"{path} is one file of a Hugging Face model: import its folder instead."
            )
        return Layout("gguf", gguf=read_gguf(path))
    if not path.is_dir():
        raise ImportFailure(f"{path} is neither a file nor a folder.")
    if (path / "config.json").is_file():
        return Layout("hf", hf=read_hf_folder(path))
    ggufs = _gguf_files(path)
    if len(ggufs) == 1:
        return Layout("gguf", gguf=read_gguf(ggufs[0]))
    if len(ggufs) > 1:
        names = ", ".join(p.name for p in ggufs[:6])
        raise ImportFailure(
            f"The folder {path} holds {len(ggufs)} GGUF files ({names}); import one of them "
            "by its file path."
        )
    return Layout("hf", hf=read_hf_folder(path))  # fails, naming what is missing
