"""``outcrop jobs list|show``: customization and batch inference jobs, read from the data
directory.

Reads the same SQLite file the server writes, so it works while the server runs (and
shows live progress with ``show --watch``) or after it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from typing import Any

from outcrop.cli_support import CliError, settings_from_args

_STYLE = {
    "InProgress": "yellow",
    "Submitted": "yellow",
    "Validating": "yellow",
    "Scheduled": "yellow",
    "Completed": "green",
    "PartiallyCompleted": "green",
    "Expired": "red",
    "Failed": "red",
    "Stopping": "magenta",
    "Stopped": "magenta",
}


class _Jobs:
    """Customization jobs joined with their lifecycle rows, read-only."""

    def __init__(self, args: argparse.Namespace) -> None:
        from outcrop.db import Database
        from outcrop.jobs.store import JobStore
        from outcrop.training.records import CustomizationRecords

        settings = settings_from_args(args)
        db = Database(settings.data_dir, url=settings.database_url)
        self.records = CustomizationRecords(db)
        self.states = JobStore(db)

    def all(self) -> list[_View]:
        jobs = self.records.jobs()
        rows = self.states.many(j.job_id for j in jobs)
        return [_View(j, rows.get(j.job_id)) for j in jobs]

    def one(self, identifier: str) -> _View | None:
        job = self.records.job(identifier)
        return None if job is None else _View(job, self.states.get(job.job_id))

    def again(self, view: _View) -> _View:
        return _View(view.job, self.states.get(view.job.job_id) or view.row)

    def batch(self) -> list[dict[str, Any]]:
        """Batch inference jobs as GetModelInvocationJob shows them (live counts)."""
        from outcrop.batch.records import BatchRecords
        from outcrop.service.batch import batch_status

        records = BatchRecords(self.records.db)
        jobs = records.jobs()
        rows = self.states.many(j.job_id for j in jobs)
        out = []
        for j in jobs:
            row = rows.get(j.job_id)
            live = row is not None and not row.terminal
            counts = (row.progress if row else None) or {}
            out.append(
                {
                    "jobArn": j.job_arn,
                    "jobName": j.job_name,
                    "status": batch_status(row, j),
                    "modelId": j.model_id,
                    "submitTime": j.submit_time,
                    "totalRecordCount": counts.get("total") if live else j.total_records,
                    "processedRecordCount": counts.get("processed")
                    if live
                    else j.processed_records,
                    "errorRecordCount": counts.get("error") if live else j.error_records,
                    "message": row.failure_message if row else None,
                }
            )
        return out


class _View:
    def __init__(self, job, row) -> None:  # noqa: ANN001
        from outcrop.service.customization import job_status

        self.job, self.row = job, row
        self.status = job_status(row)
        self.progress = (row.progress if row else None) or {}
        self.end_time = row.ended_at if row else None
        self.failure_message = row.failure_message if row else None
        self.work_dir = row.work_dir if row else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.job, name)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _progress_text(job) -> str:  # noqa: ANN001
    p = job.progress or {}
    if job.status != "InProgress":
        return "-"
    if p.get("phase") != "training":
        return str(p.get("phase", "queued"))
    loss = p.get("loss")
    return (
        f"epoch {p.get('epoch', 0)}/{p.get('epochs', '?')} step {p.get('step', 0)}/"
        f"{p.get('total_steps', '?')}" + (f" loss {loss:.4f}" if loss is not None else "")
    )


def cmd_jobs_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    source = _Jobs(args)
    jobs = sorted(source.all(), key=lambda j: j.creation_time, reverse=True)
    batch = sorted(source.batch(), key=lambda j: j["submitTime"], reverse=True)
    if args.json:
        print(json.dumps([_as_dict(j) for j in jobs] + batch, indent=2))
        return 0
    table = Table(title="Model customization jobs")
    for col in ("Job", "Status", "Base model", "Custom model", "Created", "Progress"):
        table.add_column(col, overflow="fold")
    for j in jobs:
        style = _STYLE.get(j.status, "")
        table.add_row(
            j.job_name,
            f"[{style}]{j.status}[/]",
            j.base_model_id,
            j.model_name,
            _when(j.creation_time),
            _progress_text(j),
        )
    console = Console()
    console.print(table)
    if batch:
        bt = Table(title="Batch inference jobs")
        for col in ("Job", "Status", "Model", "Submitted", "Records"):
            bt.add_column(col, overflow="fold")
        for b in batch:
            done, total = b["processedRecordCount"] or 0, b["totalRecordCount"]
            errors = b["errorRecordCount"] or 0
            bt.add_row(
                b["jobName"],
                f"[{_STYLE.get(b['status'], '')}]{b['status']}[/]",
                b["modelId"],
                _when(b["submitTime"]),
                f"{done}/{'?' if total is None else total}"
                + (f" ({errors} errors)" if errors else ""),
            )
        console.print(bt)
    return 0


def _as_dict(job) -> dict[str, Any]:  # noqa: ANN001
    return {
        "jobArn": job.job_arn,
        "jobName": job.job_name,
        "status": job.status,
        "customModelName": job.model_name,
        "customModelArn": job.model_arn if job.status == "Completed" else None,
        "baseModelId": job.base_model_id,
        "customizationType": job.customization_type,
        "hyperParameters": job.hyperparameters,
        "creationTime": job.creation_time,
        "endTime": job.end_time,
        "trainingLoss": job.training_loss
        if job.training_loss is not None
        else job.progress.get("loss"),
        "validationLosses": job.validation_losses,
        "failureMessage": job.failure_message,
        "progress": job.progress,
        "workDir": job.work_dir,
    }


def cmd_jobs_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    db = _Jobs(args)
    job = db.one(args.job)
    if job is None:
        raise CliError(f"no customization job {args.job!r}")
    if args.json:
        print(json.dumps(_as_dict(job), indent=2))
        return 0
    console = Console()
    table = Table(title=job.job_name, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in _as_dict(job).items():
        if isinstance(value, list | dict):
            value = json.dumps(value)
        table.add_row(key, "-" if value is None else str(value))
    console.print(table)
    if job.status != "InProgress" and not args.watch:
        return 0
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        console=console,
    ) as bar:
        p = job.progress or {}
        task = bar.add_task(job.job_name, total=p.get("total_steps") or None, detail="")
        while True:
            p = job.progress or {}
            loss = p.get("loss")
            detail = f"epoch {p.get('epoch', 0)}/{p.get('epochs', '?')} {p.get('phase', 'queued')}"
            if loss is not None:
                detail += f" loss {loss:.4f}"
            if p.get("tokens_per_s"):
                detail += f" {p['tokens_per_s']:.0f} tok/s ({p.get('precision', '?')})"
            bar.update(
                task, completed=p.get("step", 0), total=p.get("total_steps") or None, detail=detail
            )
            if job.status != "InProgress" or not args.watch:
                break
            time.sleep(1)
            job = db.again(job)
    if job.status != "InProgress":
        console.print(f"{job.job_name}: [{_STYLE.get(job.status, '')}]{job.status}[/]")
    return 0


def add_parsers(sub, common: argparse.ArgumentParser) -> None:  # noqa: ANN001
    jobs = sub.add_parser("jobs", help="model customization jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    p = jsub.add_parser("list", parents=[common], help="list customization jobs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_jobs_list)
    p = jsub.add_parser("show", parents=[common], help="show one job and its progress")
    p.add_argument("job", metavar="JOB", help="job name, ARN or ID")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", action="store_true", help="follow progress until the job ends")
    p.set_defaults(func=cmd_jobs_show)
