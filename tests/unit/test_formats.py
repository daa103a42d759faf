"""Weight-format rule, GGUF header reading, decision records (no model needed)."""

from __future__ import annotations

import json
import struct

import pytest

from outcrop.models import formats
from outcrop.models.catalog import ModelCard, WheelSource
from outcrop.models.store import ModelStore, ModelStoreError, safe_name

X86_AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512_vnni\n"
X86_AVX2 = "flags\t\t: fpu sse2 avx avx2 fma f16c\n"
X86_OLD = "flags\t\t: fpu sse2 sse4_2 avx\n"
ARM = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 asimddp i8mm\n"


def _gguf(path, file_type: int | None, extra_array: bool = True) -> None:
    """A header-only GGUF v3 file (no tensors)."""

    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    kvs = [s("general.architecture") + struct.pack("<I", 8) + s("llama")]
    if extra_array:  # a string array before file_type, as tokenizer data would be
        items = b"".join(s(t) for t in ("a", "bb", "ccc"))
        kvs.append(s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 3) + items)
        kvs.append(s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 3) + b"\0" * 12)
    if file_type is not None:
        kvs.append(s("general.file_type") + struct.pack("<II", 4, file_type))
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, len(kvs)) + b"".join(kvs))


@pytest.mark.parametrize(
    "info,klass",
    [(X86_AVX512, "avx512"), (X86_AVX2, "avx2"), (X86_OLD, "baseline"), (ARM, "neon"), ("", None)],
)
def test_cpu_class(info, klass):
    got = formats.cpu_class(formats.cpu_flags(info))
    if klass is None:  # no cpuinfo: baseline, or neon on an ARM host
        assert got in ("baseline", "neon")
    else:
        assert got == klass


def test_auto_rule():
    assert formats.auto_choice("q4_1", "avx2")[0] == "q8_0"
    assert formats.auto_choice("q4_1", "avx512")[0] == "q8_0"
    assert formats.auto_choice("f16", "neon")[0] == "q8_0"
    assert formats.auto_choice("q5_0", "neon")[0] == "q8_0"
    for fast in ("q4_k_m", "q4_0", "q8_0", "q6_k"):
        target, why = formats.auto_choice(fast, "avx2")
        assert target is None and "fast" in why
    target, why = formats.auto_choice("q4_1", "baseline")
    assert target is None and "baseline" in why
    assert formats.auto_choice("unknown", "avx2")[0] is None


def test_check_format_and_bounds():
    assert formats.check_format("Q8_0") == "q8_0"
    assert formats.check_format(" q4-k-m ") == "q4_k_m"
    assert formats.check_format("auto") == "auto"
    with pytest.raises(formats.WeightFormatError, match="unknown weight format 'q9_9'"):
        formats.check_format("q9_9")
    assert formats.bound_pct("q8_0") == 2.0
    assert formats.bound_pct("q4_0") == 10.0


def test_ftypes_match_llama_cpp():
    llama_cpp = pytest.importorskip("llama_cpp")
    for name, value in formats.FTYPES.items():
        const = "LLAMA_FTYPE_ALL_F32" if name == "f32" else f"LLAMA_FTYPE_MOSTLY_{name.upper()}"
        assert getattr(llama_cpp, const) == value, name


def test_gguf_header(tmp_path):
    f = tmp_path / "m.Q4_1.gguf"
    _gguf(f, 3)
    assert formats.gguf_file_type(f) == 3
    assert formats.source_format(f) == "q4_1"
    _gguf(f, 15, extra_array=False)
    assert formats.source_format(f) == "q4_k_m"
    _gguf(f, None)
    assert formats.source_format(f) == "unknown"

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"<html>not a model</html>" * 10)
    with pytest.raises(formats.WeightFormatError, match="not a GGUF file"):
        formats.source_format(bad)
    trunc = tmp_path / "trunc.gguf"
    trunc.write_bytes(f.read_bytes()[:40])
    with pytest.raises(formats.WeightFormatError, match="truncated"):
        formats.source_format(trunc)
    with pytest.raises(formats.WeightFormatError, match="cannot read"):
        formats.source_format(tmp_path / "missing.gguf")


def test_converted_name(tmp_path):
    assert (
        formats.converted_name(tmp_path / "SmolLM2-135M-Instruct.Q4_1.gguf", "q8_0")
        == "SmolLM2-135M-Instruct.Q8_0.gguf"
    )
    assert formats.converted_name(tmp_path / "gemma-3-270m-q4_k_m.gguf", "q4_0") == (
        "gemma-3-270m.Q4_0.gguf"
    )
    assert formats.converted_name(tmp_path / "model.gguf", "q8_0") == "model.Q8_0.gguf"


def test_decision_matches():
    auto = {"policy": "auto", "cpu_class": "avx2", "original": {"format": "q4_1"},
            "converted": {"format": "q8_0", "accepted": True}}  # fmt: skip
    assert formats.decision_matches(auto, "auto", "avx2")
    assert not formats.decision_matches(auto, "auto", "avx512")  # moved to another CPU
    assert formats.decision_matches(auto, "q8_0", "avx2")  # same file answers it
    assert not formats.decision_matches(auto, "q4_0", "avx2")
    assert formats.decision_matches(auto, "q4_1", "avx2")  # the original's own format
    assert formats.decision_matches(None, "original", "avx2")
    assert not formats.decision_matches(None, "auto", "avx2")
    rejected = {"policy": "q4_0", "cpu_class": "avx2", "original": {"format": "q4_1"},
                "converted": {"format": "q4_0", "accepted": False}}  # fmt: skip
    assert formats.decision_matches(rejected, "q4_0", "avx2")  # decided: no retry loop


