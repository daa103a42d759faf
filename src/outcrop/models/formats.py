"""Choose a weight format that is fast on this CPU, convert to it, and measure the cost.

A GGUF file's quantization decides llama.cpp's CPU speed more than anything else: Q4_1
(what SmolLM2 ships as) has no fast CPU kernel, while Q4_0, Q8_0 and the K-quants do.
:func:`choose_and_convert` reads the file's format and the CPU's features, converts
with llama.cpp's own quantizer (``llama_model_quantize``) when the rule below says the
shipped format is slow here, measures the result against the original
(:mod:`outcrop.models.quality`), and keeps the conversion only if its perplexity stays
within the format's bound. The original file is never touched.

The ``auto`` rule (``weight_format = "auto"``, the default of ``serve`` / ``models pull``):

1. CPU class from ``/proc/cpuinfo`` flags: ``avx512`` (avx512f + avx512bw), ``avx2``
   (avx2 + fma), ``neon`` (ARM asimd/neon), otherwise ``baseline``.
2. On ``baseline`` nothing is converted: no format has a fast kernel there, and a
   requantization would only lose quality.
3. On ``avx2`` / ``avx512`` / ``neon``, a file already in a fast format (:data:`FAST_FORMATS`:
   Q4_0, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K) is kept; Gemma's Q4_K_M is such a file.
4. A file in a slow format (:data:`SLOW_FORMATS`: Q4_1, Q5_0, Q5_1, F16, BF16, F32) is
   converted to Q8_0, which represents every one of those formats' weights almost
   exactly. Measured on a 2-core AVX-512 EPYC with SmolLM2 (README, docs/benchmarks.md):
   Q4_1 -> Q8_0 kept perplexity (-0.3%) and gave 1.2-1.6x decode speed (1 and 32
   sequences); Q4_0 was fastest (~3x at 32 sequences) but cost +18% perplexity, beyond
   its 10% bound; Q4_K_M cost +5.3% for 1.0-1.6x. So Q4_0 is offered as an explicit
   ``--format q4_0``, gated by the same bound, never picked blindly.

Every conversion, ``auto`` or explicit, goes through the quality gate: perplexity of the
converted file on the shipped held-out text must not exceed the original's by more than
:data:`PPL_BOUND_PCT` (Q8_0: 2%, Q6_K: 3%, Q5_*: 5%, 4-bit formats: 10%). A rejected or
failed conversion leaves the original selected, with the reason in the record.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger("outcrop.models")

GGUF_MAGIC = b"GGUF"

# llama_ftype values (llama.h), by the short lower-case names used on the command line.
FTYPES: dict[str, int] = {
    "f32": 0,
    "f16": 1,
    "q4_0": 2,
    "q4_1": 3,
    "q8_0": 7,
    "q5_0": 8,
    "q5_1": 9,
    "q2_k": 10,
    "q3_k_s": 11,
    "q3_k_m": 12,
    "q3_k_l": 13,
    "q4_k_s": 14,
    "q4_k_m": 15,
    "q5_k_s": 16,
    "q5_k_m": 17,
    "q6_k": 18,
    "iq4_nl": 25,
    "iq4_xs": 30,
    "bf16": 32,
}
FTYPE_NAMES: dict[int, str] = {v: k for k, v in FTYPES.items()}
# Targets a user may ask for (quantizer ftypes that need no importance matrix).
TARGET_FORMATS: tuple[str, ...] = (
    "q8_0", "q6_k", "q5_k_m", "q5_k_s", "q5_0", "q5_1", "q4_k_m", "q4_k_s", "q4_0", "q4_1",
    "iq4_nl", "f16", "bf16",
)  # fmt: skip
FORMAT_CHOICES: tuple[str, ...] = ("auto", "original", *TARGET_FORMATS)

FAST_FORMATS = frozenset({"q4_0", "q8_0", "iq4_nl", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"})
SLOW_FORMATS = frozenset({"q4_1", "q5_0", "q5_1", "f16", "bf16", "f32"})
AUTO_TARGET = "q8_0"
SIMD_CLASSES = frozenset({"avx512", "avx2", "neon"})

PPL_BOUND_PCT: dict[str, float] = {
    "f16": 0.5, "bf16": 0.5, "q8_0": 2.0, "q6_k": 3.0,
    "q5_k_m": 5.0, "q5_k_s": 5.0, "q5_0": 5.0, "q5_1": 5.0,
}  # fmt: skip
DEFAULT_BOUND_PCT = 10.0
"""Bound for the 4-bit formats (q4_0, q4_1, q4_k_*, iq4_*)."""
BITS_PER_WEIGHT = {"f32": 32, "f16": 16, "bf16": 16, "q8_0": 8.5, "q6_k": 6.6}


class WeightFormatError(ValueError):
    """Bad input: an unknown format name, or a file that is not GGUF."""


def bound_pct(fmt: str) -> float:
    return PPL_BOUND_PCT.get(fmt, DEFAULT_BOUND_PCT)


def check_format(name: str) -> str:
    """Normalize a ``--format`` value or raise :class:`WeightFormatError`."""
    norm = name.strip().lower().replace("-", "_")
    if norm not in FORMAT_CHOICES:
        raise WeightFormatError(
            f"unknown weight format {name!r}; choose one of {', '.join(FORMAT_CHOICES)}"
        )
    return norm


# --------------------------------------------------------------------------- CPU


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """CPU feature flags (x86 ``flags``, ARM ``Features``) from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
            break  # every core lists the same flags
    if not flags and platform.machine().lower() in ("arm64", "aarch64"):
        flags.add("asimd")  # NEON is mandatory on AArch64 (macOS has no /proc/cpuinfo)
    return frozenset(flags)


