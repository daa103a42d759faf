"""Write a trained model as GGUF by re-using the base model's GGUF file.

The base GGUF already holds everything llama.cpp needs — architecture metadata, the
tokenizer (``tokenizer.*``: same vocabulary, same ids, the chat template) and every tensor.
Training changes some tensors (LoRA: the adapted linear layers, merged; full fine-tune:
all), so the export copies the base file and replaces exactly those tensors, mapped from
Hugging Face names and layout back to GGUF's. Replaced matrices are written as Q8_0 (or
F16), untouched tensors keep their original bytes and quantization. No conversion script
and no tokenizer guessing are involved (engine-notes: converting a transformers folder
made from a GGUF picks a different tokenizer type for Gemma).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np


def _permute(w: np.ndarray, n_head: int, n_head_kv: int | None = None) -> np.ndarray:
    """llama.cpp's Q/K row order (inverse of transformers' ``_reverse_permute_weights``)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


class GgufLayout:
    """Maps HF parameter names and values to the base GGUF's tensor names and layout."""

    def __init__(self, reader) -> None:  # noqa: ANN001 - gguf.GGUFReader
        import gguf

        self.reader = reader
        self.arch = str(reader.fields["general.architecture"].contents())
        arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[self.arch]
        self.n_blocks = int(reader.fields[f"{self.arch}.block_count"].contents())
        self.n_head = int(reader.fields[f"{self.arch}.attention.head_count"].contents())
        kv = reader.fields.get(f"{self.arch}.attention.head_count_kv")
        self.n_head_kv = int(kv.contents()) if kv is not None else self.n_head
        self.names = gguf.get_tensor_name_map(arch_enum, self.n_blocks)
        self.tensors = {t.name: t for t in reader.tensors}

    def gguf_name(self, hf_name: str) -> str | None:
        name = self.names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None and hf_name.startswith("model."):
            name = self.names.get_name(
                hf_name.removeprefix("model."), try_suffixes=(".weight", ".bias")
            )
        return name if name in self.tensors else None

    def to_gguf(self, gguf_name: str, value: np.ndarray) -> np.ndarray:
        if self.arch == "llama":
            if ".attn_q." in gguf_name:
                return _permute(value, self.n_head, self.n_head)
            if ".attn_k." in gguf_name:
                return _permute(value, self.n_head, self.n_head_kv)
        if self.arch in ("gemma2", "gemma3") and "norm.weight" in gguf_name:
            return value + 1
        return value


def export_gguf(
    base_gguf: Path,
    changed: Mapping[str, np.ndarray],
    out_path: Path,
    out_type: str = "q8_0",
    name: str | None = None,
) -> dict[str, int]:
    """Write ``out_path`` = the base GGUF with the ``changed`` HF tensors replaced.

    Written under a temporary name and renamed at the end: ``out_path`` exists only once
    complete. Returns counts of replaced and copied tensors.
    """
    import gguf

    reader = gguf.GGUFReader(base_gguf)
    layout = GgufLayout(reader)
    replacements: dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]] = {}
    for hf_name, value in changed.items():
        gname = layout.gguf_name(hf_name)
        if gname is None:
            raise ValueError(f"no tensor in {base_gguf.name} corresponds to {hf_name}")
        data = layout.to_gguf(gname, np.asarray(value, dtype=np.float32))
        if data.ndim >= 2 and out_type == "q8_0" and data.shape[-1] % 32 == 0:
            qtype = gguf.GGMLQuantizationType.Q8_0
            replacements[gname] = (gguf.quants.quantize(data, qtype), qtype)
        elif data.ndim >= 2:
            replacements[gname] = (data.astype(np.float16), gguf.GGMLQuantizationType.F16)
        else:
            replacements[gname] = (data, gguf.GGMLQuantizationType.F32)

    tmp = out_path.with_name(f".{out_path.name}.partial-{os.getpid()}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(tmp, layout.arch, endianess=reader.endianess)
    try:
        for field in reader.fields.values():
            if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
                continue
            vtype = field.types[0]
            sub_type = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            value = field.contents()
            if field.name == gguf.Keys.General.NAME and name:
                value = name
            writer.add_key_value(field.name, value, vtype, sub_type=sub_type)
        for t in reader.tensors:
            if t.name in replacements:
                data, qtype = replacements[t.name]
                writer.add_tensor_info(t.name, data.shape, data.dtype, data.nbytes, qtype)
            else:
                writer.add_tensor_info(
                    t.name, t.data.shape, t.data.dtype, t.data.nbytes, t.tensor_type
                )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for t in reader.tensors:
            data = replacements[t.name][0] if t.name in replacements else t.data
            writer.write_tensor_data(data, tensor_endianess=reader.endianess)
        writer.close()
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out_path)
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    return {"replaced": len(replacements), "copied": len(reader.tensors) - len(replacements)}