def test_choose_keeps_fast_and_original(tmp_path):
    f = tmp_path / "gemma-3-270m-q4_k_m.gguf"
    _gguf(f, 15)
    path, rec = formats.choose_and_convert(f, "auto", cpuinfo=X86_AVX2)
    assert path == f and rec["selected"] == "original" and rec["converted"] is None
    assert rec["original"]["format"] == "q4_k_m" and "fast avx2 kernel" in rec["reason"]
    assert rec["original"]["sha256"] == formats.sha256_file(f)
    json.dumps(rec)  # JSON-able

    path, rec = formats.choose_and_convert(f, "original", cpuinfo=X86_AVX2)
    assert path == f and rec["policy"] == "original"
    path, rec = formats.choose_and_convert(f, "q4_k_m", cpuinfo=X86_AVX2)
    assert path == f and "already" in rec["reason"]

    slow = tmp_path / "m.Q4_1.gguf"
    _gguf(slow, 3)
    path, rec = formats.choose_and_convert(slow, "auto", cpuinfo=X86_OLD)
    assert path == slow and "baseline" in rec["reason"]


def test_choose_rejects_bad_input(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"PK\x03\x04 this is a zip, not a gguf" * 8)
    before = bad.read_bytes()
    with pytest.raises(formats.WeightFormatError, match="not a GGUF file"):
        formats.choose_and_convert(bad, "auto", cpuinfo=X86_AVX2)
    with pytest.raises(formats.WeightFormatError, match="unknown weight format"):
        formats.choose_and_convert(bad, "q3_fast")
    assert bad.read_bytes() == before and sorted(tmp_path.iterdir()) == [bad]


def test_failed_conversion_keeps_original(tmp_path):
    """A header-only 'Q4_1' file: llama.cpp's quantizer fails; nothing half-written stays."""
    pytest.importorskip("llama_cpp")
    f = tmp_path / "m.Q4_1.gguf"
    _gguf(f, 3)
    path, rec = formats.choose_and_convert(f, "auto", cpuinfo=X86_AVX2)
    assert path == f and rec["selected"] == "original"
    assert rec["converted"]["format"] == "q8_0" and rec["converted"]["accepted"] is False
    assert "failed" in rec["converted"]["error"] or "failed" in rec["reason"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.Q4_1.gguf"]


def test_out_of_disk_is_clean(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    f = tmp_path / "m.Q4_1.gguf"
    _gguf(f, 3)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 0))
    path, rec = formats.choose_and_convert(f, "q8_0", cpuinfo=X86_AVX2)
    assert path == f and "not enough disk space" in rec["reason"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.Q4_1.gguf"]


def _installed(tmp_path, file_type):
    card = ModelCard(
        model_id="test.fake-v1:0", name="fake", provider_name="Test", context_length=512,
        sources=(WheelSource("nope", "0", "nope/m.gguf"),), file_name="m.Q4_1.gguf",
        license="none",
    )  # fmt: skip
    d = tmp_path / "models" / safe_name(card.model_id)
    d.mkdir(parents=True)
    if file_type is None:
        (d / card.file_name).write_bytes(b"garbage, not gguf" * 4)
    else:
        _gguf(d / card.file_name, file_type)
    (d / "card.json").write_text(json.dumps(card.model_dump(mode="json")))
    return card, d


def test_store_records_decision(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "cpu_flags", lambda info=None: frozenset({"avx2", "fma"}))
    card, d = _installed(tmp_path, 15)
    assert ModelStore(tmp_path).ensure(card) == d / card.file_name  # original: no decision
    assert "weights" not in ModelStore(tmp_path).record(card)
    store = ModelStore(tmp_path, weight_format="auto")
    assert store.ensure(card) == d / card.file_name
    weights = store.record(card)["weights"]
    assert weights["policy"] == "auto" and weights["selected"] == "original"
    assert store.path(card) == d / card.file_name
    with pytest.raises(ValueError, match="unknown weight format"):
        ModelStore(tmp_path, weight_format="fastest")


def test_store_serves_accepted_conversion(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "cpu_flags", lambda info=None: frozenset({"avx2", "fma"}))
    card, d = _installed(tmp_path, 3)
    (d / "m.Q8_0.gguf").write_bytes(b"converted")

    def fake(src, requested, *, out_dir, **kw):
        return out_dir / "m.Q8_0.gguf", {
            "policy": requested, "cpu_class": "avx2", "original": {"format": "q4_1"},
            "converted": {"file": "m.Q8_0.gguf", "format": "q8_0", "accepted": True},
            "selected": "converted", "file": "m.Q8_0.gguf",
        }  # fmt: skip

    monkeypatch.setattr(formats, "choose_and_convert", fake)
    store = ModelStore(tmp_path, weight_format="auto")
    assert store.ensure(card) == d / "m.Q8_0.gguf"
    assert store.path(card) == d / "m.Q8_0.gguf"
    assert store.original_path(card) == d / card.file_name
    assert ModelStore(tmp_path).path(card) == d / card.file_name  # "original" policy
    assert ModelStore(tmp_path, weight_format="q8_0").path(card) == d / "m.Q8_0.gguf"
    assert not [p for p in d.iterdir() if p.name.startswith(".")]


def test_store_rejects_non_gguf_install(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "cpu_flags", lambda info=None: frozenset({"avx2", "fma"}))
    card, d = _installed(tmp_path, None)
    before = (d / "card.json").read_text()
    store = ModelStore(tmp_path, weight_format="auto")
    with pytest.raises(ModelStoreError, match="not a GGUF file"):
        store.ensure(card)
    assert (d / "card.json").read_text() == before
    assert sorted(p.name for p in d.iterdir()) == sorted(["card.json", card.file_name])
