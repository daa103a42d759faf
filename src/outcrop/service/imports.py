"""Custom Model Import: what CreateModelImportJob and the imported-model operations mean,
with no HTTP in sight. Answers are Bedrock's shapes as plain dicts.

A job is checked on the spot for what needs no reading of model files (names, the
source URI, a duplicate name); the rest (layout, conversion, format, a load test) is the
``model-import`` job kind, a ``process`` worker of the shared
:class:`~outcrop.jobs.runner.JobRunner` (:mod:`outcrop.imports.worker`), so the server keeps
serving. A succeeded job's model becomes a card that Converse, InvokeModel and /v1 resolve
by ARN or name. ``outcrop models import`` goes through this same class on the same
records, running the job in its own process (:meth:`ImportService.run_here`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import threading
import time
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from outcrop.db import Database
from outcrop.errors import ConflictError, ResourceNotFoundError, TooManyTagsError, ValidationError
from outcrop.imports.records import KIND, ImportedModelRecord, ImportJobRecord, ImportRecords
from outcrop.imports.work import discard
from outcrop.jobs import files as job_files
from outcrop.jobs.kinds import JobKind
from outcrop.jobs.records import ACTIVE, FAILED, QUEUED, RUNNING, SUCCEEDED, JobRow
from outcrop.jobs.runner import JobRunner
from outcrop.jobs.store import JobStore
from outcrop.locations import FileRoots, confined_file, valid_bucket
from outcrop.models.bucket import IMPORTED_MODELS, ModelBucket, publish_target
from outcrop.models.catalog import Catalog, ModelCard
from outcrop.models.formats import check_format
from outcrop.models.resolve import ModelResolver, parse_arn
from outcrop.service.control_fields import (
    ListQuery,
    enum,
    missing,
    new_id,
    page,
    parse_time,
    pattern,
    replayed_job,
)
from outcrop.service.model_files import forget_model_file, keep_model_file

log = logging.getLogger("outcrop.imports")

JOB_STATUSES = ("InProgress", "Completed", "Failed")
_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9+\-.])*")
_MODEL_NAME = re.compile(r"([0-9a-zA-Z][_-]?)+")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_TOKEN = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,254}[a-zA-Z0-9])?")
_TAG = re.compile(r"[a-zA-Z0-9\s._:/=+@-]*")
MAX_TAGS = 200
DELETE_WAIT_S = 30.0
SYNC_INTERVAL_S = 2.0
DEFAULT_ROLE = "arn:aws:iam::000000000000:role/outcrop-local-import"


def job_status(row: JobRow | None) -> str:
    """The job's lifecycle state in Bedrock's words for import jobs (no Stopped there)."""
    if row is None or row.state not in ACTIVE and row.state != SUCCEEDED:
        return "Failed"
    return "Completed" if row.state == SUCCEEDED else "InProgress"


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
        key = pattern(f"{member}.{i + 1}.member.key", tag["key"], _TAG, 128)
        if not key:
            raise ValidationError(f"{member}.{i + 1}.member.key must not be empty.")
        val = pattern(f"{member}.{i + 1}.member.value", tag["value"], _TAG, 256)
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
        db: Database,
        runner: JobRunner | None = None,
        *,
        s3_endpoint_url: str | None = None,
        weight_format: str = "auto",
        threads: int = 1,
        manager: Any = None,
        delete_wait_s: float = DELETE_WAIT_S,
        file_roots: FileRoots = None,
        bucket: ModelBucket | None = None,
    ) -> None:
        """``runner``: the server's, which runs queued imports; None in the CLI, which
        runs its own import in-process (:meth:`run_here`)."""
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
        self.file_roots = file_roots
        self.bucket = bucket
        self.db = ImportRecords(db)
        self.states = runner.store if runner is not None else JobStore(db)
        self.jobs_dir = self.data_dir / "imports" / "jobs"
        self.models_dir = self.data_dir / "imports" / "models"
        self._lock = threading.Lock()
        self._deleting: set[str] = set()
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        resolver.fallbacks.append(self.find_unregistered)
        if runner is not None:
            runner.register(
                JobKind(
                    KIND, "process", module="outcrop.imports.worker", max_attempts=3,
                    env={"OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false",
                         "HF_HUB_OFFLINE": "1"},
                    on_succeeded=self._job_succeeded, on_ended=self._job_ended,
                    threads=threads,
                )
            )  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Serve every imported model, and follow the records (an ``outcrop models import``
        in a terminal adds models while the server runs; the runner resumes jobs)."""
        self.sync_models()
        self._watcher = threading.Thread(target=self._watch, name="outcrop-imports", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def _watch(self) -> None:
        while not self._closing.wait(SYNC_INTERVAL_S):
            try:
                self.sync_models()
            except Exception:
                log.exception("imported-model sync failed")

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
        source_label: str | None = None,
        source_sha256: str | None = None,
        weight_format: str | None = None,
    ) -> dict[str, Any]:
        """Validate and queue an import (QUEUED: the server's runner, or :meth:`run_here`,
        takes it)."""
        for member in ("jobName", "importedModelName", "roleArn", "modelDataSource"):
            if body.get(member) is None:
                raise missing(member)
        source = body["modelDataSource"]
        s3 = source.get("s3DataSource") if isinstance(source, dict) else None
        if not isinstance(s3, dict):
            raise missing("modelDataSource.s3DataSource")
        if not s3.get("s3Uri"):
            raise missing("modelDataSource.s3DataSource.s3Uri")
        job_name = pattern("jobName", body["jobName"], _JOB_NAME, 63)
        model_name = pattern("importedModelName", body["importedModelName"], _MODEL_NAME, 63)
        pattern("roleArn", body["roleArn"], _ROLE_ARN, 2048)
        job_tags = _tags("jobTags", body.get("jobTags"))
        model_tags = _tags("importedModelTags", body.get("importedModelTags"))
        token = body.get("clientRequestToken")
        if token is not None:
            pattern("clientRequestToken", token, _TOKEN, 256)
            if (arn := replayed_job(self.db.jobs(), token, job_name)) is not None:
                return {"jobArn": arn}
        uri = self._check_uri(str(s3["s3Uri"]))
        fmt = check_format(weight_format or self.weight_format)
        if self.db.job(job_name) is not None:
            raise ConflictError(f"A model import job named {job_name} already exists.")
        self._check_name_free(model_name)

        job_id, model_id = new_id(), new_id()
        work = self.jobs_dir / job_id
        work.mkdir(parents=True, exist_ok=True)
        job_files.write_json(work / job_files.SPEC, {
            "job_id": job_id, "model_name": model_name, "source_uri": uri,
            "source_sha256": source_sha256, "s3_endpoint_url": self.s3_endpoint_url,
            "data_dir": str(self.data_dir), "weight_format": fmt,
            "model_dir": str(self.models_dir / model_id), "threads": self.threads,
            # The worker pushes the model file to the bucket itself, wherever it runs.
            "publish": publish_target(self.bucket, IMPORTED_MODELS, model_id, self.data_dir),
        })  # fmt: skip
        with self.db.session() as s:
            self.states.add(s, job_id, KIND, work_dir=str(work), progress={"phase": "queued"})
            s.add(
                ImportJobRecord(
                    job_id=job_id, job_arn=self._job_arn(job_id), job_name=job_name,
                    model_name=model_name, model_id=model_id,
                    model_arn=self._model_arn(model_id), client_request_token=token,
                    role_arn=body["roleArn"], source_uri=uri, source_label=source_label or uri,
                    source_sha256=source_sha256, weight_format=fmt, creation_time=time.time(),
                    tags={"job": job_tags, "model": model_tags},
                )
            )  # fmt: skip
        return {"jobArn": self._job_arn(job_id)}

    def _check_uri(self, uri: str) -> str:
        parsed = urlparse(uri)
        if parsed.scheme == "s3":
            key = unquote(parsed.path)
            bucket_ok = bool(parsed.netloc) and (
                valid_bucket(parsed.netloc) or bool(self.s3_endpoint_url)
            )
            if not bucket_ok or ".." in PurePosixPath(key).parts:
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
            path = confined_file(Path(unquote(parsed.path)), self.file_roots, uri, "model data")
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
        rows = self.states.many(j.job_id for j in self.db.jobs() if j.model_name == name)
        for row in rows.values():
            if row.state in ACTIVE:
                job = self.db.job_by_id(row.job_id)
                raise ConflictError(
                    f"The model import job {job.job_name if job else row.job_id} is already "
                    f"importing a model named {name}."
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

    def job_details(self, job: ImportJobRecord, row: JobRow | None) -> dict[str, Any]:
        status = job_status(row)
        out: dict[str, Any] = {
            "jobArn": job.job_arn,
            "jobName": job.job_name,
            "importedModelName": job.model_name,
            "roleArn": job.role_arn,
            "modelDataSource": {"s3DataSource": {"s3Uri": job.source_uri}},
            "status": status,
            "creationTime": job.creation_time,
            "lastModifiedTime": row.updated_at if row is not None else job.creation_time,
        }
        if status == "Completed":
            out["importedModelArn"] = job.model_arn
        if row is not None and row.failure_message:
            out["failureMessage"] = row.failure_message[:2048]
        elif status == "Failed":
            out["failureMessage"] = "The import was stopped."
        if row is not None and row.ended_at:
            out["endTime"] = row.ended_at
        return out

    def get_model_import_job(self, identifier: str) -> dict[str, Any]:
        job = self._job(identifier)
        return self.job_details(job, self.states.get(job.job_id))

    def list_model_import_jobs(self, q: dict[str, str | None]) -> dict[str, Any]:
        query = ListQuery.parse(q, JOB_STATUSES)
        jobs = self.db.jobs()
        rows = self.states.many(j.job_id for j in jobs)
        keys = ("jobArn", "jobName", "status", "lastModifiedTime", "creationTime",
                "importedModelName", "importedModelArn", "endTime")  # fmt: skip

        def summary(j: Any) -> dict[str, Any]:
            d = self.job_details(j, rows.get(j.job_id))
            return {k: d[k] for k in keys if k in d}

        return query.respond(
            jobs,
            lambda j: (job_status(rows.get(j.job_id)), j.job_name, j.creation_time),
            q,
            "modelImportJobSummaries",
            summary,
        )

    def _job_succeeded(self, row: JobRow, result: dict[str, Any]) -> None:
        """The worker's result: the imported model is recorded and served (before the job
        is marked SUCCEEDED; if this fails, the job fails instead)."""
        job = self.db.job_by_id(row.job_id)
        if job is None:
            raise job_files.JobFailure("the import job's record is gone")
        kept = keep_model_file(result, self.bucket, self.data_dir, "the import")
        conversion = result.get("conversion")
        weights = dict(result.get("weights") or {})
        if conversion:
            weights["conversion"] = conversion
        model = ImportedModelRecord(
            model_id=job.model_id, model_arn=job.model_arn, model_name=job.model_name,
            job_id=job.job_id, source_uri=job.source_uri,
            architecture=result["architecture"], family_hint=result.get("family_hint"),
            instruct_supported=bool(result["instruct_supported"]),
            context_length=int(result["context_length"]), path=kept.path or "",
            bucket_key=kept.bucket_key, sha256=kept.sha256,
            size_bytes=int(result["size_bytes"]), weights=weights,
            model_dir=str(self.models_dir / job.model_id), creation_time=time.time(),
            tags=(job.tags or {}).get("model") or [],
        )  # fmt: skip
        self.db.add_model(model)
        self.register(model)
        log.info("import %s: completed (%s)", job.job_name, job.model_name)

    def _job_ended(self, row: JobRow) -> None:
        """Failed (or stopped): nothing of the job's temporary files stays behind."""
        if row.work_dir:
            discard(Path(row.work_dir))

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
        enum("sortBy", q.get("sortBy"), ("CreationTime",))
        order = enum("sortOrder", q.get("sortOrder"), ("Ascending", "Descending"))
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
            forget_model_file(self.bucket, m.bucket_key, self.data_dir)
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
            file_name=Path(m.path or str(m.bucket_key)).name,
            license="as imported",
            chat_template="gguf" if m.instruct_supported else "completion",
            custom=True,
            imported=True,
            arn=m.model_arn,
            local_path=m.path or None,
            sha256=m.sha256,
            bucket_key=m.bucket_key,
            architecture=m.architecture,
            invoke_family=invoke_family(m.architecture, m.family_hint),
            notes=f"Imported from {m.source_uri} (architecture {m.architecture}).",
        )

    def register(self, m: ImportedModelRecord) -> ModelCard | None:
        in_bucket = bool(m.bucket_key and m.sha256)  # pulled when it is first loaded
        if not in_bucket and not Path(m.path).is_file():
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

    def run_here(self, job_arn: str, report: Any = None) -> dict[str, Any]:
        """Run a QUEUED job in this process (``outcrop models import``) and settle it as
        the runner would. If a server's runner took it first, follow it there instead."""
        from outcrop.imports.layout import ImportFailure
        from outcrop.imports.work import run_import
        from outcrop.jobs.publish import publish

        job = self._job(job_arn)
        owner = f"{socket.gethostname()}:{os.getpid()}"
        report = report or (lambda **_v: None)
        if not self.states.transition(job.job_id, RUNNING, [QUEUED], attempts=1, owner=owner):
            return self._follow(job, report)
        work = self.jobs_dir / job.job_id

        def progress(**values: Any) -> None:
            report(**values)
            if "phase" in values and "note" not in values:
                self.states.set_progress(job.job_id, {"phase": values["phase"]})

        message: str | None = None
        try:
            result = publish(run_import(work, progress), work)  # as the worker does
        except ImportFailure as exc:
            message = str(exc)
        except KeyboardInterrupt:
            self._fail(job.job_id, "The import was interrupted (Ctrl-C).")
            raise
        except Exception as exc:
            log.exception("import failed")
            message = f"The import failed: {type(exc).__name__}: {exc}"
        if message is None:
            try:
                self._job_succeeded(self.states.get(job.job_id), result)  # type: ignore[arg-type]
                self.states.transition(job.job_id, SUCCEEDED, [RUNNING])
            except Exception as exc:
                self._fail(job.job_id, f"The import's result could not be kept: {exc}")
        else:
            self._fail(job.job_id, message)
        return self.get_model_import_job(job.job_id)

    def _fail(self, job_id: str, message: str) -> None:
        if self.states.transition(job_id, FAILED, [RUNNING, QUEUED], failure_message=message):
            row = self.states.get(job_id)
            if row is not None:
                self._job_ended(row)

    def _follow(self, job: ImportJobRecord, report: Any) -> dict[str, Any]:
        while True:
            row = self.states.get(job.job_id)
            if row is None or row.terminal:
                return self.get_model_import_job(job.job_id)
            if row.progress:
                report(**row.progress)
            time.sleep(0.5)
