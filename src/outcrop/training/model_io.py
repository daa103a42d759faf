"""Load a base GGUF into transformers (fp32), with a converted-safetensors cache.

Dequantizing a GGUF takes ~25 s for SmolLM2 and about a minute for Gemma; the converted
weights are saved once under ``<data-dir>/cache/hf/`` so later jobs load in seconds.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GgufInfo:
    """What prompt rendering needs from the base GGUF's metadata."""

    chat_template: str | None
    bos_id: int | None
    eos_id: int | None
    add_bos: bool

    @classmethod
    def read(cls, path: Path) -> GgufInfo:
        import gguf

        fields = gguf.GGUFReader(path).fields

        def value(key: str):
            f = fields.get(key)
            return f.contents() if f is not None else None

        add_bos = value("tokenizer.ggml.add_bos_token")
        bos = value("tokenizer.ggml.bos_token_id")
        eos = value("tokenizer.ggml.eos_token_id")
        return cls(
            chat_template=value("tokenizer.chat_template"),
            bos_id=int(bos) if bos is not None else None,
            eos_id=int(eos) if eos is not None else None,
            add_bos=bool(add_bos) if add_bos is not None else False,
        )


def cache_dir_for(gguf_path: Path, cache_root: Path) -> Path:
    st = gguf_path.stat()
    return cache_root / f"{gguf_path.stem}-{st.st_size}"


def original_weights(gguf_path: Path, cache_root: Path, names: set[str]) -> dict:
    """The named fp32 tensors as converted from the GGUF (from the cache load_base wrote)."""
    from safetensors import safe_open

    out = {}
    for shard in sorted(cache_dir_for(gguf_path, cache_root).glob("*.safetensors")):
        with safe_open(shard, "pt") as st:
            for key in names & set(st.keys()):
                out[key] = st.get_tensor(key)
    return out


def load_base(gguf_path: Path, cache_root: Path):
    """(model, tokenizer) in fp32, ready to train; converts and caches on first use."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cached = cache_dir_for(gguf_path, cache_root)
    if (cached / "model.safetensors").exists() or (cached / "config.json").exists():
        model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(cached)
        return model, tokenizer

    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    # Dequantized weights are plain fp32, but the model still says "gguf-quantized", which
    # blocks save_pretrained and training (engine-notes pitfall).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cached.name}.partial-", dir=cache_root))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, cached)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another job got there first: fine
    return model, tokenizer
