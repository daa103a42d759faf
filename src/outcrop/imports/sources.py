"""Model files already on this machine: Ollama's store, the Hugging Face cache, LM Studio.

``outcrop models import`` takes a path, a ``file://`` or ``s3://`` URI, or one of:

* ``ollama:NAME[:TAG]`` — Ollama's manifest (``$OLLAMA_MODELS`` or ``~/.ollama/models``:
  ``manifests/<registry>/<namespace>/<name>/<tag>``) names the model's GGUF layer by digest;
  the blob is ``blobs/sha256-<hex>``. Its digest travels with the import, which checks it
  and then hard-links (or references) the blob: a multi-GB file is never copied.
* ``hf:ORG/NAME[/FILE]`` — a snapshot in the Hugging Face cache (``$HF_HUB_CACHE``,
  ``$HF_HOME/hub`` or ``~/.cache/huggingface/hub``); no network.

Everything here turns a name into a ``file://`` URI (plus, for Ollama, a sha256), so the
CLI and CreateModelImportJob share one import path.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from outcrop.imports.layout import ImportFailure

OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
OLLAMA_REGISTRY = "registry.ollama.ai"


@dataclass(frozen=True)
class LocalSource:
    uri: str
    """What the import job reads: ``file://...`` or ``s3://...``."""
    label: str
    """What the user typed (``ollama:smol:latest``)."""
    sha256: str | None = None
    """The digest the file must have (Ollama blobs are named by it)."""
    suggested_name: str | None = None


@dataclass(frozen=True)
class Found:
    store: str
    source: str
    """What to pass to ``outcrop models import``."""
    path: Path
    size_bytes: int
    architecture: str


def _home() -> Path:
    return Path(os.environ.get("HOME") or Path.home())


def ollama_models_dir() -> Path:
    env = os.environ.get("OLLAMA_MODELS")
    return Path(env).expanduser() if env else _home() / ".ollama" / "models"


def hf_hub_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return _home() / ".cache" / "huggingface" / "hub"


def lmstudio_dirs() -> list[Path]:
    home = _home()
    return [home / ".lmstudio" / "models", home / ".cache" / "lm-studio" / "models"]


def model_name_for(text: str) -> str:
    """An ImportedModelName (``([0-9a-zA-Z][_-]?)+``, at most 63) made from *text*."""
    name = re.sub(r"[^0-9a-zA-Z]+", "-", text).strip("-_")
    name = re.sub(r"-{2,}", "-", name)[:63].rstrip("-_")
    return name or "imported-model"


# --------------------------------------------------------------------------- Ollama


def _ollama_manifest_path(root: Path, spec: str) -> tuple[Path, str]:
    name, _, tag = spec.partition(":")
    tag = tag or "latest"
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts) or "/" in tag or tag in (".", ".."):
        raise ImportFailure(f"ollama:{spec} is not a valid Ollama model name (NAME[:TAG]).")
    if len(parts) == 1:
        parts = [OLLAMA_REGISTRY, "library", parts[0]]
    elif len(parts) == 2:
        parts = [OLLAMA_REGISTRY, *parts]
    return root / "manifests" / Path(*parts) / tag, f"{'/'.join(parts[1:])}:{tag}"


def resolve_ollama(spec: str) -> LocalSource:
    root = ollama_models_dir()
    manifest_path, full = _ollama_manifest_path(root, spec)
    try:
        manifest = json.loads(manifest_path.read_text("utf-8"))
    except FileNotFoundError:
        raise ImportFailure(
            f"Ollama has no model {spec} in {root} (no manifest at {manifest_path}); "
            "`ollama pull` it first, or run `outcrop models import --scan`."
        ) from None
    except (OSError, ValueError) as exc:
        raise ImportFailure(f"The Ollama manifest {manifest_path} is unreadable: {exc}") from None
    layers = [
        layer
        for layer in (manifest.get("layers") or [])
        if isinstance(layer, dict) and layer.get("mediaType") == OLLAMA_MODEL_LAYER
    ]
    if len(layers) != 1:
        raise ImportFailure(
            f"The Ollama manifest for {spec} has {len(layers)} model layers; expected one GGUF."
        )
    digest = str(layers[0].get("digest", ""))
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256" or not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ImportFailure(f"The Ollama manifest for {spec} has a bad digest {digest!r}.")
    blob = root / "blobs" / f"sha256-{hexdigest}"
    if not blob.is_file():
        raise ImportFailure(f"Ollama's blob for {spec} is missing: {blob}.")
    short = full.split("/")[-1]
    return LocalSource(
        blob.as_uri(), f"ollama:{spec}", sha256=hexdigest, suggested_name=model_name_for(short)
    )


# --------------------------------------------------------------------------- Hugging Face