def cpu_class(flags: frozenset[str] | set[str]) -> str:
    if {"avx512f", "avx512bw"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    if flags & {"asimd", "neon"}:
        return "neon"
    return "baseline"


def auto_choice(source_format: str, klass: str) -> tuple[str | None, str]:
    """The ``auto`` rule: (target format or None to keep the original, why)."""
    if klass not in SIMD_CLASSES:
        return None, f"{klass} CPU: no format has a fast kernel here; keeping the original"
    if source_format in FAST_FORMATS:
        return None, f"{source_format.upper()} already has a fast {klass} kernel; kept"
    if source_format in SLOW_FORMATS:
        return AUTO_TARGET, (
            f"{source_format.upper()} has no fast {klass} kernel; {AUTO_TARGET.upper()} "
            "keeps its weights almost exactly and has one"
        )
    return None, f"{source_format.upper()}: no rule for this format; keeping the original"


# --------------------------------------------------------------------------- GGUF


_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
           11: "<q", 12: "<d"}  # fmt: skip


def gguf_file_type(path: Path) -> int | None:
    """``general.file_type`` from a GGUF header (None when absent).

    Raises :class:`WeightFormatError` when the file is not GGUF (v2/v3).
    """
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise WeightFormatError(f"cannot read {path}: {exc.strerror}") from None
    with fh:
        head = fh.read(24)
        if len(head) < 24 or head[:4] != GGUF_MAGIC:
            raise WeightFormatError(f"{path} is not a GGUF file (bad magic {head[:4]!r})")
        version, _n_tensors, n_kv = struct.unpack("<IQQ", head[4:24])
        if version not in (2, 3):
            raise WeightFormatError(f"{path}: unsupported GGUF version {version}")

        def read(n: int) -> bytes:
            b = fh.read(n)
            if len(b) != n:
                raise WeightFormatError(f"{path}: truncated GGUF header")
            return b

        def skip_value(vtype: int) -> Any:
            if vtype in _SCALAR:
                fmt = _SCALAR[vtype]
                return struct.unpack(fmt, read(struct.calcsize(fmt)))[0]
            if vtype == 8:
                (n,) = struct.unpack("<Q", read(8))
                return read(n)
            if vtype == 9:
                etype, count = struct.unpack("<IQ", read(12))
                if etype in _SCALAR:
                    fh.seek(struct.calcsize(_SCALAR[etype]) * count, os.SEEK_CUR)
                else:
                    for _ in range(count):
                        skip_value(etype)
                return None
            raise WeightFormatError(f"{path}: bad GGUF value type {vtype}")

        for _ in range(min(n_kv, 1 << 20)):
            (klen,) = struct.unpack("<Q", read(8))
            if klen > 1 << 16:
                raise WeightFormatError(f"{path}: corrupt GGUF header")
            key = read(klen)
            (vtype,) = struct.unpack("<I", read(4))
            value = skip_value(vtype)
            if key == b"general.file_type":
                return int(value)
    return None


