"""Custom Model Import: what CreateModelImportJob and the imported-model operations mean,
with no HTTP in sight. Answers are Bedrock's shapes as plain dicts.

A job is checked on the spot for what needs no reading of model files (names, the
source URI, a duplicate name); the rest (layout, conversion, format, a load test) runs in
a worker (:mod:`outcrop.imports.work`), so the server keeps serving. A Completed job's
model becomes a card that Converse, InvokeModel and /v1 resolve by ARN or name. The CLI
(``outcrop models import``) goes through this same class on the same data dir.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import string
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from outcrop.errors import ConflictError, ResourceNotFoundError, TooManyTagsError, ValidationError
from outcrop.imports.records import (
    IN_PROGRESS,
    JOB_STATUSES,
    ImportDatabase,
    ImportedModelRecord,
    ImportJobRecord,
)
from outcrop.imports.runner import ImportRunner, pid_alive
from outcrop.imports.work import ERROR, RESULT, SPEC, discard, read_json, write_json
from outcrop.models.catalog import Catalog, ModelCard
from outcrop.models.formats import check_format
from outcrop.models.resolve import ModelResolver, parse_arn
from outcrop.service.control_checks import (
    enum_value,
    missing,
    page,
    parse_time,
    pattern_value,
)

log = logging.getLogger("outcrop.imports")

_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9+\-.])*")
_MODEL_NAME = re.compile(r"([0-9a-zA-Z][_-]?)+")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_TOKEN = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,254}[a-zA-Z0-9])?")
_TAG = re.compile(r"[a-zA-Z0-9\s._:/=+@-]*")
_ID_ALPHABET = string.ascii_lowercase + string.digits
MAX_TAGS = 200
DELETE_WAIT_S = 30.0
DEFAULT_ROLE = "arn:aws:iam::000000000000:role/outcrop-local-import"


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))


def invoke_family(architecture: str, family_hint: str | None) -> str | None:
    """The provider whose InvokeModel body an imported model speaks (Bedrock: Llama body
    for Llama, Mistral body for Mistral and Mixtral, OpenAI-style otherwise). llama.cpp
    writes Mistral models as ``llama``, so the class / model name decides between them."""
    hint = (family_hint or "").lower()
    if "mistral" in hint or "mixtral" in hint or architecture.startswith("mistral"):
        return "mistral"
    if architecture in ("llama", "llama4") or "llama" in hint:
        return "meta"
    return None


def _tags(member: str, value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(f"{member} must be a list of {{key, value}} tags.")
    if len(value) > MAX_TAGS:
        raise TooManyTagsError(f"{member} has {len(value)} tags; at most {MAX_TAGS} are allowed.")
    out = []
    for i, tag in enumerate(value):
        if not isinstance(tag, dict) or "key" not in tag or "value" not in tag:
            raise missing(f"{member}.{i + 1}.member.key")
        key = pattern_value(f"{member}.{i + 1}.member.key", tag["key"], _TAG, 128)
        if not key:
            raise ValidationError(f"{member}.{i + 1}.member.key must not be empty.")
        val = pattern_value(f"{member}.{i + 1}.member.value", tag["value"], _TAG, 256)
        out.append({"key": key, "value": val})
    return out


class ImportService:
    def __init__(
        self,
        catalog: Catalog,
        resolver: ModelResolver,
        data_dir: Path,
        region: str,
        account_id: str,
        *,
        s3_endpoint_url: str | None = None,
        weight_format: str = "auto",
        threads: int = 1,
        manager: Any = None,
        delete_wait_s: float = DELETE_WAIT_S,
    ) -> None:
        self.catalog = catalog
        self.resolver = resolver
        self.data_dir = Path(data_dir)
        self.region = region
        self.account_id = account_id
        self.s3_endpoint_url = s3_endpoint_url
        self.weight_format = weight_format
        self.threads = threads
        self.manager = manager
        self.delete_wait_s = delete_wait_s
        self.db = ImportDatabase(self.data_dir)
        self.jobs_dir = self.data_dir / "imports" / "jobs"
        self.models_dir = self.data_dir / "imports" / "models"
        self.runner: ImportRunner | None = None
        self._lock = threading.Lock()
        self._deleting: set[str] = set()
        resolver.fallbacks.append(self.find_unregistered)

    # ------------------------------------------------------------------ lifecycle

    def start(self, run_jobs: bool = True) -> None:
        """Serve every imported model, settle jobs whose worker finished unwatched, and
        (``run_jobs``) start running queued and interrupted imports."""
        self.sync_models()
        for job in self.db.jobs():
            if job.status == IN_PROGRESS and not pid_alive(job.owner_pid):
                work = Path(job.work_dir)
                if (work / RESULT).exists() or (work / ERROR).exists():
                    self.settle(job.job_id, None)
        if run_jobs:
            self.runner = ImportRunner(
                self.db, self.settle, threads=self.threads, tick=self.sync_models
            )
            self.runner.start()

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()

    # ------------------------------------------------------------------ ARNs

    def _job_arn(self, job_id: str) -> str:
        return f"arn:aws:bedrock:{self.region}:{self.account_id}:model-import-job/{job_id}"

    def _model_arn(self, model_id: str) -> str:
        return f"arn:aws:bedrock:{self.region}:{self.account_id}:imported-model/{model_id}"

    # ------------------------------------------------------------------ CreateModelImportJob

    def create_model_import_job(
        self,
        body: dict[str, Any],
        *,
        owner_pid: int | None = None,
        source_label: str | None = None,
        source_sha256: str | None = None,
        weight_format: str | None = None,
    ) -> dict[str, Any]:
        """Validate and queue an import. ``owner_pid`` (the CLI) runs it itself; the
        server's runner takes it only if that process goes away."""
        for member in ("jobName", "importedModelName", "roleArn", "modelDataSource"):
            if body.get(member) is None:
                raise missing(member)
        source = body["modelDataSource"]
        s3 = source.get("s3DataSource") if isinstance(source, dict) else None
        if not isinstance(s3, dict):
            raise missing("modelDataSource.s3DataSource")
        if not s3.get("s3Uri"):
            raise missing("modelDataSource.s3DataSource.s3Uri")
        job_name = pattern_value("jobName", body["jobName"], _JOB_NAME, 63)
        model_name = pattern_value("importedModelName", body["importedModelName"], _MODEL_NAME, 63)
        pattern_value("roleArn", body["roleArn"], _ROLE_ARN, 2048)
        job_tags = _tags("jobTags", body.get("jobTags"))
        model_tags = _tags("importedModelTags", body.get("importedModelTags"))
        token = body.get("clientRequestToken")
        if token is not None:
            pattern_value("clientRequestToken", token, _TOKEN, 256)
            for job in self.db.jobs():
                if job.client_request_token == token:
                    if job.job_name != job_name:
                        raise ConflictError(
                            f"The client request token {token} was used for job {job.job_name}."
                        )
                    return {"jobArn": job.job_arn}
        uri = self._check_uri(str(s3["s3Uri"]))
        fmt = check_format(weight_format or self.weight_format)
        if self.db.job(job_name) is not None:
            raise ConflictError(f"A model import job named {job_name} already exists.")
        self._check_name_free(model_name)

        job_id, model_id = _new_id(), _new_id()
        work = self.jobs_dir / job_id
        work.mkdir(parents=True, exist_ok=True)
        write_json(work / SPEC, {
            "job_id": job_id, "model_name": model_name, "source_uri": uri,
            "source_sha256": source_sha256, "s3_endpoint_url": self.s3_endpoint_url,
            "data_dir": str(self.data_dir), "weight_format": fmt,
            "model_dir": str(self.models_dir / model_id), "threads": self.threads,
        })  # fmt: skip
        now = time.time()
        self.db.add_job(
            ImportJobRecord(
                job_id=job_id, job_arn=self._job_arn(job_id), job_name=job_name,
                model_name=model_name, model_id=model_id, model_arn=self._model_arn(model_id),
                client_request_token=token, role_arn=body["roleArn"], source_uri=uri,
                source_label=source_label or uri, source_sha256=source_sha256,
                weight_format=fmt, status=IN_PROGRESS, creation_time=now,
                last_modified_time=now, progress={"phase": "queued"},
                tags={"job": job_tags, "model": model_tags}, work_dir=str(work),
                owner_pid=owner_pid,
            )
        )  # fmt: skip
        return {"jobArn": self._job_arn(job_id)}

    def _check_uri(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            key = unquote(parsed.path)
            if not parsed.netloc or ".." in PurePosixPath(key).parts:
                raise ValidationError(
                    f"The model data location {uri} is not a valid S3 URI: it must stay inside "
                    "its bucket (no '..')."
                )
            return uri
        if parsed.scheme == "file":
            if parsed.netloc not in ("", "localhost"):
                raise ValidationError(
                    f"The model data location {uri} must be file:///absolute/path."
                )
            path = Path(unquote(parsed.path))
            if not path.exists():
                raise ValidationError(f"The model data location {uri} does not exist.")
            return path.as_uri()
        raise ValidationError(
            f"The model data location {uri} is not supported: use s3://bucket/prefix/ or "
            "file:///absolute/path (a Hugging Face folder or a GGUF file)."
        )

    def _check_name_free(self, name: str) -> None:
        if self.db.model(name) is not None:
            raise ConflictError(f"An imported model named {name} already exists.")
        for job in self.db.jobs():
            if job.status == IN_PROGRESS and job.model_name == name:
                raise ConflictError(
                    f"The model import job {job.job_name} is already importing a model named {name}."
                )
        card = self.catalog.get(name) or self.catalog.find_custom(name)
        if card is not None:
            raise ConflictError(f"A model named {name} already exists on this server.")

    # ------------------------------------------------------------------ jobs

    def _job(self, identifier: str) -> ImportJobRecord:
        job = self.db.job(identifier)
        if job is None:
            raise ResourceNotFoundError(f"Could not find model import job {identifier}.")
        return job

    def job_details(self, job: ImportJobRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "jobArn": job.job_arn,
            "jobName": job.job_name,
            "importedModelName": job.model_name,
            "roleArn": job.role_arn,
            "modelDataSource": {"s3DataSource": {"s3Uri": job.source_uri}},
            "status": job.status,
            "creationTime": job.creation_time,
            "lastModifiedTime": job.last_modified_time,
        }
        if job.status == "Completed":
            out["importedModelArn"] = job.model_arn
        if job.failure_message:
            out["failureMessage"] = job.failure_message[:2048]
        if job.end_time:
            out["endTime"] = job.end_time
        return out

    def get_model_import_job(self, identifier: str) -> dict[str, Any]:
        return self.job_details(self._job(identifier))

    def list_model_import_jobs(self, q: dict[str, str | None]) -> dict[str, Any]:
        status = enum_value("statusEquals", q.get("statusEquals"), JOB_STATUSES)
        enum_value("sortBy", q.get("sortBy"), ("CreationTime",))
        order = enum_value("sortOrder", q.get("sortOrder"), ("Ascending", "Descending"))
        after = parse_time("creationTimeAfter", q.get("creationTimeAfter"))
        before = parse_time("creationTimeBefore", q.get("creationTimeBefore"))
        name = q.get("nameContains")
        jobs = [
            j
            for j in self.db.jobs()
            if (status is None or j.status == status)
            and (name is None or name.lower() in j.job_name.lower())
            and (after is None or j.creation_time > after)
            and (before is None or j.creation_time < before)
        ]
        jobs.sort(key=lambda j: j.creation_time, reverse=(order or "Descending") == "Descending")
        chunk, token = page(jobs, q.get("maxResults"), q.get("nextToken"))
        summaries = []
        for j in chunk:
            s: dict[str, Any] = {
                "jobArn": j.job_arn,
                "jobName": j.job_name,
                "status": j.status,
                "lastModifiedTime": j.last_modified_time,
                "creationTime": j.creation_time,
                "importedModelName": j.model_name,
            }
            if j.status == "Completed":
                s["importedModelArn"] = j.model_arn
            if j.end_time:
                s["endTime"] = j.end_time
            summaries.append(s)
        out: dict[str, Any] = {"modelImportJobSummaries": summaries}
        if token:
            out["nextToken"] = token
        return out

    def settle(self, job_id: str, exit_code: int | None) -> ImportJobRecord | None:
        """A job whose worker ended: Completed with its model registered, or Failed."""
        job = self.db.job_by_id(job_id)
        if job is None or job.status != IN_PROGRESS:
            return job
        work = Path(job.work_dir)
        result = read_json(work / RESULT)
        if result is not None and Path(result["path"]).is_file():
            model = ImportedModelRecord(
                model_id=job.model_id, model_arn=job.model_arn, model_name=job.model_name,
                job_id=job.job_id, source_uri=job.source_uri,
                architecture=result["architecture"], family_hint=result.get("family_hint"),
                instruct_supported=bool(result["instruct_supported"]),
                context_length=int(result["context_length"]), path=result["path"],
                size_bytes=int(result["size_bytes"]), weights=result.get("weights") or {},
                model_dir=str(self.models_dir / job.model_id), creation_time=time.time(),
                tags=(job.tags or {}).get("model") or [],
            )  # fmt: skip
            if self.db.complete(job_id, model):
                self.register(model)
                log.info("import %s: completed (%s)", job.job_name, job.model_name)
            return self.db.job_by_id(job_id)
        error = read_json(work / ERROR)
        if error is not None:
            message = str(error.get("message"))
        else:
            message = (
                f"The import worker exited unexpectedly (exit code {exit_code}); its log is "
                f"{work / 'worker.log'}."
            )
        discard(work)
        self.db.fail(job_id, message)
        log.info("import %s: failed: %s", job.job_name, message)
        return self.db.job_by_id(job_id)

    # ------------------------------------------------------------------ imported models

    def _model(self, identifier: str) -> ImportedModelRecord:
        model = self.db.model(identifier)
        if model is None:
            raise ResourceNotFoundError(f"Could not find imported model {identifier}.")
        return model

    def get_imported_model(self, identifier: str) -> dict[str, Any]:
        m = self._model(identifier)
        job = self.db.job_by_id(m.job_id)
        out: dict[str, Any] = {
            "modelArn": m.model_arn,
            "modelName": m.model_name,
            "modelDataSource": {"s3DataSource": {"s3Uri": m.source_uri}},
            "creationTime": m.creation_time,
            "modelArchitecture": m.architecture,
            "instructSupported": m.instruct_supported,
        }
        if job is not None:
            out.update(jobName=job.job_name, jobArn=job.job_arn)
        return out

    def list_imported_models(self, q: dict[str, str | None]) -> dict[str, Any]:
        enum_value("sortBy", q.get("sortBy"), ("CreationTime",))
        order = enum_value("sortOrder", q.get("sortOrder"), ("Ascending", "Descending"))
        after = parse_time("creationTimeAfter", q.get("creationTimeAfter"))
        before = parse_time("creationTimeBefore", q.get("creationTimeBefore"))
        name = q.get("nameContains")
        models = [
            m
            for m in self.db.models()
            if (name is None or name.lower() in m.model_name.lower())
            and (after is None or m.creation_time > after)
            and (before is None or m.creation_time < before)
        ]
        models.sort(key=lambda m: m.creation_time, reverse=(order or "Descending") == "Descending")
        chunk, token = page(models, q.get("maxResults"), q.get("nextToken"))
        summaries = [
            {
                "modelArn": m.model_arn,
                "modelName": m.model_name,
                "creationTime": m.creation_time,
                "instructSupported": m.instruct_supported,
                "modelArchitecture": m.architecture,
            }
            for m in chunk
        ]
        out: dict[str, Any] = {"modelSummaries": summaries}
        if token:
            out["nextToken"] = token
        return out

    def delete_imported_model(self, identifier: str) -> None:
        """Unregister (no new request finds it), wait for requests in flight, unload,
        then remove the record and the files. Refuses if requests outlast the wait."""
        m = self._model(identifier)
        with self._lock:
            if m.model_name in self._deleting:
                raise ConflictError(f"The imported model {m.model_name} is being deleted.")
            self._deleting.add(m.model_name)  # sync_models must not bring it back meanwhile
        try:
            card = self.catalog.get(m.model_name)
            if card is not None and card.imported:
                self.catalog.unregister(card.model_id)
                busy = self._wait_idle(card.model_id)
                if busy:
                    self.catalog.register(card)
                    raise ConflictError(
                        f"The imported model {m.model_name} is still serving {busy} request(s) "
                        f"after {self.delete_wait_s:g}s; retry DeleteImportedModel when they "
                        "finish."
                    )
                if self.manager is not None:
                    self.manager.unload(card.model_id)
            self.db.delete_model(m.model_id)
            shutil.rmtree(m.model_dir, ignore_errors=True)
        finally:
            with self._lock:
                self._deleting.discard(m.model_name)

    def _wait_idle(self, model_id: str) -> int:
        """Requests still running on *model_id* after the wait (0: idle or not loaded)."""
        if self.manager is None:
            return 0
        deadline = time.monotonic() + self.delete_wait_s
        while True:
            loaded = next((m for m in self.manager.loaded() if m.card.model_id == model_id), None)
            if loaded is None:
                return 0
            stats = loaded.engine.stats()
            busy = stats.running + stats.waiting
            if busy == 0 or time.monotonic() >= deadline:
                return busy
            time.sleep(0.1)

    # ------------------------------------------------------------------ serving

    def card_for(self, m: ImportedModelRecord) -> ModelCard:
        return ModelCard(
            model_id=m.model_name,
            name=m.model_name,
            provider_name="Imported",
            context_length=m.context_length,
            file_name=Path(m.path).name,
            license="as imported",
            chat_template="gguf" if m.instruct_supported else "completion",
            custom=True,
            imported=True,
            arn=m.model_arn,
            local_path=m.path,
            architecture=m.architecture,
            invoke_family=invoke_family(m.architecture, m.family_hint),
            notes=f"Imported from {m.source_uri} (architecture {m.architecture}).",
        )

    def register(self, m: ImportedModelRecord) -> ModelCard | None:
        if not Path(m.path).is_file():
            log.warning("imported model %s: %s is missing; not served", m.model_name, m.path)
            return None
        return self.catalog.register(self.card_for(m))

    def sync_models(self) -> None:
        """The catalog follows the records (another process may import or delete)."""
        models = self.db.models()
        names = {m.model_name for m in models}
        for m in models:
            if self.catalog.get(m.model_name) is None and m.model_name not in self._deleting:
                self.register(m)
        for card in self.catalog.all():
            if card.imported and card.model_id not in names:
                self.catalog.unregister(card.model_id)

    def find_unregistered(self, identifier: str) -> ModelCard | None:
        """Resolver fallback: an imported model recorded but not yet in the catalog."""
        arn = parse_arn(identifier)
        if arn is not None and arn.resource_type != "imported-model":
            return None
        m = self.db.model(arn.resource_id if arn is not None else identifier)
        if m is None or (arn is not None and m.model_arn != identifier):
            return None
        if m.model_name in self._deleting:
            return None
        return self.register(m)

    # ------------------------------------------------------------------ the CLI's path

    def run_here(self, job_arn: str, report: Any = None) -> ImportJobRecord:
        """Run a job in this process (``outcrop models import``), then settle it."""
        from outcrop.imports.layout import ImportFailure
        from outcrop.imports.work import run_import

        job = self._job(job_arn)
        work = Path(job.work_dir)
        try:
            result = run_import(work, report or (lambda **_v: None))
            write_json(work / RESULT, result)
        except ImportFailure as exc:
            write_json(work / ERROR, {"message": str(exc)})
        except KeyboardInterrupt:
            write_json(work / ERROR, {"message": "The import was interrupted (Ctrl-C)."})
            self.settle(job.job_id, None)
            raise
        except Exception as exc:
            log.exception("import failed")
            write_json(work / ERROR, {"message": f"The import failed: {type(exc).__name__}: {exc}"})
        settled = self.settle(job.job_id, None)
        assert settled is not None
        return settled