def _hf_snapshot(repo_dir: Path) -> Path | None:
    ref = repo_dir / "refs" / "main"
    snaps = repo_dir / "snapshots"
    if ref.is_file():
        snap = snaps / ref.read_text().strip()
        if snap.is_dir():
            return snap
    found = sorted((p for p in snaps.glob("*") if p.is_dir()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def resolve_hf(spec: str) -> LocalSource:
    parts = [p for p in spec.split("/") if p]
    if len(parts) < 2 or any(p in (".", "..") for p in parts):
        raise ImportFailure(f"hf:{spec} is not a valid Hugging Face name (ORG/NAME[/FILE]).")
    org, name, rest = parts[0], parts[1], parts[2:]
    hub = hf_hub_dir()
    repo_dir = hub / f"models--{org}--{name}"
    snap = _hf_snapshot(repo_dir) if repo_dir.is_dir() else None
    if snap is None:
        raise ImportFailure(
            f"{org}/{name} is not in the Hugging Face cache at {hub} (no network is used); "
            "download it first, or run `outcrop models import --scan`."
        )
    path = snap.joinpath(*rest) if rest else snap
    if not path.exists():
        raise ImportFailure(f"{'/'.join(rest)} is not in the cached snapshot of {org}/{name}.")
    label = rest[-1].removesuffix(".gguf") if rest else name
    return LocalSource(path.as_uri(), f"hf:{spec}", suggested_name=model_name_for(label))


def resolve_source(text: str) -> LocalSource:
    """A CLI SOURCE -> the URI the import job reads."""
    if text.startswith("ollama:"):
        return resolve_ollama(text.removeprefix("ollama:"))
    if text.startswith("hf:"):
        return resolve_hf(text.removeprefix("hf:"))
    if text.startswith(("s3://", "file://")):
        tail = text.rstrip("/").rsplit("/", 1)[-1]
        return LocalSource(text, text, suggested_name=model_name_for(tail.removesuffix(".gguf")))
    path = Path(text).expanduser().absolute()
    stem = path.name.removesuffix(".gguf") if path.suffix == ".gguf" else path.name
    return LocalSource(path.as_uri(), text, suggested_name=model_name_for(stem))


# --------------------------------------------------------------------------- --scan


def _gguf_arch(path: Path) -> str:
    from outcrop.imports.layout import read_gguf

    try:
        return read_gguf(path).architecture
    except ImportFailure:
        return "? (not a valid GGUF)"


def _hf_arch(folder: Path) -> str | None:
    try:
        config = json.loads((folder / "config.json").read_text("utf-8"))
        archs = config.get("architectures") or []
        return str(archs[0]) if archs else str(config.get("model_type", "?"))
    except (OSError, ValueError, AttributeError):
        return None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def scan_ollama() -> list[Found]:
    root = ollama_models_dir()
    out: list[Found] = []
    manifests = root / "manifests"
    if not manifests.is_dir():
        return out
    for path in sorted(p for p in manifests.rglob("*") if p.is_file()):
        rel = path.relative_to(manifests).parts
        if len(rel) < 4:
            continue
        registry, *names, tag = rel
        if registry == OLLAMA_REGISTRY and names[0] == "library":
            names = names[1:]
        elif registry != OLLAMA_REGISTRY:
            names = [registry, *names]
        spec = f"{'/'.join(names)}:{tag}"
        try:
            src = resolve_ollama(spec)
        except ImportFailure:
            continue
        blob = Path(src.uri.removeprefix("file://"))
        out.append(Found("ollama", src.label, blob, blob.stat().st_size, _gguf_arch(blob)))
    return out


def scan_hf_cache() -> list[Found]:
    hub = hf_hub_dir()
    out: list[Found] = []
    if not hub.is_dir():
        return out
    for repo_dir in sorted(hub.glob("models--*--*")):
        _, org, name = repo_dir.name.split("--", 2)
        snap = _hf_snapshot(repo_dir)
        if snap is None:
            continue
        arch = _hf_arch(snap)
        if arch is not None:
            out.append(Found("huggingface", f"hf:{org}/{name}", snap, _size(snap), arch))
        for gguf in sorted(snap.glob("*.gguf")):
            out.append(
                Found(
                    "huggingface", f"hf:{org}/{name}/{gguf.name}", gguf,
                    gguf.stat().st_size, _gguf_arch(gguf),
                )
            )  # fmt: skip
    return out


def scan_lmstudio() -> list[Found]:
    out: list[Found] = []
    for root in lmstudio_dirs():
        if root.is_dir():
            for gguf in sorted(root.rglob("*.gguf")):
                if "mmproj" in gguf.name.lower():
                    continue  # vision projectors are not models on their own
                out.append(
                    Found("lmstudio", str(gguf), gguf, gguf.stat().st_size, _gguf_arch(gguf))
                )
    return out


def scan() -> list[Found]:
    return scan_ollama() + scan_hf_cache() + scan_lmstudio()