def source_format(path: Path) -> str:
    """The short format name of a GGUF file (``q4_1``, ``q4_k_m``, ...; ``ftype<N>`` if
    unnamed). Raises :class:`WeightFormatError` if the file is not GGUF."""
    ftype = gguf_file_type(path)
    if ftype is None:
        return "unknown"
    return FTYPE_NAMES.get(ftype & ~1024, f"ftype{ftype}")  # 1024: LLAMA_FTYPE_GUESSED


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def converted_name(src: Path, fmt: str) -> str:
    stem = src.name[: -len(".gguf")] if src.name.endswith(".gguf") else src.name
    for known in FTYPES:  # "SmolLM2-135M-Instruct.Q4_1" -> "SmolLM2-135M-Instruct"
        for sep in (".", "-", "_"):
            if stem.lower().endswith(sep + known):
                stem = stem[: -len(known) - 1]
                break
    return f"{stem}.{fmt.upper()}.gguf"


def quantize(src: Path, dst: Path, fmt: str, n_threads: int | None = None) -> None:
    """``llama_model_quantize`` *src* to *fmt*, written to a temporary name next to *dst*
    and renamed on success. Raises OSError / RuntimeError; leaves nothing behind on failure."""
    import ctypes

    import llama_cpp as ll

    from outcrop.engines.llamacpp.model import _init_backend

    _init_backend()  # routes llama.cpp's log through the (quiet) callback
    src_size = src.stat().st_size
    need = int(src_size * BITS_PER_WEIGHT.get(fmt, 6.0) / 4.5) + (16 << 20)
    free = shutil.disk_usage(dst.parent).free
    if free < need:
        raise OSError(
            28, f"not enough disk space in {dst.parent} for the {fmt.upper()} file "
            f"(about {need >> 20} MiB needed, {free >> 20} MiB free)"
        )  # fmt: skip
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}-{time.monotonic_ns()}")
    params = ll.llama_model_quantize_default_params()
    params.ftype = FTYPES[fmt]
    params.allow_requantize = True  # the source is already quantized
    params.nthread = n_threads or 0
    try:
        rc = ll.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0 or not tmp.exists():
            raise RuntimeError(f"llama_model_quantize {src.name} -> {fmt.upper()} failed ({rc})")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


# --------------------------------------------------------------------------- the decision


def _llama_cpp_version() -> str:
    try:
        from importlib.metadata import version

        return version("llama-cpp-python")
    except Exception:
        return "unknown"


