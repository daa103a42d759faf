"""One import, in phases that each leave a checkpoint, so a restarted job resumes where
it stopped instead of starting over.

``JOB_DIR/spec.json`` says what to import; the phases:

1. **fetch** — ``file://``: the path itself. ``s3://``: through the configured endpoint,
   every object under the prefix is downloaded into ``JOB_DIR/staging`` (an object already
   there with its size is kept); without an endpoint, ``<data-dir>/s3/<bucket>/<key>``.
   Keys (and resolved paths) that leave their bucket are refused.
2. **inspect** — :func:`outcrop.imports.layout.classify`: one GGUF or a Hugging Face folder.
3. **convert** — a Hugging Face folder becomes ``JOB_DIR/model/model.gguf`` (unquantized,
   llama.cpp's converter); a GGUF is checked against its sha256 when one is known, then
   hard-linked into ``JOB_DIR/model`` (or, across file systems, referenced where it is).
4. **format** — the ``--format`` rule and quality gate (:mod:`outcrop.models.formats`):
   the served file is the original or a gated conversion; the decision is kept in
   ``JOB_DIR/model/weights.json``.
5. **verify** — llama.cpp loads the served file (an architecture it cannot run fails here,
   named), and its metadata give the architecture, chat template and context length.
6. **install** — ``JOB_DIR/model`` is renamed to the model's folder; ``result.json`` last.

Failures are :class:`ImportFailure` with the job's failureMessage; temporary files are
removed by the phase that made them, and a half-built model folder is never installed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from outcrop.imports import converter
from outcrop.imports.layout import GgufFacts, ImportFailure, Layout, classify, read_gguf
from outcrop.jobs.files import SPEC, read_json, write_json
from outcrop.locations import valid_bucket

WEIGHTS = "weights.json"
LINK = "source.json"
CHUNK = 1 << 20

Report = Callable[..., None]


def _quiet(**_values: Any) -> None:
    pass


# --------------------------------------------------------------------------- 1. fetch


def fetch(spec: dict[str, Any], job_dir: Path, report: Report) -> Path:
    parsed = urlparse(spec["source_uri"])
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme != "s3":
        raise ImportFailure(f"{spec['source_uri']} is not an s3:// or file:// URI.")
    bucket, key = parsed.netloc, unquote(parsed.path).lstrip("/")
    if ".." in PurePosixPath(key).parts or not valid_bucket(bucket):
        raise ImportFailure(f"{spec['source_uri']} escapes its bucket ('..').")
    if not spec.get("s3_endpoint_url"):
        root = (Path(spec["data_dir"]) / "s3" / bucket).resolve()
        path = (root / key).resolve()
        if not path.is_relative_to(root):
            raise ImportFailure(f"{spec['source_uri']} resolves outside its bucket.")
        if not path.exists():
            raise ImportFailure(
                f"{spec['source_uri']} does not exist (no S3 endpoint is configured, so it "
                f"is read from {path}; start the server with --s3-endpoint-url to use S3)."
            )
        return path
    return _download(spec, bucket, key, job_dir / "staging", report)


def _download(spec: dict[str, Any], bucket: str, key: str, staging: Path, report: Report) -> Path:
    from botocore.exceptions import BotoCoreError, ClientError

    from outcrop.locations import s3_client

    client = s3_client(spec["s3_endpoint_url"])
    try:
        objects: list[tuple[str, int]] = []
        if key and not key.endswith("/"):
            with contextlib.suppress(ClientError):
                head = client.head_object(Bucket=bucket, Key=key)
                objects = [(key, int(head["ContentLength"]))]
        prefix = key if not objects else ""
        if not objects:
            if prefix and not prefix.endswith("/"):
                prefix += "/"
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            objects = [(o["Key"], int(o["Size"])) for p in pages for o in p.get("Contents", [])]
    except (BotoCoreError, ClientError) as exc:
        raise ImportFailure(f"{spec['source_uri']} could not be listed: {exc}") from None
    objects = [(k, n) for k, n in objects if not k.endswith("/")]
    if not objects:
        raise ImportFailure(f"{spec['source_uri']} holds no objects.")
    total = sum(n for _, n in objects)
    staging.mkdir(parents=True, exist_ok=True)
    done = 0
    for obj_key, size in objects:
        rel = PurePosixPath(obj_key[len(prefix) :] if prefix else obj_key.rsplit("/", 1)[-1])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ImportFailure(f"The object key {obj_key!r} would escape the import folder.")
        dest = staging.joinpath(*rel.parts)
        if dest.is_file() and dest.stat().st_size == size:
            done += size  # fetched before a restart
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        _check_space(dest.parent, size, "download the model")
        tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
        try:
            body = client.get_object(Bucket=bucket, Key=obj_key)["Body"]
            with open(tmp, "wb") as out:
                for chunk in iter(lambda body=body: body.read(CHUNK), b""):
                    out.write(chunk)
                    done += len(chunk)
                    report(phase="fetch", done_bytes=done, total_bytes=total)
            os.replace(tmp, dest)
        except (BotoCoreError, ClientError) as exc:
            raise ImportFailure(f"s3://{bucket}/{obj_key} could not be read: {exc}") from None
        except OSError as exc:
            raise _disk_failure(exc, "downloading the model") from None
        finally:
            tmp.unlink(missing_ok=True)
    if len(objects) == 1 and prefix == "":
        return staging / PurePosixPath(objects[0][0]).name
    return staging


def _check_space(folder: Path, need: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if free < need:
        raise ImportFailure(
            f"Not enough disk space to {what}: about {need / 2**30:.1f} GiB is needed in "
            f"{folder}, {free / 2**30:.1f} GiB is free."
        )


def _disk_failure(exc: OSError, what: str) -> ImportFailure:
    if exc.errno == errno.ENOSPC:
        return ImportFailure(f"The disk filled up while {what}; free space and import again.")
    return ImportFailure(f"{what.capitalize()} failed: {exc}")


# --------------------------------------------------------------------------- 3. convert / link


def _sha256(path: Path, report: Report) -> str:
    h = hashlib.sha256()
    total, done = path.stat().st_size, 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK * 8), b""):
            h.update(chunk)
            done += len(chunk)
            report(phase="checksum", done_bytes=done, total_bytes=total)
    return h.hexdigest()


def place_gguf(src: Path, build: Path, expected_sha256: str | None, report: Report) -> Path:
    """The source GGUF inside *build*: a hard link when the file system allows, else a
    reference to where it is (recorded with its size and sha256). Never a copy."""
    record = read_json(build / LINK)
    if record is not None and linked_path(record, build).is_file():
        return linked_path(record, build)
    digest = _sha256(src, report)
    if expected_sha256 and digest != expected_sha256:
        raise ImportFailure(
            f"{src} does not match its checksum (sha256 {digest[:16]}…, expected "
            f"{expected_sha256[:16]}…): the file is damaged; pull it again."
        )
    name = src.name if src.name.endswith(".gguf") else f"{src.name}.gguf"
    link = build / name
    link.unlink(missing_ok=True)
    record = {"source": str(src), "sha256": digest, "size_bytes": src.stat().st_size}
    try:
        os.link(src, link)
        record.update(how="hard link", file=link.name)
    except OSError:
        record.update(how="reference", path=str(src.resolve()))
    write_json(build / LINK, record)
    return linked_path(record, build)


def linked_path(record: dict[str, Any], folder: Path) -> Path:
    """The GGUF a ``source.json`` record names, for the model folder it is in."""
    if record.get("how") == "hard link":
        return folder / record["file"]
    return Path(record["path"])


def convert_hf(
    layout: Layout, build: Path, spec: dict[str, Any], job_dir: Path, report: Report
) -> Path:
    assert layout.hf is not None
    out = build / "model.gguf"
    if out.is_file():
        with contextlib.suppress(ImportFailure):
            read_gguf(out)
            return out  # converted before a restart
    converter.cleanup_partial(build)
    # f32 weights become f16, bf16 and f16 stay as they are: about the weights' size.
    _check_space(build, layout.hf.weight_bytes + (64 << 20), "convert the model to GGUF")
    report(phase="convert")
    t0 = time.perf_counter()
    converter.run_converter(
        layout.hf.path, out, Path(spec["data_dir"]) / "cache",
        threads=int(spec.get("threads") or 1), log_path=job_dir / "convert.log",
        say=lambda m: report(phase="convert", note=m),
    )  # fmt: skip
    write_json(build / "conversion.json", {
        "seconds": round(time.perf_counter() - t0, 2),
        "from": layout.hf.architecture, "weight_bytes": layout.hf.weight_bytes,
        "gguf_bytes": out.stat().st_size,
    })  # fmt: skip
    return out


# --------------------------------------------------------------------------- 4. format


def choose_format(
    gguf: Path, build: Path, spec: dict[str, Any], report: Report
) -> tuple[Path, dict]:
    from outcrop.models import formats

    decided = read_json(build / WEIGHTS)
    if decided is not None:
        served = build / decided["file"] if decided.get("selected") == "converted" else gguf
        if served.is_file():
            return served, decided
    converter.cleanup_partial(build)  # a quantizer killed mid-write (we own this folder)
    report(phase="format")
    try:
        served, weights = formats.choose_and_convert(
            gguf, spec.get("weight_format") or "auto", out_dir=build, probe=False,
            note=lambda m: report(phase="format", note=m),
        )  # fmt: skip
    except formats.WeightFormatError as exc:
        raise ImportFailure(str(exc)) from None
    if served != gguf and gguf.parent == build and gguf.name == "model.gguf":
        # The unquantized conversion only served as the gate's reference.
        gguf.unlink(missing_ok=True)
        weights["original"]["kept"] = False
    write_json(build / WEIGHTS, weights)
    return served, weights


# --------------------------------------------------------------------------- 5. verify


def check_loads(path: Path, facts: GgufFacts) -> None:
    """llama.cpp must load what is registered; its failure names the architecture."""
    from importlib.metadata import version

    import llama_cpp as ll

    from outcrop.engines.llamacpp.model import _init_backend

    _init_backend()
    params = ll.llama_model_default_params()
    model = ll.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ImportFailure(
            f"llama.cpp (llama-cpp-python {version('llama-cpp-python')}) cannot load this "
            f"model: architecture '{facts.architecture}' is not one it runs, or the file is "
            "damaged."
        )
    ll.llama_model_free(model)


# --------------------------------------------------------------------------- the job


def run_import(job_dir: Path, report: Report = _quiet) -> dict[str, Any]:
    """Do (or finish) the import described by ``job_dir/spec.json``; returns the result
    (the worker publishes it, then writes ``result.json``). Raises ImportFailure."""
    spec = json.loads((job_dir / SPEC).read_text())
    final = Path(spec["model_dir"])
    build = job_dir / "model"
    if not final.is_dir():
        report(phase="fetch")
        source = fetch(spec, job_dir, report)
        report(phase="inspect")
        layout = classify(source)
        build.mkdir(parents=True, exist_ok=True)
        family_hint: str | None
        if layout.kind == "hf":
            assert layout.hf is not None
            gguf = convert_hf(layout, build, spec, job_dir, report)
            family_hint = layout.hf.architecture
        else:
            assert layout.gguf is not None
            gguf = place_gguf(layout.gguf.path, build, spec.get("source_sha256"), report)
            family_hint = layout.gguf.name
        served, weights = choose_format(gguf, build, spec, report)
        report(phase="verify")
        facts = read_gguf(served)
        check_loads(served, facts)
        write_json(build / "facts.json", {"family_hint": family_hint})
        staging = job_dir / "staging"
        if staging.is_dir():
            shutil.rmtree(staging, ignore_errors=True)  # downloaded copy: no longer needed
        report(phase="install")
        final.parent.mkdir(parents=True, exist_ok=True)
        os.rename(build, final)
    weights = read_json(final / WEIGHTS) or {}
    link = read_json(final / LINK)
    if weights.get("selected") == "converted":
        served = final / weights["file"]
    elif link is not None:
        served = linked_path(link, final)
    else:
        served = final / "model.gguf"
    facts = read_gguf(served)
    conversion = read_json(final / "conversion.json")
    result = {
        "path": str(served),
        "architecture": facts.architecture,
        "family_hint": (read_json(final / "facts.json") or {}).get("family_hint"),
        "instruct_supported": facts.chat_template is not None,
        "context_length": facts.context_length or 2048,
        "size_bytes": served.stat().st_size,
        "weights": weights,
        "conversion": conversion,
    }
    report(phase="completed")
    return result


def discard(job_dir: Path) -> None:
    """After a failure: nothing of the job's temporary files stays behind."""
    for name in ("staging", "model"):
        shutil.rmtree(job_dir / name, ignore_errors=True)
