"""Crash recovery: ``kill -9`` the server mid-work, start it again on the same data dir.

Scenarios: write load on the records database (guardrails created from several threads),
a batch inference job, and (full run) a model import with its format conversion. After
each restart what must hold: ``PRAGMA integrity_check`` is ``ok``; every write the server
acknowledged before the kill is still there; an interrupted job finishes (each batch
record exactly once) or fails with a reason; no imported model is registered that cannot
be served; and no orphaned temporary file is left in the data dir after the next start.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from outcrop.reliability import live

#: Temp-file names outcrop writes (``.<name>.tmp-<pid>``, ``.<name>.partial-…``, mkstemp's
#: ``.credentials.json.<random>.tmp``, write probes).
TEMP_NAME = re.compile(r"^\..+\.(tmp-\d+.*|partial-.+|tmp)$|^\.outcrop-probe-")


def integrity(data_dir: Path) -> str:
    with sqlite3.connect(data_dir / "outcrop.db", timeout=30) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def orphans(data_dir: Path) -> list[str]:
    """Temp files under the data dir (not following links: the shared models/cache)."""
    found = []
    for folder, dirs, files in os.walk(data_dir):
        for name in files + dirs:
            if TEMP_NAME.match(name):
                found.append(str((Path(folder) / name).relative_to(data_dir)))
    return found


def _wait(predicate, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    return None


def db_write_load(root: Path) -> dict[str, Any]:
    server = live.server(root, preload=False)
    bedrock = server.client("bedrock")
    acked: list[str] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        client = server.client("bedrock")
        i = 0
        while not stop.is_set():
            name = f"crash-{n}-{i}"
            try:
                client.create_guardrail(
                    name=name,
                    blockedInputMessaging="no",
                    blockedOutputsMessaging="no",
                    wordPolicyConfig={"wordsConfig": [{"text": f"word{i}"}]},
                )
                acked.append(name)
            except Exception:
                return  # the server is gone
            i += 1

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    _wait(lambda: len(acked) >= 40, 120, 0.1)
    server.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    check = integrity(server.data_dir)
    at_kill = orphans(server.data_dir)  # what the kill left, before the restart
    server.start()
    try:
        listed: set[str] = set()
        token = None
        while True:
            page = bedrock.list_guardrails(**({"nextToken": token} if token else {}))
            listed |= {g["name"] for g in page["guardrails"]}
            token = page.get("nextToken")
            if not token:
                break
        lost = sorted(set(acked) - listed)
        left = orphans(server.data_dir)
    finally:
        server.stop()
    return {
        "scenario": "records DB under write load (4 writers, kill -9)",
        "acknowledged_writes": len(acked),
        "lost_after_restart": lost[:10],
        "integrity_check": check,
        "temp_files_at_kill": at_kill,
        "orphaned_temp_files": left,
        "held": check == "ok" and not lost and not left,
    }


def batch_job(root: Path, records: int = 24) -> dict[str, Any]:
    server = live.server(root, "--parallel", "2")
    bucket = server.data_dir / "s3" / "crash"
    (bucket / "in").mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps({"recordId": f"R{i:05d}", "modelInput": {
            "anthropic_version": "bedrock-2023-05-31", "max_tokens": 24,
            "messages": [{"role": "user", "content": f"Count to {i % 9 + 2}."}]}})
        for i in range(records)
    ]  # fmt: skip
    (bucket / "in" / "records.jsonl").write_text("\n".join(lines) + "\n")
    bedrock = server.client("bedrock")
    arn = bedrock.create_model_invocation_job(
        jobName="crash-batch", roleArn="arn:aws:iam::123456789012:role/any", modelId=live.SMOL,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://crash/in/"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": "s3://crash/out/"}},
    )["jobArn"]  # fmt: skip
    journal_seen = _wait(lambda: any((server.data_dir).rglob("*journal*")) or None, 120, 0.2)
    time.sleep(2)
    status_before = bedrock.get_model_invocation_job(jobIdentifier=arn)["status"]
    server.kill()
    check = integrity(server.data_dir)
    at_kill = orphans(server.data_dir)  # what the kill left, before the restart
    server.start()
    try:
        final = _wait(
            lambda: (
                (s := bedrock.get_model_invocation_job(jobIdentifier=arn))["status"]
                in ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired")
                and s
            ),
            900,
            2,
        )
        outs = list((bucket / "out").rglob("records.jsonl.out"))
        ids = [json.loads(x)["recordId"] for f in outs for x in f.read_text().splitlines() if x]
        left = orphans(server.data_dir)
    finally:
        server.stop()
    status = final["status"] if final else "still running after 900 s"
    exactly_once = sorted(ids) == sorted(f"R{i:05d}" for i in range(records))
    reason_ok = status == "Completed" or (status == "Failed" and bool(final.get("message")))
    return {
        "scenario": f"batch job of {records} records (kill -9 while {status_before})",
        "journal_seen_before_kill": bool(journal_seen),
        "integrity_check": check,
        "final_status": status,
        "records_out": len(ids),
        "each_record_exactly_once": exactly_once,
        "temp_files_at_kill": at_kill,
        "orphaned_temp_files": left,
        "held": check == "ok" and reason_ok and (exactly_once or status == "Failed") and not left,
    }


def run(root: Path, full: bool = False) -> dict[str, Any]:
    scenarios = [db_write_load(root / "db"), batch_job(root / "batch", 48 if full else 8)]
    if full:
        from outcrop.reliability.crash_jobs import customization, model_import

        scenarios.append(model_import(root / "import"))
        scenarios.append(customization(root / "customization"))
    failed = [s["scenario"] for s in scenarios if not s["held"]]
    return {"scenarios": scenarios, "failed": len(failed), "held": not failed}
