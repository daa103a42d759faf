"""Model customization: what CreateModelCustomizationJob and the custom-model operations
mean, with no HTTP in sight. Answers are Bedrock's shapes as plain dicts.

A job is validated completely before it is accepted (names, base model, hyperparameters,
every line of the data, the output location); then its data is copied into the job's
folder, the records are written, and the shared :class:`~outcrop.jobs.runner.JobRunner`
trains it in a worker process (the ``customization`` job kind). A completed job's GGUF becomes a custom model card that Converse and
InvokeModel resolve by ARN or name, on demand.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from outcrop.db import Database
from outcrop.errors import ConflictError, ResourceNotFoundError, ValidationError
from outcrop.jobs import files as job_files
from outcrop.jobs.kinds import JobKind
from outcrop.jobs.records import ACTIVE, FAILED, STOPPED, SUCCEEDED, JobRow
from outcrop.jobs.runner import JobRunner
from outcrop.locations import DataLocations, FileRoots
from outcrop.models.bucket import CUSTOM_MODELS, ModelBucket, publish_target
from outcrop.models.catalog import Catalog, ModelCard, foundation_model_arn
from outcrop.models.resolve import ModelResolver
from outcrop.models.store import ModelStore
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
from outcrop.training import worker as files
from outcrop.training.data import validate_jsonl
from outcrop.training.hyper import parse_hyperparameters
from outcrop.training.records import KIND, CustomizationRecords, CustomModelRecord, JobRecord

SUPPORTED_TYPES = ("FINE_TUNING", "CONTINUED_PRE_TRAINING")
ALL_TYPES = SUPPORTED_TYPES + ("DISTILLATION", "REINFORCEMENT_FINE_TUNING", "IMPORTED")
JOB_STATUSES = ("InProgress", "Completed", "Failed", "Stopping", "Stopped")
# GGUF architectures transformers loads (dequantized) for training an imported base model.
TRAINABLE_ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3", "phi3")
MODEL_STATUSES = ("Active", "Creating", "Failed")

_JOB_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9+\-.])*")
_MODEL_NAME = re.compile(r"([0-9a-zA-Z][_-]?){1,63}")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_TOKEN = re.compile(r"[a-zA-Z0-9]([-a-zA-Z0-9]{0,254}[a-zA-Z0-9])?")


def _servable(model: CustomModelRecord) -> bool:
    """Its file is on this node, or in the model bucket for any node to pull."""
    return bool(model.bucket_key and model.sha256) or bool(model.path and Path(model.path).exists())


def job_status(row: JobRow | None) -> str:
    """The job's lifecycle state in Bedrock's words for customization jobs."""
    if row is None:
        return "Failed"
    if row.state in ACTIVE:
        return "Stopping" if row.stop_requested_at is not None else "InProgress"
    return {SUCCEEDED: "Completed", FAILED: "Failed", STOPPED: "Stopped"}[row.state]


class CustomizationService:
    def __init__(
        self,
        catalog: Catalog,
        resolver: ModelResolver,
        store: ModelStore,
        data_dir: Path,
        region: str,
        account_id: str,
        db: Database,
        runner: JobRunner,
        s3_endpoint_url: str | None = None,
        file_roots: FileRoots = None,
        training_threads: int = 1,
        unload: Any = None,
        bucket: ModelBucket | None = None,
    ) -> None:
        self.catalog = catalog
        self.resolver = resolver
        self.store = store
        self.data_dir = Path(data_dir)
        self.region = region
        self.account_id = account_id
        self.locations = DataLocations(self.data_dir, s3_endpoint_url, file_roots)
        self.db = CustomizationRecords(db)
        self.runner = runner
        self.states = runner.store
        self.training_threads = training_threads
        self.jobs_dir = self.data_dir / "customization" / "jobs"
        self.models_dir = self.data_dir / "customization" / "models"
        self.unload = unload
        self.bucket = bucket
        runner.register(
            JobKind(
                KIND, "process", module="outcrop.training.worker",
                env={
                    "OMP_NUM_THREADS": str(training_threads),
                    "TOKENIZERS_PARALLELISM": "false",
                    "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
                },
                on_succeeded=self._job_succeeded,
                on_ended=self._job_ended,
                threads=training_threads,
                inputs=(job_files.SPEC, files.TRAIN_RECORDS, files.VALIDATION_RECORDS),
                reports=(files.STEP_LOG,),
            )
        )  # fmt: skip

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Serve every Active custom model again (the runner resumes interrupted jobs)."""
        for model in self.db.models():
            if model.status == "Active":
                job = self.db.job_by_id(model.job_id)
                if job is not None and _servable(model):
                    self._register_card(job, model)
        # Another server sharing the records (a Ray API replica) may have trained it.
        self.resolver.fallbacks.append(self.find_unregistered)

    def find_unregistered(self, identifier: str) -> ModelCard | None:
        """Resolver fallback: an Active custom model recorded but not in this catalog."""
        model = self.db.model(identifier)
        if model is None or model.status != "Active" or not _servable(model):
            return None
        job = self.db.job_by_id(model.job_id)
        if job is None:
            return None
        self._register_card(job, model)
        return self.catalog.find_custom(model.model_arn)

    def _state(self, job: JobRecord) -> JobRow | None:
        return self.states.get(job.job_id)

    def _job_succeeded(self, row: JobRow, result: dict[str, Any]) -> None:
        """The worker's result: the model becomes Active and servable, or the job fails.
        With a model bucket, the file is pushed there first (or was, by the worker)."""
        record = self.db.job_by_id(row.job_id)
        if record is None:
            return
        kept = keep_model_file(result, self.bucket, self.data_dir, "the training worker")
        job = self.db.update_job(
            row.job_id,
            training_loss=result.get("training_loss"),
            validation_losses=result.get("validation_losses") or [],
        )
        if job is None:
            return
        model = self.db.update_model(
            job.model_id, status="Active", path=kept.path, bucket_key=kept.bucket_key,
            sha256=kept.sha256,
        )  # fmt: skip
        if model is not None:
            self._register_card(job, model)

    def _job_ended(self, row: JobRow) -> None:
        job = self.db.job_by_id(row.job_id)
        if job is not None:
            message = row.failure_message or "The customization job was stopped."
            self.db.update_model(job.model_id, status="Failed", failure_message=message)

    # ------------------------------------------------------------------ ARNs

    def _job_arn(self, base_model_id: str, job_id: str) -> str:
        return (
            f"arn:aws:bedrock:{self.region}:{self.account_id}:"
            f"model-customization-job/{base_model_id}/{job_id}"
        )

    def _model_arn(self, base_model_id: str, model_id: str) -> str:
        return f"arn:aws:bedrock:{self.region}:{self.account_id}:custom-model/{base_model_id}/{model_id}"

    # ------------------------------------------------------------------ jobs

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        for member in ("jobName", "customModelName", "roleArn", "baseModelIdentifier"):
            if body.get(member) is None:
                raise missing(member)
        training = body.get("trainingDataConfig")
        if not isinstance(training, dict):
            raise missing("trainingDataConfig")
        if not training.get("s3Uri"):
            raise ValidationError(
                "trainingDataConfig.s3Uri is required: give the training data location."
            )
        output = body.get("outputDataConfig")
        if not isinstance(output, dict) or not output.get("s3Uri"):
            raise missing("outputDataConfig.s3Uri")
        job_name = pattern("jobName", body["jobName"], _JOB_NAME, 63)
        model_name = pattern("customModelName", body["customModelName"], _MODEL_NAME, 63)
        pattern("roleArn", body["roleArn"], _ROLE_ARN, 2048)
        token = body.get("clientRequestToken")
        if token is not None:
            pattern("clientRequestToken", token, _TOKEN, 256)
            if (arn := replayed_job(self.db.jobs(), token, job_name)) is not None:
                return {"jobArn": arn}
        ctype = enum("customizationType", body.get("customizationType") or "FINE_TUNING", ALL_TYPES)
        if ctype not in SUPPORTED_TYPES:
            raise ValidationError(
                f"customizationType {ctype} is not supported here; use {' or '.join(SUPPORTED_TYPES)}."
            )
        base = self._base_card(str(body["baseModelIdentifier"]))
        hp = parse_hyperparameters(body.get("hyperParameters"), base.context_length)

        if self.db.job(job_name) is not None:
            raise ConflictError(f"A model customization job named {job_name} already exists.")
        if self.db.model(model_name) is not None:
            raise ConflictError(f"A custom model named {model_name} already exists.")

        train_loc = self.locations.parse(training["s3Uri"], "training data")
        train = validate_jsonl(
            self.locations.read(train_loc, "training data"), ctype, "training data"
        )
        validators = (body.get("validationDataConfig") or {}).get("validators") or []
        if len(validators) > 1:
            raise ValidationError("Only one validator (validation data file) is supported.")
        validation: list[dict[str, Any]] = []
        validation_uris = []
        for v in validators:
            loc = self.locations.parse((v or {}).get("s3Uri"), "validation data")
            validation = validate_jsonl(
                self.locations.read(loc, "validation data"), ctype, "validation data"
            )
            validation_uris.append(loc.uri)
        out_loc = self.locations.parse(output["s3Uri"], "output")
        self.locations.check_writable(out_loc)
        base_path = self.store.ensure(base)

        job_id, model_id = new_id(), new_id()
        job_arn = self._job_arn(base.model_id, job_id)
        model_arn = self._model_arn(base.model_id, model_id)
        work = self.jobs_dir / job_id
        work.mkdir(parents=True, exist_ok=True)
        (work / files.TRAIN_RECORDS).write_text("".join(json.dumps(r) + "\n" for r in train))
        if validation:
            (work / files.VALIDATION_RECORDS).write_text(
                "".join(json.dumps(r) + "\n" for r in validation)
            )
        spec = {
            "job_id": job_id,
            "model_name": model_name,
            "customization_type": ctype,
            "base_model_id": base.model_id,
            "base_gguf": str(base_path),
            "completion_only": base.chat_template == "completion",
            "default_system": base.default_system,
            "hp": hp.to_dict(),
            "output": out_loc.child(f"model-customization-job-{job_id}").to_dict(),
            "cache_root": str(self.data_dir / "cache" / "hf"),
            "model_path": str(self.models_dir / model_id / "model.gguf"),
            "threads": self.training_threads,
            # The worker pushes the model file to the bucket itself, wherever it runs.
            "publish": publish_target(self.bucket, CUSTOM_MODELS, model_id, self.data_dir),
        }
        job_files.write_json(work / job_files.SPEC, spec)
        now = time.time()
        with self.db.session() as s:
            self.states.add(s, job_id, KIND, work_dir=str(work), progress={"phase": "queued"})
            s.add(
                JobRecord(
                    job_id=job_id, job_arn=job_arn, job_name=job_name, model_name=model_name,
                    model_id=model_id, model_arn=model_arn, client_request_token=token,
                    role_arn=body["roleArn"], base_model_id=base.model_id,
                    base_model_arn=self._base_arn(base.model_id),
                    customization_type=ctype,
                    hyperparameters=hp.as_bedrock(),
                    training_uri=train_loc.uri, validation_uris=validation_uris,
                    output_uri=out_loc.uri, creation_time=now,
                    tags={"job": body.get("jobTags") or [], "model": body.get("customModelTags") or []},
                )
            )  # fmt: skip
            s.add(
                CustomModelRecord(
                    model_id=model_id, model_arn=model_arn, model_name=model_name, job_id=job_id,
                    base_model_id=base.model_id, status="Creating", creation_time=now,
                )
            )  # fmt: skip
        return {"jobArn": job_arn}

    def _base_card(self, identifier: str) -> ModelCard:
        try:
            card = self.resolver.resolve(identifier).card
        except (ValidationError, ResourceNotFoundError):
            raise ValidationError(
                f"The base model {identifier} is not a model this server can customize; "
                "see ListFoundationModels."
            ) from None
        if card.imported and card.architecture not in TRAINABLE_ARCHITECTURES:
            raise ValidationError(
                f"The imported model {identifier} cannot be customized: the trainer loads "
                f"{', '.join(TRAINABLE_ARCHITECTURES)} architectures, not {card.architecture}."
            )
        if (
            (card.custom and not card.imported)
            or card.engine != "llamacpp"
            or "TEXT" not in card.output_modalities
        ):
            raise ValidationError(
                f"The base model {identifier} cannot be customized: only built-in and "
                "imported text generation models can be."
            )
        return card

    def _base_arn(self, base_model_id: str) -> str:
        """A foundation model's ARN, or an imported base model's own."""
        card = self.catalog.get(base_model_id)
        if card is not None and card.imported and card.arn:
            return card.arn
        return foundation_model_arn(base_model_id, self.region)

    def _job(self, identifier: str) -> JobRecord:
        job = self.db.job(identifier)
        if job is None:
            raise ResourceNotFoundError(f"Could not find model customization job {identifier}.")
        return job

    def job_details(self, job: JobRecord, row: JobRow | None = None) -> dict[str, Any]:
        row = row or self._state(job)
        status = job_status(row)
        progress = (row.progress if row else None) or {}
        out: dict[str, Any] = {
            "jobArn": job.job_arn,
            "jobName": job.job_name,
            "outputModelName": job.model_name,
            "roleArn": job.role_arn,
            "status": status,
            "creationTime": job.creation_time,
            "lastModifiedTime": row.updated_at if row else job.creation_time,
            "baseModelArn": job.base_model_arn,
            "hyperParameters": job.hyperparameters,
            "trainingDataConfig": {"s3Uri": job.training_uri},
            "validationDataConfig": {"validators": [{"s3Uri": u} for u in job.validation_uris]},
            "outputDataConfig": {"s3Uri": job.output_uri},
            "customizationType": job.customization_type,
            "statusDetails": self._status_details(job, row),
        }
        if job.client_request_token:
            out["clientRequestToken"] = job.client_request_token
        if status == "Completed":
            out["outputModelArn"] = job.model_arn
        if row is not None and row.failure_message:
            out["failureMessage"] = row.failure_message[:2048]
        if row is not None and row.ended_at:
            out["endTime"] = row.ended_at
        loss = job.training_loss if job.training_loss is not None else progress.get("loss")
        if loss is not None:
            out["trainingMetrics"] = {"trainingLoss": loss}
        validation = job.validation_losses or (
            [progress["validation_loss"]] if progress.get("validation_loss") is not None else []
        )
        if validation:
            out["validationMetrics"] = [{"validationLoss": v} for v in validation]
        return out

    def _status_details(self, job: JobRecord, row: JobRow | None) -> dict[str, Any]:
        status = job_status(row)
        phase = ((row.progress if row else None) or {}).get("phase", "queued")
        order = ["validation", "dataProcessing", "training"]
        at = {"queued": 0, "loading": 1, "tokenizing": 1}.get(phase, 2)
        if status == "Completed":
            at = 3
        details = {}
        for i, name in enumerate(order):
            if i < at:
                step_status = "Completed"
            elif i == at:
                step_status = status  # the step the job is in (or ended in) shares its status
            else:
                step_status = "NotStarted"
            details[f"{name}Details"] = {
                "status": step_status,
                "creationTime": job.creation_time,
                "lastModifiedTime": row.updated_at if row else job.creation_time,
            }
        return details

    def get_job(self, identifier: str) -> dict[str, Any]:
        return self.job_details(self._job(identifier))

    def training_steps(self, identifier: str) -> list[dict[str, float]]:
        """The job's loss per step so far (a resumed job's repeated steps keep the last)."""
        from outcrop.training.worker import STEP_LOG

        job = self._job(identifier)
        try:
            text = (self.jobs_dir / job.job_id / STEP_LOG).read_text()
        except OSError:
            return []
        steps: dict[int, dict[str, float]] = {}
        for line in text.splitlines():
            parts = line.split(",")
            if len(parts) != 3:
                continue  # a line being written
            try:
                step, epoch, loss = int(parts[0]), int(parts[1]), float(parts[2])
            except ValueError:
                continue
            steps[step] = {"step": step, "epoch": epoch, "trainingLoss": loss}
        return [steps[k] for k in sorted(steps)]

    def list_jobs(self, q: dict[str, str | None]) -> dict[str, Any]:
        query = ListQuery.parse(q, JOB_STATUSES)
        jobs = self.db.jobs()
        rows = self.states.many(j.job_id for j in jobs)

        def summary(j: Any) -> dict[str, Any]:
            row = rows.get(j.job_id)
            j_status = job_status(row)
            s = {
                "jobArn": j.job_arn,
                "baseModelArn": j.base_model_arn,
                "jobName": j.job_name,
                "status": j_status,
                "statusDetails": self._status_details(j, row),
                "lastModifiedTime": row.updated_at if row else j.creation_time,
                "creationTime": j.creation_time,
                "customModelName": j.model_name,
                "customizationType": j.customization_type,
            }
            if j_status == "Completed":
                s["customModelArn"] = j.model_arn
            if row is not None and row.ended_at:
                s["endTime"] = row.ended_at
            return s

        return query.respond(
            jobs,
            lambda j: (job_status(rows.get(j.job_id)), j.job_name, j.creation_time),
            q,
            "modelCustomizationJobSummaries",
            summary,
        )

    def stop_job(self, identifier: str) -> None:
        job = self._job(identifier)
        # The flag is set only while the job is still active (a conditional update), so a
        # stop racing the job's completion leaves one outcome, never Stopped + Active.
        if not self.runner.stop(job.job_id):
            raise ValidationError(
                f"The model customization job {job.job_name} is "
                f"{job_status(self._state(job))} and cannot be stopped."
            )

    # ------------------------------------------------------------------ custom models

    def _model(self, identifier: str) -> CustomModelRecord:
        model = self.db.model(identifier)
        if model is None:
            raise ResourceNotFoundError(f"Could not find custom model {identifier}.")
        return model

    def get_model(self, identifier: str) -> dict[str, Any]:
        model = self._model(identifier)
        job = self.db.job_by_id(model.job_id)
        out: dict[str, Any] = {
            "modelArn": model.model_arn,
            "modelName": model.model_name,
            "baseModelArn": self._base_arn(model.base_model_id),
            "creationTime": model.creation_time,
            "modelStatus": model.status,
        }
        if job is not None:
            details = self.job_details(job)
            out.update(
                jobName=job.job_name,
                jobArn=job.job_arn,
                customizationType=job.customization_type,
                hyperParameters=job.hyperparameters,
                trainingDataConfig=details["trainingDataConfig"],
                validationDataConfig=details["validationDataConfig"],
                outputDataConfig=details["outputDataConfig"],
            )
            if "trainingMetrics" in details:
                out["trainingMetrics"] = details["trainingMetrics"]
            if "validationMetrics" in details:
                out["validationMetrics"] = details["validationMetrics"]
        if model.failure_message:
            out["failureMessage"] = model.failure_message[:2048]
        return out

    def list_models(self, q: dict[str, str | None]) -> dict[str, Any]:
        enum("sortBy", q.get("sortBy"), ("CreationTime",))
        order = enum("sortOrder", q.get("sortOrder"), ("Ascending", "Descending")) or "Descending"
        status = enum("modelStatus", q.get("modelStatus"), MODEL_STATUSES)
        after = parse_time("creationTimeAfter", q.get("creationTimeAfter"))
        before = parse_time("creationTimeBefore", q.get("creationTimeBefore"))
        name = q.get("nameContains")
        base_arn = q.get("baseModelArnEquals") or q.get("foundationModelArnEquals")
        if q.get("isOwned") == "false":
            models: list[CustomModelRecord] = []  # everything here is owned by this account
        else:
            models = self.db.models()
        models = [
            m
            for m in models
            if (status is None or m.status == status)
            and (name is None or name.lower() in m.model_name.lower())
            and (after is None or m.creation_time > after)
            and (before is None or m.creation_time < before)
            and (base_arn is None or self._base_arn(m.base_model_id) == base_arn)
        ]
        models.sort(key=lambda m: m.creation_time, reverse=order == "Descending")
        rows_page, token = page(models, q.get("maxResults"), q.get("nextToken"))
        jobs = {j.job_id: j for j in self.db.jobs()}
        summaries = []
        for m in rows_page:
            job = jobs.get(m.job_id)
            summaries.append(
                {
                    "modelArn": m.model_arn,
                    "modelName": m.model_name,
                    "creationTime": m.creation_time,
                    "baseModelArn": self._base_arn(m.base_model_id),
                    "baseModelName": m.base_model_id.split(":")[0].rsplit("-v", 1)[0],
                    "customizationType": job.customization_type if job else "FINE_TUNING",
                    "ownerAccountId": self.account_id,
                    "modelStatus": m.status,
                }
            )
        out: dict[str, Any] = {"modelSummaries": summaries}
        if token:
            out["nextToken"] = token
        return out

    def delete_model(self, identifier: str) -> None:
        model = self._model(identifier)
        if model.status == "Creating":
            raise ConflictError(
                f"The custom model {model.model_name} is still being created by job "
                f"{model.job_id}; stop the job first."
            )
        card = self.catalog.find_custom(model.model_arn)
        if card is not None:
            self.catalog.unregister(card.model_id)
            if self.unload is not None:
                self.unload(card.model_id)
        self.db.delete_model(model.model_id)
        shutil.rmtree(self.models_dir / model.model_id, ignore_errors=True)
        forget_model_file(self.bucket, model.bucket_key, self.data_dir)

    # ------------------------------------------------------------------ serving

    def _register_card(self, job: JobRecord, model: CustomModelRecord) -> None:
        base = self.catalog.get(model.base_model_id)
        if base is None or not _servable(model):
            return
        file_name = Path(model.path or str(model.bucket_key)).name
        card = base.model_copy(
            update={
                "model_id": model.model_name,
                "name": model.model_name,
                "sources": (),
                "file_name": file_name,
                "sha256": model.sha256,
                "bucket_key": model.bucket_key,
                "size_bytes": None,
                "custom": True,
                "arn": model.model_arn,
                "local_path": model.path,
                "customizations_supported": (),
                "imported": False,  # a custom model, even when its base was imported
                "invoke_family": None,
                "notes": f"Custom model from job {job.job_name} on {base.model_id}.",
            }
        )
        self.catalog.register(card)
