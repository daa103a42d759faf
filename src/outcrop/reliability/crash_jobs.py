"""Crash recovery for the long jobs: a model import (``kill -9`` while the weights are
fetched or converted) and a customization job (while it trains). After the restart the
job must finish (and its model answer) or fail with a reason, with no model registered
that cannot be served, and no worker process outliving the killed server."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from outcrop.reliability import live
from outcrop.reliability.crash import _wait, integrity, orphans

TERMINAL = ("Completed", "Failed")


def _source(root: Path) -> Path:
    cached = live.shared_models_dir() / "models" / "huggingface.smollm2-135m-instruct-v1_0"
    gguf = sorted(cached.glob("*Q8_0.gguf")) or sorted(cached.glob("*.gguf"))
    if not gguf:
        raise RuntimeError(f"no SmolLM2 GGUF in {cached}: run the tests once to pull it")
    folder = root / "src"
    folder.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(gguf[0], folder / gguf[0].name))


def model_import(root: Path, kill_after_s: float = 1.5) -> dict[str, Any]:
    source = _source(root)
    # q4_0 from a Q8_0 file: a conversion runs, so the kill can land in it.
    server = live.server(root, "--format", "q4_0", preload=False)
    bedrock = server.client("bedrock")
    arn = bedrock.create_model_import_job(
        jobName="crash-import", importedModelName="crash-smol",
        roleArn="arn:aws:iam::000000000000:role/any",
        modelDataSource={"s3DataSource": {"s3Uri": source.as_uri()}},
    )["jobArn"]  # fmt: skip
    time.sleep(kill_after_s)
    before = bedrock.get_model_import_job(jobIdentifier=arn)["status"]
    server.kill()
    check = integrity(server.data_dir)
    at_kill = orphans(server.data_dir)  # what the kill left, before the restart
    server.start()
    try:
        job = _wait(
            lambda: (
                (j := bedrock.get_model_import_job(jobIdentifier=arn))["status"] in TERMINAL and j
            ),
            900,
            2,
        )
        models = bedrock.list_imported_models()["modelSummaries"]
        answered = None
        if job and job["status"] == "Completed":
            runtime = server.client("bedrock-runtime")
            out = runtime.converse(
                modelId=job["importedModelArn"],
                messages=[{"role": "user", "content": [{"text": "Say hi."}]}],
                inferenceConfig={"maxTokens": 4},
            )
            answered = bool(out["output"]["message"]["content"])
        left = orphans(server.data_dir)
    finally:
        server.stop()
    status = job["status"] if job else "not terminal after 900 s"
    if status == "Completed":
        fine = answered and len(models) == 1
    else:
        fine = status == "Failed" and bool(job.get("failureMessage")) and not models
    return {
        "scenario": f"model import with conversion to q4_0 (kill -9 while {before})",
        "integrity_check": check,
        "final_status": status,
        "failure_message": (job or {}).get("failureMessage"),
        "imported_models_registered": len(models),
        "imported_model_answers": answered,
        "temp_files_at_kill": at_kill,
        "orphaned_temp_files": left,
        "held": bool(fine) and check == "ok" and not left,
    }


def _children_of(pid: int) -> list[int]:
    """Processes whose parent was ``pid`` or that still name its data dir (orphans)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def _workers_naming(data_dir: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(data_dir) in cmd and "serve" not in cmd:
                found.append(int(entry))
    return found


def customization(root: Path) -> dict[str, Any]:
    server = live.server(root, preload=False)
    train = root / "train.jsonl"
    rows = [{"prompt": f"What is fact {i}?", "completion": f"Fact {i} is pebble {i}."}
            for i in range(32)]  # fmt: skip
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    bedrock = server.client("bedrock")
    arn = bedrock.create_model_customization_job(
        jobName="crash-train", customModelName="crash-train-model",
        roleArn="arn:aws:iam::000000000000:role/any", baseModelIdentifier=live.SMOL,
        trainingDataConfig={"s3Uri": train.as_uri()},
        outputDataConfig={"s3Uri": (root / "out").as_uri()},
        hyperParameters={"epochCount": "2", "batchSize": "8", "learningRate": "0.002",
                         "maxSequenceLength": "64"},
    )["jobArn"]  # fmt: skip
    # Kill once training has made progress (a checkpoint may or may not exist yet).
    _wait(
        lambda: (
            bedrock.get_model_customization_job(jobIdentifier=arn)["status"] != "InProgress"
            or any(server.data_dir.rglob("progress.json"))
        ),
        600,
        1,
    )
    time.sleep(5)
    before = bedrock.get_model_customization_job(jobIdentifier=arn)["status"]
    pid = server.process.pid
    server.kill()
    time.sleep(3)
    orphan_workers = _children_of(pid) + _workers_naming(server.data_dir)
    check = integrity(server.data_dir)
    at_kill = orphans(server.data_dir)  # what the kill left, before the restart
    server.start()
    try:
        job = _wait(
            lambda: (
                (j := bedrock.get_model_customization_job(jobIdentifier=arn))["status"]
                in ("Completed", "Failed", "Stopped")
                and j
            ),
            1800,
            3,
        )
        models = bedrock.list_custom_models()["modelSummaries"]
        answered = None
        if job and job["status"] == "Completed":
            out = server.client("bedrock-runtime").converse(
                modelId=job["outputModelArn"],
                messages=[{"role": "user", "content": [{"text": "What is fact 3?"}]}],
                inferenceConfig={"maxTokens": 8},
            )
            answered = bool(out["output"]["message"]["content"])
        left = orphans(server.data_dir)
    finally:
        server.stop()
    status = job["status"] if job else "not terminal after 1800 s"
    if status == "Completed":
        fine = answered and len(models) == 1
    else:
        fine = status == "Failed" and bool(job.get("failureMessage")) and not models
    return {
        "scenario": f"customization job, 2 epochs (kill -9 while {before})",
        "integrity_check": check,
        "worker_processes_left_after_kill": orphan_workers,
        "final_status": status,
        "failure_message": (job or {}).get("failureMessage"),
        "custom_models_registered": len(models),
        "custom_model_answers": answered,
        "temp_files_at_kill": at_kill,
        "orphaned_temp_files": left,
        "held": bool(fine) and check == "ok" and not left and not orphan_workers,
    }
