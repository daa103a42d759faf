"""Custom Model Import's pure parts on real (tiny) files: layout checks, local stores,
names, the body family, the resolver's fallback and dialect ID."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from outcrop.imports import sources
from outcrop.imports.layout import ImportFailure, classify, read_gguf, read_hf_folder
from outcrop.imports.sources import model_name_for, resolve_hf, resolve_ollama, resolve_source
from outcrop.models.catalog import Catalog, ModelCard
from outcrop.models.resolve import ModelResolver
from outcrop.service.imports import invoke_family


def write_gguf(path: Path, arch: str = "llama", template: str | None = "{{ x }}") -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(4096)
    w.add_name("Tiny Test")
    if template:
        w.add_chat_template(template)
    w.add_tensor("token_embd.weight", np.ones((8, 4), dtype=np.float32))
    w.add_tensor("output_norm.weight", np.ones((4,), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_safetensors(path: Path, n: int = 16) -> Path:
    data = np.arange(n, dtype=np.float32).tobytes()
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, len(data)]}})
    raw = header.encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


def hf_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    write_safetensors(root / "model.safetensors")
    (root / "tokenizer.json").write_text("{}")
    (root / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ m }}"}))
    return root


# --------------------------------------------------------------------------- GGUF


def test_gguf_facts_come_from_its_metadata(tmp_path):
    facts = read_gguf(write_gguf(tmp_path / "m.gguf"))
    assert (facts.architecture, facts.context_length, facts.name) == ("llama", 4096, "Tiny Test")
    assert facts.chat_template == "{{ x }}"
    assert read_gguf(write_gguf(tmp_path / "b.gguf", template=None)).chat_template is None


def test_bad_magic_is_named(tmp_path):
    bad = tmp_path / "m.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(ImportFailure, match="not a GGUF file"):
        classify(bad)


def test_truncated_gguf_tensors_are_detected(tmp_path):
    path = write_gguf(tmp_path / "m.gguf")
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    with pytest.raises(ImportFailure, match="truncated|corrupt"):
        classify(path)


def test_folder_with_two_ggufs_asks_for_one(tmp_path):
    write_gguf(tmp_path / "a.gguf")
    write_gguf(tmp_path / "b.gguf")
    with pytest.raises(ImportFailure, match="holds 2 GGUF files"):
        classify(tmp_path)


def test_folder_with_one_gguf_is_that_gguf(tmp_path):
    write_gguf(tmp_path / "only.gguf")
    layout = classify(tmp_path)
    assert layout.kind == "gguf" and layout.gguf.path.name == "only.gguf"


# --------------------------------------------------------------------------- HF folders


def test_hf_folder_is_recognized(tmp_path):
    facts = read_hf_folder(hf_folder(tmp_path / "m"))
    assert facts.architecture == "LlamaForCausalLM" and facts.chat_template


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").unlink(), "has no config.json"),
        (lambda d: (d / "model.safetensors").unlink(), "no weights"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer"),
        (
            lambda d: (d / "model.safetensors").write_bytes(
                (d / "model.safetensors").read_bytes()[:-8]
            ),
            "is truncated",
        ),
        (lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64), "not a valid safetensors"),
        (lambda d: (d / "config.json").write_text("{}"), "names no model class"),
    ],
)
def test_broken_hf_folders_say_what_is_wrong(tmp_path, damage, message):
    folder = hf_folder(tmp_path / "m")
    damage(folder)
    with pytest.raises(ImportFailure, match=message):
        classify(folder)


def test_a_lone_safetensors_file_points_at_its_folder(tmp_path):
    with pytest.raises(ImportFailure, match="import its folder"):
        classify(write_safetensors(tmp_path / "model.safetensors"))


# --------------------------------------------------------------------------- local stores


def fake_ollama(home: Path, name: str, tag: str, blob_bytes: bytes) -> str:
    root = home / ".ollama" / "models"
    digest = hashlib.sha256(blob_bytes).hexdigest()
    (root / "blobs").mkdir(parents=True)
    (root / "blobs" / f"sha256-{digest}").write_bytes(blob_bytes)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": "sha256:" + "0" * 64, "size": 10},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
             "size": len(blob_bytes)},
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:" + "1" * 64,
             "size": 5},
        ],
    }  # fmt: skip
    mdir = root / "manifests" / "registry.ollama.ai" / "library" / name
    mdir.mkdir(parents=True)
    (mdir / tag).write_text(json.dumps(manifest))
    return digest


def test_ollama_name_resolves_to_its_blob_and_digest(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("OLLAMA_MODELS", raising=False)
    blob = write_gguf(tmp_path / "x.gguf").read_bytes()
    digest = fake_ollama(tmp_path, "smol", "latest", blob)
    src = resolve_ollama("smol")
    assert src.sha256 == digest and src.uri.endswith(f"sha256-{digest}")
    assert src.suggested_name == "smol-latest"
    assert resolve_source("ollama:smol:latest").uri == src.uri
    with pytest.raises(ImportFailure, match="no model nope"):
        resolve_ollama("nope")
    with pytest.raises(ImportFailure, match="not a valid Ollama model name"):
        resolve_ollama("../../etc:passwd")
    (found,) = sources.scan_ollama()
    assert (found.source, found.architecture) == ("ollama:smol:latest", "llama")


def test_hf_cache_snapshot_is_found_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    repo = tmp_path / "hf" / "hub" / "models--Org--Tiny"
    hf_folder(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    src = resolve_hf("Org/Tiny")
    assert src.uri.endswith("snapshots/abc123") and src.suggested_name == "Tiny"
    with pytest.raises(ImportFailure, match="not in the Hugging Face cache"):
        resolve_hf("Org/Missing")
    found = sources.scan_hf_cache()
    assert [(f.source, f.architecture) for f in found] == [("hf:Org/Tiny", "LlamaForCausalLM")]


def test_names_are_valid_imported_model_names():
    import re

    for text in ("llama3.2:1b", "SmolLM2-135M-Instruct.Q4_1", "--x--", "a" * 100, "..."):
        name = model_name_for(text)
        assert re.fullmatch(r"([0-9a-zA-Z][_-]?)+", name) and len(name) <= 63, name


# --------------------------------------------------------------------------- serving


def test_body_family_follows_architecture():
    assert invoke_family("llama", "LlamaForCausalLM") == "meta"
    assert invoke_family("llama", "MistralForCausalLM") == "mistral"
    assert invoke_family("llama", "Mixtral 8x7B") == "mistral"
    assert invoke_family("qwen2", "Qwen2ForCausalLM") is None
    assert invoke_family("gemma3", None) is None


def _imported(name: str, family: str | None) -> ModelCard:
    return ModelCard(
        model_id=name, name=name, provider_name="Imported", context_length=2048,
        file_name="m.gguf", license="x", custom=True, imported=True,
        arn=f"arn:aws:bedrock:us-east-1:000000000000:imported-model/{'a' * 12}",
        local_path="/nonexistent.gguf", architecture="llama", invoke_family=family,
    )  # fmt: skip


def test_resolver_finds_imported_models_by_arn_name_and_fallback():
    catalog = Catalog()
    resolver = ModelResolver(catalog)
    card = _imported("my-llama", "meta")
    asked: list[str] = []

    def fallback(text: str):
        asked.append(text)
        return catalog.register(card) if text in (card.arn, card.model_id) else None

    resolver.fallbacks.append(fallback)
    resolved = resolver.resolve(card.arn)  # not registered yet: the fallback registers it
    assert resolved.card.model_id == "my-llama" and asked == [card.arn]
    assert resolver.resolve("my-llama").card is resolved.card
    assert resolved.dialect_id.startswith("meta.")
    catalog.register(_imported("my-qwen", None))
    assert not resolver.resolve("my-qwen").dialect_id.startswith(("meta.", "mistral."))


# --------------------------------------------------------------------------- the service


class _Stats:
    def __init__(self, running: int) -> None:
        self.running, self.waiting = running, 0


class _BusyEngine:
    """An engine with requests that never finish (the refusal path)."""

    def __init__(self, running: int) -> None:
        self.running = running

    def stats(self) -> _Stats:
        return _Stats(self.running)


class _Manager:
    def __init__(self, card: ModelCard, running: int) -> None:
        from outcrop.models.manager import LoadedModel

        self.items = [LoadedModel(card, _BusyEngine(running))]  # type: ignore[arg-type]
        self.unloaded: list[str] = []

    def loaded(self):
        return self.items

    def unload(self, model_id: str) -> bool:
        self.unloaded.append(model_id)
        return True


def _service_with_model(tmp_path: Path, running: int, wait: float):
    from outcrop.db import Database
    from outcrop.imports.records import ImportedModelRecord
    from outcrop.service.imports import ImportService

    catalog = Catalog()
    service = ImportService(
        catalog, ModelResolver(catalog), tmp_path / "data", "us-east-1", "000000000000",
        Database(tmp_path / "data"), delete_wait_s=wait,
    )  # fmt: skip
    gguf = write_gguf(tmp_path / "m.gguf")
    model_dir = tmp_path / "data" / "imports" / "models" / "abcdefabcdef"
    model_dir.mkdir(parents=True)
    record = ImportedModelRecord(
        model_id="abcdefabcdef", model_arn=service._model_arn("abcdefabcdef"),
        model_name="busy", job_id="j" * 12, source_uri="s3://models/busy/", architecture="llama",
        family_hint=None, instruct_supported=True, context_length=4096, path=str(gguf),
        size_bytes=gguf.stat().st_size, weights={}, model_dir=str(model_dir),
        creation_time=1.0, tags=[],
    )  # fmt: skip
    with service.db.session() as s:
        s.add(record)
    service.sync_models()
    card = catalog.get("busy")
    assert card is not None and card.imported
    service.manager = _Manager(card, running)
    return service, catalog, model_dir


def test_delete_refuses_clearly_while_requests_outlast_the_wait(tmp_path):
    from outcrop.errors import ConflictError

    service, catalog, model_dir = _service_with_model(tmp_path, running=2, wait=0.3)
    with pytest.raises(ConflictError, match="still serving 2 request"):
        service.delete_imported_model("busy")
    assert catalog.get("busy") is not None and model_dir.is_dir()  # nothing was removed
    assert service.manager.unloaded == []
    assert service.get_imported_model("busy")["modelName"] == "busy"


def test_delete_of_an_idle_model_unloads_and_removes_it(tmp_path):
    from outcrop.errors import ResourceNotFoundError

    service, catalog, model_dir = _service_with_model(tmp_path, running=0, wait=5)
    arn = service._model_arn("abcdefabcdef")
    service.delete_imported_model(arn)
    assert service.manager.unloaded == ["busy"]
    assert catalog.get("busy") is None and not model_dir.exists()
    service.sync_models()
    assert catalog.get("busy") is None
    with pytest.raises(ResourceNotFoundError):
        service.get_imported_model("busy")


def test_create_checks_names_uris_and_tokens_before_queueing(tmp_path):
    from outcrop.errors import ConflictError, ValidationError

    service, _, _ = _service_with_model(tmp_path, running=0, wait=0)
    gguf = tmp_path / "m.gguf"
    body = {
        "jobName": "j1", "importedModelName": "fresh", "roleArn": "arn:aws:iam::000000000000:role/r",
        "modelDataSource": {"s3DataSource": {"s3Uri": gguf.as_uri()}}, "clientRequestToken": "t1",
    }  # fmt: skip
    arn = service.create_model_import_job(body)["jobArn"]
    assert service.create_model_import_job(body)["jobArn"] == arn
    with pytest.raises(ConflictError, match="t1"):
        service.create_model_import_job({**body, "jobName": "j2"})
    with pytest.raises(ConflictError, match="already importing"):
        service.create_model_import_job({**body, "jobName": "j3", "clientRequestToken": None})
    with pytest.raises(ConflictError, match="already exists"):
        service.create_model_import_job(
            {**body, "jobName": "j4", "importedModelName": "busy", "clientRequestToken": None}
        )
    bad = {**body, "jobName": "j5", "importedModelName": "other", "clientRequestToken": None}
    for uri in ("s3://b/a/../../x", "s3:///nobucket", "ftp://x/y", (tmp_path / "none").as_uri()):
        with pytest.raises(ValidationError):
            service.create_model_import_job(
                {**bad, "modelDataSource": {"s3DataSource": {"s3Uri": uri}}}
            )
    with pytest.raises(ValidationError, match="Value null at 'modelDataSource'"):
        service.create_model_import_job({k: v for k, v in bad.items() if k != "modelDataSource"})
    summaries = service.list_model_import_jobs({})["modelImportJobSummaries"]
    assert [s["jobName"] for s in summaries] == ["j1"] and summaries[0]["status"] == "InProgress"


def test_lmstudio_models_are_scanned(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / ".lmstudio" / "models" / "org" / "repo"
    folder.mkdir(parents=True)
    write_gguf(folder / "tiny.Q8_0.gguf")
    write_gguf(folder / "mmproj-tiny.gguf")  # a vision projector is not a model
    (found,) = sources.scan_lmstudio()
    assert found.source == str(folder / "tiny.Q8_0.gguf") and found.architecture == "llama"


def test_not_enough_disk_fails_before_writing_and_names_the_sizes(tmp_path, monkeypatch):
    from collections import namedtuple

    from outcrop.imports import work

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(work.shutil, "disk_usage", lambda _p: usage(10 << 30, 0, 1 << 20))
    layout = classify(hf_folder(tmp_path / "m"))
    build = tmp_path / "build"
    build.mkdir()
    with pytest.raises(ImportFailure, match="Not enough disk space to convert the model"):
        work.convert_hf(layout, build, {"data_dir": str(tmp_path)}, tmp_path, lambda **_v: None)
    assert list(build.iterdir()) == []


def test_enospc_while_writing_is_a_disk_full_message():
    import errno

    from outcrop.imports.work import _disk_failure

    failure = _disk_failure(OSError(errno.ENOSPC, "No space left on device"), "downloading")
    assert "disk filled up while downloading" in str(failure)


# --------------------------------------------------------------------------- botocore


IMPORT_OPERATIONS = (
    "CreateModelImportJob", "GetModelImportJob", "ListModelImportJobs",
    "GetImportedModel", "ListImportedModels", "DeleteImportedModel",
)  # fmt: skip


def test_routes_match_botocore():
    import botocore.session

    from outcrop.api.imports import ImportApi
    from outcrop.api.routing import Router

    model = botocore.session.get_session().get_service_model("bedrock")
    router = Router()
    ImportApi(None).register(router)  # type: ignore[arg-type]
    routes = {r.operation: r for r in router._routes}
    assert set(routes) == set(IMPORT_OPERATIONS)
    for name in IMPORT_OPERATIONS:
        http = model.operation_model(name).http
        assert routes[name].method == http["method"], name
        assert "/" + "/".join(routes[name].parts) == http["requestUri"].split("?")[0], name


def test_answers_satisfy_botocore_output_shapes(tmp_path):
    import botocore.session

    from tests.unit.test_catalog import _check_constraints

    model = botocore.session.get_session().get_service_model("bedrock")
    service, _, _ = _service_with_model(tmp_path, running=0, wait=0)
    body = {
        "jobName": "shape-job",
        "importedModelName": "shaped",
        "roleArn": "arn:aws:iam::000000000000:role/r",
        "modelDataSource": {"s3DataSource": {"s3Uri": "s3://models/tiny/"}},
    }  # fmt: skip  (file:// sources are outcrop's extension, outside the S3Uri pattern)
    arn = service.create_model_import_job(body)["jobArn"]
    answers = {
        "CreateModelImportJob": {"jobArn": arn},
        "GetModelImportJob": service.get_model_import_job(arn),
        "ListModelImportJobs": service.list_model_import_jobs({}),
        "GetImportedModel": service.get_imported_model("busy"),
        "ListImportedModels": service.list_imported_models({}),
    }
    for name, answer in answers.items():
        shape = model.operation_model(name).output_shape
        unknown = set(answer) - set(shape.members)
        assert not unknown, (name, unknown)
        for member in shape.required_members:
            assert member in answer, (name, member)
        _check_constraints(shape, {k: v for k, v in answer.items() if not k.endswith("Time")})
    summary = answers["ListModelImportJobs"]["modelImportJobSummaries"][0]
    job_shape = model.shape_for("ModelImportJobSummary")
    assert set(summary) <= set(job_shape.members) and set(job_shape.required_members) <= set(
        summary
    )


def test_mapped_s3_sources_stay_inside_their_bucket(tmp_path):
    from outcrop.imports.work import fetch

    bucket = tmp_path / "s3" / "models"
    hf_folder(bucket / "good")
    outside = hf_folder(tmp_path / "elsewhere")
    (bucket / "sneaky").symlink_to(outside, target_is_directory=True)
    spec = {"data_dir": str(tmp_path), "s3_endpoint_url": None}
    assert fetch({**spec, "source_uri": "s3://models/good/"}, tmp_path, lambda **_v: None) == (
        bucket / "good"
    )
    for uri, message in (
        ("s3://models/sneaky/", "resolves outside its bucket"),
        ("s3://models/a/../../x/", "escapes its bucket"),
        ("s3://models/missing/", "does not exist"),
    ):
        with pytest.raises(ImportFailure, match=message):
            fetch({**spec, "source_uri": uri}, tmp_path, lambda **_v: None)
