"""llama.cpp's own Hugging Face -> GGUF converter, from the llama-cpp-python sdist of the
installed version (so the GGUF it writes is one this llama.cpp runs).

``convert_hf_to_gguf.py`` with its ``conversion/`` package and the ``gguf-py`` it was
written against are extracted once into ``<data-dir>/cache/llama-convert/<version>/``
(the sdist is fetched with pip, as the bench does for llama-server; about 75 MB, once). The
converter runs as a child process: it needs torch, transformers, numpy and sentencepiece,
all outcrop dependencies already, and its memory is returned when it exits.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from outcrop.imports.layout import ImportFailure

SCRIPT = "convert_hf_to_gguf.py"
_MEMBERS = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


def converter_dir(cache_root: Path) -> Path:
    return cache_root / "llama-convert" / version("llama-cpp-python")


def ensure_converter(cache_root: Path, say: Callable[[str], None] = lambda _m: None) -> Path:
    """The folder holding ``convert_hf_to_gguf.py``; fetched and unpacked on first use."""
    target = converter_dir(cache_root)
    if (target / SCRIPT).is_file():
        return target
    ver = version("llama-cpp-python")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".llama-convert-", dir=target.parent) as tmp:
        work = Path(tmp)
        say(f"fetching llama.cpp's converter (llama-cpp-python {ver} sdist, once)")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", "--no-input", f"llama-cpp-python=={ver}",
             "-d", str(work)],
            capture_output=True, text=True,
        )  # fmt: skip
        sdists = list(work.glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or len(sdists) != 1:
            tail = (proc.stderr or proc.stdout or "").strip()[-600:]
            raise ImportFailure(
                "Converting a Hugging Face folder needs llama.cpp's converter from the "
                f"llama-cpp-python {ver} source package, and pip could not fetch it: {tail}"
            )
        out = work / "out"
        with tarfile.open(sdists[0]) as tar:
            members = []
            for m in tar.getmembers():
                _, sep, rel = m.name.partition("/vendor/llama.cpp/")
                if sep and rel.startswith(_MEMBERS):
                    m.name = rel
                    members.append(m)
            tar.extractall(out, members=members, filter="data")
        if not (out / SCRIPT).is_file():
            raise ImportFailure(f"The llama-cpp-python {ver} sdist holds no {SCRIPT}.")
        try:
            os.rename(out, target)
        except OSError:
            if not (target / SCRIPT).is_file():  # not another process winning the race
                raise
    return target


def run_converter(
    folder: Path,
    out_file: Path,
    cache_root: Path,
    *,
    outtype: str = "auto",
    threads: int = 1,
    log_path: Path | None = None,
    say: Callable[[str], None] = lambda _m: None,
) -> None:
    """Convert the Hugging Face *folder* to *out_file* (written to a temporary name, renamed
    when complete). Raises ImportFailure with the converter's reason."""
    conv = ensure_converter(cache_root, say)
    tmp = out_file.with_name(f".{out_file.name}.tmp-{os.getpid()}")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("NO_LOCAL_GGUF", None)  # the converter's own gguf-py, not PyPI's
    cmd = [sys.executable, str(conv / SCRIPT), str(folder), "--outfile", str(tmp),
           "--outtype", outtype]  # fmt: skip
    say(f"converting {folder.name} to GGUF with llama.cpp's {SCRIPT}")
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if log_path is not None:
            log_path.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not tmp.is_file():
            raise ImportFailure(explain_failure(proc.stdout + proc.stderr, proc.returncode))
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)


def explain_failure(output: str, code: int) -> str:
    """The converter's failure as a person can act on it."""
    m = re.search(r"Model (\S+) is not supported", output) or re.search(
        r"Architecture '([^']+)' not supported", output
    )
    if m:
        return (
            f"The model architecture {m.group(1)} is not supported by llama.cpp's converter "
            f"(llama-cpp-python {version('llama-cpp-python')}); supported families include "
            "Llama, Mistral, Mixtral, Qwen2/2.5/3, Gemma, GPT-BigCode and Phi."
        )
    if "No space left on device" in output or "Errno 28" in output:
        return "The disk filled up while converting the model to GGUF; free space and retry."
    if "BPE pre-tokenizer was not recognized" in output:
        return (
            "llama.cpp's converter does not recognize this model's tokenizer (BPE "
            "pre-tokenizer); the model family is too new for this llama.cpp."
        )
    lines = [ln for ln in output.strip().splitlines() if ln.strip()]
    tail = " | ".join(lines[-3:])[-700:]
    return f"Converting the model to GGUF failed (exit code {code}): {tail}"


def cleanup_partial(folder: Path) -> None:
    """Remove temporaries a killed converter left in *folder*."""
    for stale in folder.glob(".*.tmp-*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