def _eval_threads(n_threads: int | None) -> int:
    # Half the cores by default: on a small machine the server (or other work) keeps
    # the rest, and llama.cpp threads that contend for a core slow down badly.
    return n_threads or max(1, (os.cpu_count() or 2) // 2)


def choose_and_convert(
    src_path: Path | str,
    requested: str = "auto",
    *,
    out_dir: Path | str | None = None,
    n_threads: int | None = None,
    cpuinfo: str | None = None,
    src_sha256: str | None = None,
    probe: bool = True,
    note: Callable[[str], None] | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Pick the weight format to serve *src_path* in, converting and measuring as needed.

    Returns ``(path to serve, record)``: *path* is *src_path* itself (kept: already fast,
    ``original`` requested, conversion rejected or failed) or the converted file
    ``out_dir/<stem>.<FORMAT>.gguf`` (default ``out_dir``: the source's folder). The record
    (JSON-able) says what was chosen, why, and the measurements; see
    :func:`outcrop.models.store.ModelStore` for where it is kept.

    Raises :class:`WeightFormatError` for an unknown *requested* format or a source that
    is not a GGUF file. A conversion that fails (quantizer error, disk full) or is
    rejected by the quality gate is *not* an exception: the original is selected and the
    record carries ``converted.error`` / ``converted.reason``; nothing half-written is left.
    """
    from outcrop.models import quality

    say = note or (lambda m: log.info("%s", m))
    requested = check_format(requested)
    src = Path(src_path)
    fmt = source_format(src)  # raises WeightFormatError for a non-GGUF file
    flags = cpu_flags(cpuinfo)
    klass = cpu_class(flags)
    out = Path(out_dir) if out_dir is not None else src.parent
    threads = _eval_threads(n_threads)
    record: dict[str, Any] = {
        "policy": requested,
        "cpu_class": klass,
        "cpu_flags": sorted(flags & {"avx2", "fma", "f16c", "avx512f", "avx512bw",
                                     "avx512_vnni", "avx_vnni", "asimd", "i8mm", "sve"}),
        "original": {
            "file": src.name,
            "format": fmt,
            "size_bytes": src.stat().st_size,
            "sha256": src_sha256 or sha256_file(src),
        },
        "converted": None,
        "selected": "original",
        "file": src.name,
        "decided_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip

    if requested == "original":
        record["reason"] = "original format requested"
        return src, record
    if requested == "auto":
        target, why = auto_choice(fmt, klass)
    elif requested == fmt:
        target, why = None, f"already {fmt.upper()}"
    else:
        target, why = requested, f"{requested.upper()} requested"
    record["reason"] = why
    if target is None:
        say(f"{src.name}: {why}")
        return src, record

    dst = out / converted_name(src, target)
    conv: dict[str, Any] = {
        "file": dst.name,
        "format": target,
        "made_by": (
            f"llama_model_quantize (llama-cpp-python {_llama_cpp_version()}), "
            f"ftype={target.upper()}, allow_requantize=True, from {fmt.upper()} "
            f"sha256 {record['original']['sha256'][:16]}…"
        ),
        "bound_pct": bound_pct(target),
        "accepted": False,
    }
    record["converted"] = conv
    say(f"{src.name}: {why}; converting {fmt.upper()} -> {target.upper()} …")
    try:
        t0 = time.perf_counter()
        quantize(src, dst, target, n_threads=threads)
        conv["convert_seconds"] = round(time.perf_counter() - t0, 2)
        conv["size_bytes"] = dst.stat().st_size
        conv["sha256"] = sha256_file(dst)
    except (OSError, RuntimeError) as exc:
        msg = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        conv["error"] = msg
        record["reason"] = f"conversion to {target.upper()} failed: {msg}; keeping the original"
        log.warning("%s: %s", src.name, record["reason"])
        return src, record

    try:
        say(f"measuring {fmt.upper()} vs {target.upper()} on the held-out text …")
        p_orig = quality.perplexity(src, n_threads=threads)
        p_conv = quality.perplexity(dst, n_threads=threads)
        g_orig = quality.greedy_answers(src, n_threads=threads)
        g_conv = quality.greedy_answers(dst, n_threads=threads)
        record["eval"] = {
            "text": "outcrop/models/data/" + quality.HELDOUT_RESOURCE,
            "tokens": p_orig.tokens,
            "window": quality.EVAL_WINDOW,
            "greedy_prompts": len(quality.GREEDY_PROMPTS),
            "greedy_tokens": quality.GREEDY_TOKENS,
            "threads": threads,
        }
        record["original"]["perplexity"] = round(p_orig.value, 4)
        conv["perplexity"] = round(p_conv.value, 4)
        delta = 100.0 * (p_conv.value - p_orig.value) / p_orig.value
        conv["delta_pct"] = round(delta, 3)
        conv["greedy_agreement"] = round(quality.agreement(g_orig, g_conv), 4)
        conv["greedy_prefix_share"] = round(quality.prefix_share(g_orig, g_conv), 4)
        if probe:
            record["original"]["decode_tok_s"] = round(
                quality.decode_probe(src, n_threads=threads), 1
            )
            conv["decode_tok_s"] = round(quality.decode_probe(dst, n_threads=threads), 1)
            record["original"]["decode_tok_s_32"] = round(
                quality.batch_probe(src, n_seq=32, n_threads=threads), 1
            )
            conv["decode_tok_s_32"] = round(
                quality.batch_probe(dst, n_seq=32, n_threads=threads), 1
            )
    except Exception as exc:  # a file llama.cpp cannot run: keep the original
        with contextlib.suppress(OSError):
            dst.unlink()
        conv["error"] = f"evaluation failed: {exc}"
        record["reason"] = f"{target.upper()} could not be evaluated ({exc}); keeping the original"
        log.warning("%s: %s", src.name, record["reason"])
        return src, record

    summary = (
        f"perplexity {fmt.upper()} {p_orig.value:.3f} -> {target.upper()} {p_conv.value:.3f} "
        f"({delta:+.2f}%, bound {bound_pct(target):g}%), greedy agreement "
        f"{conv['greedy_agreement']:.0%}"
    )
    if delta > bound_pct(target):
        with contextlib.suppress(OSError):
            dst.unlink()
        record["reason"] = f"{target.upper()} rejected: {summary}; keeping the original"
        log.warning("%s: %s", src.name, record["reason"])
        say(f"warning: {record['reason']}")
        return src, record
    conv["accepted"] = True
    record["selected"] = "converted"
    record["file"] = dst.name
    say(f"{target.upper()} accepted: {summary}")
    return dst, record


def decision_matches(record: dict[str, Any] | None, requested: str, klass: str) -> bool:
    """Whether a stored decision answers *requested* on a CPU of class *klass*."""
    if requested == "original":
        return True
    if not record:
        return False
    conv = record.get("converted") or {}
    if requested == "auto":
        return record.get("policy") == "auto" and record.get("cpu_class") == klass
    if record.get("original", {}).get("format") == requested:
        return True
    return record.get("policy") == requested or (
        conv.get("format") == requested and bool(conv.get("accepted"))
    )
