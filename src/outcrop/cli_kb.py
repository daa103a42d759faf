"""``outcrop kb list|sync``: knowledge bases from the data directory, syncs via the server.

``list`` reads the same SQLite file the server writes (works whether or not it runs);
``sync`` asks a running server to start an ingestion job (StartIngestionJob, signed with
this data dir's credentials) and, with ``--watch``, follows its progress until it ends.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from outcrop.cli_support import CliError, settings_from_args

_STYLE = {"ACTIVE": "green", "COMPLETE": "green", "FAILED": "red", "STOPPED": "magenta"}


def _db(args: argparse.Namespace):  # noqa: ANN202
    from outcrop.db import Database
    from outcrop.knowledge.records import KnowledgeDatabase

    settings = settings_from_args(args)
    return KnowledgeDatabase(Database(settings.data_dir, url=settings.database_url))


def _last_job(db, ds_id: str):  # noqa: ANN001, ANN202
    jobs = db.jobs(ds_id=ds_id)
    return jobs[-1] if jobs else None


def _job_text(job) -> str:  # noqa: ANN001
    """``job``: (IngestionJobRecord, JobRow) or None."""
    from outcrop.service.kb_jobs import status

    if job is None:
        return "never synced"
    record, row = job
    s, p = record.statistics or {}, row.progress or {}
    text = f"{status(row)} {s.get('new', 0)} new, {s.get('modified', 0)} modified, "
    text += f"{s.get('deleted', 0)} deleted, {s.get('failed', 0)} failed"
    if row.state == "RUNNING" and p.get("documents_total"):
        text += f" ({p.get('documents_done', 0)}/{p['documents_total']} documents)"
    return text


def cmd_kb_list(args: argparse.Namespace) -> int:
    db = _db(args)
    rows: list[dict[str, Any]] = []
    for kb in sorted(db.knowledge_bases(), key=lambda k: k.created_at):
        for ds in db.data_sources(kb.kb_id) or [None]:
            job = _last_job(db, ds.ds_id) if ds else None
            docs = db.documents(ds.ds_id) if ds else []
            rows.append(
                {
                    "knowledgeBaseId": kb.kb_id,
                    "name": kb.name,
                    "status": kb.status,
                    "embeddingModel": kb.embedding_model,
                    "dataSourceId": ds.ds_id if ds else None,
                    "dataSource": f"{ds.name} ({ds.source_type})" if ds else None,
                    "documents": sum(1 for d in docs if d.status == "INDEXED"),
                    "chunks": sum(d.chunks for d in docs),
                    "lastSync": _job_text(job) if ds else None,
                }
            )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Knowledge bases")
    for col in ("KB", "Name", "Status", "Data source", "Docs", "Chunks", "Last sync"):
        table.add_column(col, overflow="fold")
    for r in rows:
        style = _STYLE.get(r["status"], "")
        table.add_row(
            r["knowledgeBaseId"], r["name"], f"[{style}]{r['status']}[/]",
            f"{r['dataSourceId']} {r['dataSource']}" if r["dataSourceId"] else "-",
            str(r["documents"]), str(r["chunks"]), r["lastSync"] or "-",
        )  # fmt: skip
    if not rows:
        table.caption = "no knowledge bases"
    Console().print(table)
    return 0


def _find(db, kb: str, ds: str) -> tuple[str, str]:  # noqa: ANN001
    kbs = [k for k in db.knowledge_bases() if kb in (k.kb_id, k.name)]
    if not kbs:
        raise CliError(f"no knowledge base {kb!r} in this data dir (see `outcrop kb list`)")
    sources = [d for d in db.data_sources(kbs[0].kb_id) if ds in (d.ds_id, d.name)]
    if not sources:
        raise CliError(f"no data source {ds!r} in knowledge base {kbs[0].name}")
    return kbs[0].kb_id, sources[0].ds_id


def _agent_client(args: argparse.Namespace, settings):  # noqa: ANN001, ANN202
    import boto3
    from botocore.config import Config

    from outcrop.credentials import load_or_create_credentials

    endpoint = (args.endpoint or f"http://{settings.host}:{settings.port}").rstrip("/")
    if settings.access_key_id and settings.secret_access_key:
        key, secret = settings.access_key_id, settings.secret_access_key
    else:
        key, secret, _ = load_or_create_credentials(settings.data_dir)
    return endpoint, boto3.client(
        "bedrock-agent", endpoint_url=endpoint, region_name=settings.region,
        aws_access_key_id=key, aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip


def cmd_kb_sync(args: argparse.Namespace) -> int:
    from botocore.exceptions import BotoCoreError, ClientError

    settings = settings_from_args(args)
    db = _db(args)
    kb_id, ds_id = _find(db, args.kb, args.ds)
    endpoint, agent = _agent_client(args, settings)
    try:
        job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    except ClientError as exc:
        raise CliError(f"{endpoint}: {exc.response['Error'].get('Message', exc)}") from None
    except BotoCoreError as exc:
        raise CliError(f"no outcrop server answered at {endpoint}: {exc}") from None
    job_id = job["ingestionJobId"]
    from rich.console import Console

    console = Console()
    console.print(f"ingestion job {job_id} started on {kb_id}/{ds_id}")
    if not args.watch:
        return 0
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from outcrop.service.kb_jobs import status

    with Progress(
        TextColumn("{task.description}"), BarColumn(),
        TextColumn("{task.completed}/{task.total} documents"),
        TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=console,
    ) as bar:  # fmt: skip
        task = bar.add_task(job_id, total=None, detail="")
        while True:
            found = db.job(job_id)
            if found is None:
                raise CliError(f"ingestion job {job_id} is gone (its knowledge base was deleted)")
            record, row = found
            p = row.progress or {}
            bar.update(
                task,
                completed=p.get("documents_done", 0),
                total=p.get("documents_total") or None,
                detail=f"{status(row)} {p.get('chunks', 0)} chunks",
            )
            if row.terminal:
                break
            time.sleep(0.5)
    style = _STYLE.get(status(row), "")
    console.print(f"{job_id}: [{style}]{_job_text(found)}[/]")
    for reason in record.failure_reasons or []:
        console.print(f"  failed: {reason}")
    if row.failure_message:
        console.print(f"  {row.failure_message}")
    return 0 if row.state == "SUCCEEDED" else 1


def add_parsers(sub, common: argparse.ArgumentParser) -> None:  # noqa: ANN001
    kb = sub.add_parser("kb", help="knowledge bases")
    ksub = kb.add_subparsers(dest="kb_command", metavar="ACTION", required=True)
    p = ksub.add_parser("list", parents=[common], help="list knowledge bases and their syncs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_kb_list)
    p = ksub.add_parser("sync", parents=[common], help="start an ingestion job on a server")
    p.add_argument("kb", metavar="KB", help="knowledge base ID or name")
    p.add_argument("ds", metavar="DS", help="data source ID or name")
    p.add_argument("--watch", action="store_true", help="show progress until the job ends")
    p.add_argument("--endpoint", default=None, help="server URL (default: from settings)")
    p.set_defaults(func=cmd_kb_sync)
