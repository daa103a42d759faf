"""Batch inference (CreateModelInvocationJob & co.) and async invoke (StartAsyncInvoke &
co.): what they mean, in Bedrock's shapes as plain dicts.

Both are job kinds on the shared runner, ``inline``: their records go through the one
InvokeModel path (:mod:`outcrop.service.invoke`) in the engine's background class, so
they fill the slots interactive traffic leaves free.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from outcrop.batch.records import (
    ASYNC_KIND,
    BATCH_KIND,
    AsyncInvokeRecord,
    BatchRecords,
    InvocationJobRecord,
)
from outcrop.batch.run import BatchExpired, BatchRun, input_files
from outcrop.db import Database
from outcrop.errors import (
    ConflictError,
    OutcropError,
    ResourceNotFoundError,
    ServiceQuotaExceededError,
    ValidationError,
)
from outcrop.jobs.files import JobFailure
from outcrop.jobs.kinds import JobContext, JobKind
from outcrop.jobs.records import ACTIVE, FAILED, QUEUED, STOPPED, SUCCEEDED, JobRow
from outcrop.jobs.runner import JobRunner
from outcrop.locations import DataLocations, FileRoots, write_output
from outcrop.models.catalog import foundation_model_arn
from outcrop.models.resolve import ModelResolver
from outcrop.service.control_fields import (
    ListQuery,
    enum,
    missing,
    new_id,
    pattern,
    replayed_job,
)
from outcrop.service.invoke import InvokeService

JOB_STATUSES = (
    "Submitted", "InProgress", "Completed", "Failed", "Stopping", "Stopped",
    "PartiallyCompleted", "Expired", "Validating", "Scheduled",
)  # fmt: skip
ASYNC_STATUSES = ("InProgress", "Completed", "Failed")
MAX_ACTIVE_JOBS = 20  # per server; more is ServiceQuotaExceededException, as on Bedrock
MAX_ACTIVE_INVOKES = 100

_JOB_NAME = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
_ROLE_ARN = re.compile(r"arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+")
_JOB_TOKEN = re.compile(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}")
_ASYNC_TOKEN = re.compile(r"[!-~]{1,256}")
_ASYNC_MODEL = re.compile(r"[a-zA-Z_\.\-/0-9:]+")
_JOB_ID = re.compile(
    r"(?:arn:aws(?:-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:model-invocation-job/)?([a-z0-9]{12})"
)
_INVOCATION_ARN = re.compile(
    r"arn:aws(?:-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:async-invoke/([a-z0-9]{12})"
)


def batch_status(row: JobRow | None, job: InvocationJobRecord) -> str:
    if row is None:
        return "Failed"
    if row.state in ACTIVE:
        if row.stop_requested_at is not None:
            return "Stopping"
        if row.state == QUEUED:
            return "Scheduled" if row.attempts else "Submitted"
        return "Validating" if (row.progress or {}).get("phase") == "validating" else "InProgress"
    if row.state == SUCCEEDED:
        return "PartiallyCompleted" if job.error_records else "Completed"
    if row.state == STOPPED:
        return "Stopped"
    return "Expired" if job.expired else "Failed"


def async_status(row: JobRow | None) -> str:
    if row is None or row.state in (FAILED, STOPPED):
        return "Failed"
    return "Completed" if row.state == SUCCEEDED else "InProgress"


class BatchService:
    def __init__(
        self,
        resolver: ModelResolver,
        invoker: InvokeService,
        data_dir: Path,
        region: str,
        account_id: str,
        db: Database,
        runner: JobRunner,
        s3_endpoint_url: str | None = None,
        file_roots: FileRoots = None,
        concurrency: int = 8,
    ) -> None:
        self.resolver = resolver
        self.invoker = invoker
        self.data_dir = Path(data_dir)
        self.region = region
        self.account_id = account_id
        self.db = BatchRecords(db)
        self.runner = runner
        self.states = runner.store
        self.locations = DataLocations(self.data_dir, s3_endpoint_url, file_roots)
        self.concurrency = concurrency
        self.jobs_dir = self.data_dir / "batch" / "jobs"
        runner.register(
            JobKind(BATCH_KIND, "inline", run=self._run_batch, max_running=2)
        )  # fmt: skip
        runner.register(JobKind(ASYNC_KIND, "inline", run=self._run_async, max_running=4))

    # ------------------------------------------------------------------ batch: create

    def create_job(self, body: dict[str, Any]) -> dict[str, Any]:
        for member in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if body.get(member) is None:
                raise missing(member)
        name = pattern("jobName", body["jobName"], _JOB_NAME, 63)
        pattern("roleArn", body["roleArn"], _ROLE_ARN, 2048)
        token = body.get("clientRequestToken")
        if token is not None:
            pattern("clientRequestToken", token, _JOB_TOKEN, 256)
            if (arn := replayed_job(self.db.jobs(), token, name)) is not None:
                return {"jobArn": arn}
        invocation_type = enum(
            "modelInvocationType", body.get("modelInvocationType"), ("InvokeModel", "Converse")
        )
        hours = body.get("timeoutDurationInHours")
        if hours is None:
            hours = 24
        if not isinstance(hours, int) or isinstance(hours, bool) or not 24 <= hours <= 168:
            raise ValidationError(
                f"1 validation error detected: Value '{hours}' at 'timeoutDurationInHours' "
                "failed to satisfy constraint: Member must have value between 24 and 168"
            )
        model_id = str(body["modelId"])
        resolved = self.resolver.resolve(model_id)  # unknown: ValidationException / RNF
        if resolved.card.engine not in ("llamacpp", "embeddings") and not self.invoker.is_embedding(
            model_id
        ):
            raise ValidationError(f"Model {model_id} cannot run batch inference.")
        if invocation_type == "Converse" and self.invoker.is_embedding(model_id):
            raise ValidationError("modelInvocationType Converse needs a text generation model.")
        in_uri = ((body["inputDataConfig"] or {}).get("s3InputDataConfig") or {}).get("s3Uri")
        out_uri = ((body["outputDataConfig"] or {}).get("s3OutputDataConfig") or {}).get("s3Uri")
        if not in_uri:
            raise missing("inputDataConfig.s3InputDataConfig.s3Uri")
        if not out_uri:
            raise missing("outputDataConfig.s3OutputDataConfig.s3Uri")
        in_loc = self.locations.parse(in_uri, "input data")
        out_loc = self.locations.parse(out_uri, "output data")
        if _inside(out_loc.uri, in_loc.uri):
            raise ValidationError(
                f"The output location {out_uri} is inside the input location {in_uri}: "
                "outputs would be read back as input. Choose another output location."
            )
        if not input_files(self.locations, in_loc):
            raise ValidationError(f"No .jsonl input files were found at {in_uri}.")
        self.locations.check_writable(out_loc)
        active = self.states.of_kind(BATCH_KIND, ACTIVE)
        if len(active) >= MAX_ACTIVE_JOBS:
            raise ServiceQuotaExceededError(
                f"This server runs at most {MAX_ACTIVE_JOBS} batch inference jobs at once; "
                f"{len(active)} are submitted or in progress. Retry when one ends."
            )
        job_id = new_id()
        arn = f"arn:aws:bedrock:{self.region}:{self.account_id}:model-invocation-job/{job_id}"
        now = time.time()
        work = self.jobs_dir / job_id
        work.mkdir(parents=True, exist_ok=True)
        with self.db.session() as s:
            self.states.add(s, job_id, BATCH_KIND, work_dir=str(work))
            s.add(
                InvocationJobRecord(
                    job_id=job_id, job_arn=arn, job_name=name, model_id=model_id,
                    resolved_model_id=resolved.model_id, role_arn=body["roleArn"],
                    client_request_token=token, invocation_type=invocation_type,
                    input_config=body["inputDataConfig"], output_config=body["outputDataConfig"],
                    vpc_config=body.get("vpcConfig"), input_uri=in_loc.uri,
                    output_uri=out_loc.uri, timeout_hours=hours, submit_time=now,
                    expires_at=now + hours * 3600, tags=body.get("tags") or [],
                )
            )  # fmt: skip
        return {"jobArn": arn}

    # ------------------------------------------------------------------ batch: read

    def _job(self, identifier: str) -> InvocationJobRecord:
        m = _JOB_ID.fullmatch(identifier or "")
        if not m:
            raise ValidationError(
                f"1 validation error detected: Value '{identifier}' at 'jobIdentifier' failed "
                "to satisfy constraint: Member must satisfy regular expression pattern: "
                f"{_JOB_ID.pattern}"
            )
        job = self.db.job(m.group(1))
        if job is None:
            raise ResourceNotFoundError(f"Could not find batch inference job {identifier}.")
        return job

    def _details(self, job: InvocationJobRecord, row: JobRow | None) -> dict[str, Any]:
        counts = (row.progress if row else None) or {}
        live = row is not None and row.state in ACTIVE
        out: dict[str, Any] = {
            "jobArn": job.job_arn,
            "jobName": job.job_name,
            "modelId": job.model_id,
            "roleArn": job.role_arn,
            "status": batch_status(row, job),
            "submitTime": job.submit_time,
            "lastModifiedTime": row.updated_at if row else job.submit_time,
            "inputDataConfig": job.input_config,
            "outputDataConfig": job.output_config,
            "timeoutDurationInHours": job.timeout_hours,
            "jobExpirationTime": job.expires_at,
        }
        if job.client_request_token:
            out["clientRequestToken"] = job.client_request_token
        if job.invocation_type:
            out["modelInvocationType"] = job.invocation_type
        if job.vpc_config:
            out["vpcConfig"] = job.vpc_config
        if row is not None and row.failure_message:
            out["message"] = row.failure_message[:2048]
        if row is not None and row.ended_at:
            out["endTime"] = row.ended_at
        total = counts.get("total") if live else job.total_records
        if total is not None:
            out["totalRecordCount"] = total
        for key, column, field in (
            ("processedRecordCount", "processed_records", "processed"),
            ("successRecordCount", "success_records", "success"),
            ("errorRecordCount", "error_records", "error"),
        ):
            value = counts.get(field) if live else getattr(job, column)
            if value is not None:
                out[key] = value
        return out

    def get_job(self, identifier: str) -> dict[str, Any]:
        job = self._job(identifier)
        return self._details(job, self.states.get(job.job_id))

    def list_jobs(self, q: dict[str, str | None]) -> dict[str, Any]:
        query = ListQuery.parse(q, JOB_STATUSES, time_field="submitTime")
        jobs = self.db.jobs()
        rows = self.states.many(j.job_id for j in jobs)
        details = [self._details(j, rows.get(j.job_id)) for j in jobs]
        return query.respond(
            details,
            lambda d: (d["status"], d["jobName"], d["submitTime"]),
            q,
            "invocationJobSummaries",
        )

    def stop_job(self, identifier: str) -> None:
        job = self._job(identifier)
        if not self.runner.stop(job.job_id):
            status = batch_status(self.states.get(job.job_id), job)
            raise ValidationError(
                f"The batch inference job {job.job_name} is {status} and cannot be stopped."
            )

    # ------------------------------------------------------------------ batch: run

    def _call_for(self, job: InvocationJobRecord):  # noqa: ANN202
        async def call(model_input: Any) -> tuple[dict[str, Any], int, int]:
            if not isinstance(model_input, dict):
                raise ValidationError(
                    "modelInput must be a JSON object (the model's request body)."
                )
            if job.invocation_type == "Converse":
                done = await self.invoker.converse(job.model_id, model_input, background=True)
            else:
                done = await self.invoker.invoke(
                    job.model_id, model_input, f"batch-{job.job_id}", background=True
                )
            return done.body, done.input_tokens, done.output_tokens

        return call

    def _run_batch(self, ctx: JobContext) -> dict[str, Any]:
        job = self.db.job(ctx.job_id)
        if job is None:
            raise JobFailure("The job's record is missing.")
        run = BatchRun(
            locations=self.locations,
            input_root=self.locations.parse(job.input_uri, "input data"),
            output_root=self.locations.parse(job.output_uri, "output data").child(job.job_id),
            work_dir=ctx.work_dir or self.jobs_dir / job.job_id,
            call_model=self._call_for(job),
            concurrency=self.concurrency,
            should_stop=ctx.should_stop,
            report=lambda values: ctx.progress(**values),
            deadline=job.expires_at,
        )
        try:
            counts = ctx.call(run.run())
        except BatchExpired:
            self._keep_counts(job.job_id, run, expired=True)
            raise
        except (JobFailure, OutcropError):
            self._keep_counts(job.job_id, run)
            raise
        self._keep_counts(job.job_id, run)
        return counts.as_dict()

    def _keep_counts(self, job_id: str, run: BatchRun, expired: bool = False) -> None:
        c = run.counts
        self.db.update_job(
            job_id, total_records=c.total, processed_records=c.processed,
            success_records=c.success, error_records=c.error, input_tokens=c.input_tokens,
            output_tokens=c.output_tokens, expired=expired,
        )  # fmt: skip

    # ------------------------------------------------------------------ async invoke

    def start_async(self, body: dict[str, Any]) -> dict[str, Any]:
        for member in ("modelId", "modelInput", "outputDataConfig"):
            if body.get(member) is None:
                raise missing(member)
        model_id = pattern("modelId", body["modelId"], _ASYNC_MODEL, 256)
        token = body.get("clientRequestToken")
        if token is not None:
            pattern("clientRequestToken", token, _ASYNC_TOKEN, 256)
            for inv in self.db.invocations():
                if inv.client_request_token == token:
                    if inv.model_id != model_id or inv.model_input != body["modelInput"]:
                        raise ConflictError(
                            f"The client request token {token} was used for another request."
                        )
                    return {"invocationArn": inv.invocation_arn}
        resolved = self.resolver.resolve(model_id)
        if not isinstance(body["modelInput"], dict):
            raise ValidationError("modelInput must be a JSON object (the model's request body).")
        # Checked level by level: the contract fuzzer sent a string here (was a 500).
        out_config = body["outputDataConfig"]
        s3_config = out_config.get("s3OutputDataConfig") if isinstance(out_config, dict) else None
        out_uri = s3_config.get("s3Uri") if isinstance(s3_config, dict) else None
        if not isinstance(out_uri, str) or not out_uri:
            raise missing("outputDataConfig.s3OutputDataConfig.s3Uri")
        out_loc = self.locations.parse(out_uri, "output data")
        self.locations.check_writable(out_loc)
        if len(self.states.of_kind(ASYNC_KIND, ACTIVE)) >= MAX_ACTIVE_INVOKES:
            raise ServiceQuotaExceededError(
                f"This server runs at most {MAX_ACTIVE_INVOKES} async invocations at once."
            )
        inv_id = new_id()
        arn = f"arn:aws:bedrock:{self.region}:{self.account_id}:async-invoke/{inv_id}"
        with self.db.session() as s:
            self.states.add(s, inv_id, ASYNC_KIND)
            s.add(
                AsyncInvokeRecord(
                    invocation_id=inv_id, invocation_arn=arn, model_id=model_id,
                    model_arn=foundation_model_arn(resolved.model_id, self.region),
                    client_request_token=token, model_input=body["modelInput"],
                    output_config=body["outputDataConfig"], output_uri=out_loc.uri,
                    submit_time=time.time(), tags=body.get("tags") or [],
                )
            )  # fmt: skip
        return {"invocationArn": arn}

    def _run_async(self, ctx: JobContext) -> dict[str, Any]:
        inv = self.db.invocation(ctx.job_id)
        if inv is None:
            raise JobFailure("The invocation's record is missing.")
        try:
            done = ctx.call(
                self.invoker.invoke(inv.model_id, inv.model_input, inv.invocation_id,
                                    background=True)
            )  # fmt: skip
        except OutcropError as exc:
            raise JobFailure(exc.message) from None
        out = self.locations.parse(inv.output_uri, "output data").child(inv.invocation_id)
        write_output(out.child("output.json"), json.dumps(done.body).encode())
        return {"input_tokens": done.input_tokens, "output_tokens": done.output_tokens}

    def _invocation(self, arn: str) -> AsyncInvokeRecord:
        m = _INVOCATION_ARN.fullmatch(arn or "")
        inv = self.db.invocation(m.group(1)) if m else None
        if inv is None:
            # GetAsyncInvoke models no ResourceNotFoundException: Bedrock answers this way.
            raise ValidationError(f"Invocation {arn} does not exist.")
        return inv

    def _async_details(self, inv: AsyncInvokeRecord, row: JobRow | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "invocationArn": inv.invocation_arn,
            "modelArn": inv.model_arn,
            "status": async_status(row),
            "submitTime": inv.submit_time,
            "outputDataConfig": inv.output_config,
        }
        if inv.client_request_token:
            out["clientRequestToken"] = inv.client_request_token
        if row is not None:
            out["lastModifiedTime"] = row.updated_at
            if row.ended_at:
                out["endTime"] = row.ended_at
            if row.failure_message:
                out["failureMessage"] = row.failure_message[:2048]
        return out

    def get_async(self, arn: str) -> dict[str, Any]:
        inv = self._invocation(arn)
        return self._async_details(inv, self.states.get(inv.invocation_id))

    def list_async(self, q: dict[str, str | None]) -> dict[str, Any]:
        query = ListQuery.parse(
            q, ASYNC_STATUSES, time_field="submitTime", sort_by=("SubmissionTime",)
        )
        invs = self.db.invocations()
        rows = self.states.many(i.invocation_id for i in invs)
        details = [self._async_details(i, rows.get(i.invocation_id)) for i in invs]
        return query.respond(
            details, lambda d: (d["status"], None, d["submitTime"]), q, "asyncInvokeSummaries"
        )


def _inside(child_uri: str, parent_uri: str) -> bool:
    parent = parent_uri.rstrip("/") + "/"
    return (child_uri.rstrip("/") + "/").startswith(parent)
