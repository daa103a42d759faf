"""``outcrop models import SOURCE [--name NAME]`` and ``outcrop models import --scan``.

The import is a model import job like CreateModelImportJob's (same service, same data
dir, listed by ListModelImportJobs), run here in the foreground with a progress bar. A
server on the same data dir serves the model as soon as it completes.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from outcrop.cli_support import EXIT_USAGE, CliError, settings_from_args

PHASES = ("fetch", "checksum", "inspect", "convert", "format", "verify", "install")
_PHASE_TEXT = {
    "queued": "queued",
    "fetch": "fetching",
    "checksum": "checking the sha256",
    "inspect": "inspecting",
    "convert": "converting to GGUF (llama.cpp's converter)",
    "format": "choosing the weight format (quality gate)",
    "verify": "test-loading in llama.cpp",
    "install": "installing",
    "completed": "done",
}


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


class _Bar:
    """One rich bar: bytes while fetching / hashing, a phase counter otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.progress: Any = None
        self.task: Any = None
        self.phase: str | None = None

    def __enter__(self) -> _Bar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(),
                TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                console=Console(stderr=True),
            )  # fmt: skip
            self.progress.__enter__()
            self.task = self.progress.add_task("starting", total=len(PHASES), detail="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def __call__(self, **values: Any) -> None:
        if self.progress is None:
            return
        phase = values.get("phase", self.phase)
        if "note" in values:
            self.progress.console.print(f"  {values['note']}")
        if phase != self.phase:
            self.phase = phase
            step = PHASES.index(phase) if phase in PHASES else len(PHASES)
            self.progress.update(
                self.task, description=_PHASE_TEXT.get(phase, phase), total=len(PHASES),
                completed=step, detail="",
            )  # fmt: skip
        if "total_bytes" in values and values["total_bytes"]:
            done, total = values.get("done_bytes", 0), values["total_bytes"]
            self.progress.update(
                self.task, total=total, completed=done, detail=f"{_human(done)}/{_human(total)}"
            )


def cmd_models_import(args: argparse.Namespace) -> int:
    if args.scan:
        return _scan(args)
    if not args.source:
        raise CliError("give a SOURCE to import, or --scan to list what is on this machine",
                       EXIT_USAGE)  # fmt: skip
    from outcrop.db import Database
    from outcrop.errors import OutcropError
    from outcrop.imports.layout import ImportFailure
    from outcrop.imports.sources import resolve_source
    from outcrop.models.bucket import ModelBucket
    from outcrop.models.catalog import Catalog
    from outcrop.models.resolve import ModelResolver
    from outcrop.service.imports import DEFAULT_ROLE, ImportService

    settings = settings_from_args(args, s3_endpoint_url=args.s3_endpoint_url)
    try:
        source = resolve_source(args.source)
    except ImportFailure as exc:
        raise CliError(str(exc)) from None
    name = args.name or source.suggested_name or "imported-model"
    catalog = Catalog()
    service = ImportService(
        catalog, ModelResolver(catalog), settings.data_dir, settings.region,
        settings.account_id, Database(settings.data_dir, url=settings.database_url),
        s3_endpoint_url=settings.s3_endpoint_url, weight_format=settings.weight_format,
        threads=args.threads or settings.training_threads,
        bucket=ModelBucket.from_settings(settings),  # OUTCROP_MODEL_BUCKET, as the server's
    )  # fmt: skip
    import time

    body = {
        "jobName": args.job_name or f"import-{name}-{time.strftime('%Y%m%d%H%M%S')}"[:63],
        "importedModelName": name,
        "roleArn": DEFAULT_ROLE,
        "modelDataSource": {"s3DataSource": {"s3Uri": source.uri}},
    }
    try:
        arn = service.create_model_import_job(
            body, source_label=source.label,
            source_sha256=source.sha256, weight_format=args.weight_format,
        )["jobArn"]  # fmt: skip
    except OutcropError as exc:
        raise CliError(exc.message) from None
    print(f"{source.label}: importing as {name} (job {arn})")
    with _Bar(not args.quiet) as bar:
        job = service.run_here(arn, bar)
    if job["status"] != "Completed":
        raise CliError(f"import failed: {job.get('failureMessage')}")
    model = service.get_imported_model(name)
    record = service.db.model(name)
    weights = (record.weights if record else {}) or {}
    conv = weights.get("converted") or {}
    print(f"{name}: imported as {model['modelArn']}")
    print(
        f"{name}: architecture {model['modelArchitecture']}, chat template: "
        f"{'yes' if model['instructSupported'] else 'no (base model: plain-text transcript)'}"
    )
    if conv:
        verdict = "serving it" if conv.get("accepted") else "kept the original"
        print(f"{name}: format: {weights.get('reason')} ({verdict})")
    print(f"{name}: call it with modelId={name!r} (or its ARN) once `outcrop serve` runs")
    return 0


def _scan(args: argparse.Namespace) -> int:
    from outcrop.imports.sources import scan

    found = scan()
    if args.json:
        rows = [
            {"store": f.store, "source": f.source, "path": str(f.path),
             "sizeBytes": f.size_bytes, "architecture": f.architecture}
            for f in found
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Models on this machine (import with: outcrop models import SOURCE)")
    for col in ("Store", "SOURCE", "Size", "Architecture"):
        table.add_column(col, overflow="fold")
    for f in found:
        table.add_row(f.store, f.source, _human(f.size_bytes), f.architecture)
    if not found:
        table.caption = "nothing found in Ollama's store, the Hugging Face cache or LM Studio"
    Console().print(table)
    return 0


def imported_rows(settings: Any) -> list[dict[str, Any]]:
    """Imported models recorded in the data dir, for ``outcrop models list``."""
    from outcrop.db import Database
    from outcrop.imports.records import ImportRecords

    return [
        {"modelId": m.model_name, "arn": m.model_arn, "architecture": m.architecture,
         "sizeBytes": m.size_bytes, "path": m.path}
        for m in ImportRecords(Database(settings.data_dir, url=settings.database_url)).models()
    ]  # fmt: skip


def add_parser(msub: Any, common: argparse.ArgumentParser, format_arg: Any) -> None:
    p = msub.add_parser(
        "import", parents=[common],
        help="import a GGUF file, a Hugging Face folder, s3://..., ollama:NAME[:TAG] or hf:ORG/NAME",
    )  # fmt: skip
    p.add_argument(
        "source", nargs="?", metavar="SOURCE",
        help="a path, file:// or s3:// URI, ollama:NAME[:TAG], hf:ORG/NAME[/FILE]",
    )  # fmt: skip
    p.add_argument("--name", default=None, help="the imported model's name (default: from SOURCE)")
    p.add_argument("--job-name", default=None, help="the import job's name")
    p.add_argument(
        "--scan", action="store_true",
        help="list models in Ollama's store, the Hugging Face cache and LM Studio",
    )  # fmt: skip
    p.add_argument(
        "--format", dest="weight_format", type=format_arg, default=None, metavar="FORMAT",
        help="auto (default: convert a format slow on this CPU, quality-gated), original, q8_0, ...",
    )  # fmt: skip
    p.add_argument("--s3-endpoint-url", default=None, help="S3-compatible endpoint for s3://")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the conversion")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="with --scan: JSON output")
    p.set_defaults(func=cmd_models_import)
