"""One batch inference job's work: JSONL records in, Bedrock's output layout out.

Input: every ``*.jsonl`` file at or under the input location, one record a line:
``{"recordId": "...", "modelInput": {...}}``. Output under ``<output>/<jobId>/``:
``<input file name>.out`` with ``recordId``, ``modelInput`` and ``modelOutput`` (or
``error: {errorCode, errorMessage}``) per record, and ``manifest.json.out`` with the counts.

Records run concurrently in the engine's background class. Each finished record is
appended (and flushed) to a journal in the job folder before it counts, keyed by its
position in the input; a restarted job replays the journal and runs only what is
missing, so no record is lost or written twice. The outputs are written from the journal
when the job ends — completed, stopped or expired.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcrop.errors import ModelNotReadyError, OutcropError, ThrottlingError
from outcrop.jobs.files import JobFailure
from outcrop.locations import DataLocations, Location, list_objects, write_output

CallModel = Callable[[Any], Awaitable[tuple[dict[str, Any], int, int]]]
"""modelInput -> (modelOutput, input tokens, output tokens); raises OutcropError."""

MANIFEST = "manifest.json.out"
RETRIES = 20  # throttling while a model loads or the background queue is full


class BatchExpired(JobFailure):
    """The job ran past its timeoutDurationInHours."""


def input_files(locations: DataLocations, root: Location) -> list[Location]:
    return [loc for loc in list_objects(root) if loc.uri.endswith(".jsonl")]


def relative_name(root: Location, file: Location) -> str:
    """The input file's name as the output names it (its path below the input prefix)."""
    base = root.uri.rstrip("/")
    rel = file.uri[len(base) :].lstrip("/") if file.uri.startswith(base) else ""
    return rel or file.uri.rsplit("/", 1)[-1]


@dataclass
class Record:
    file: int
    line: int
    record_id: Any
    model_input: Any
    problem: str | None = None  # a line that is not a valid record


@dataclass
class Counts:
    total: int = 0
    processed: int = 0
    success: int = 0
    error: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def parse_lines(data: bytes, file: int) -> list[Record]:
    records = []
    for line_no, raw in enumerate(data.splitlines()):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            text = raw.decode("utf-8", "replace")
            records.append(Record(file, line_no, None, text, f"Malformed JSON line: {exc}"))
            continue
        if not isinstance(value, dict) or "modelInput" not in value:
            records.append(
                Record(file, line_no, value.get("recordId") if isinstance(value, dict) else None,
                       value, "The record has no modelInput.")
            )  # fmt: skip
            continue
        records.append(Record(file, line_no, value.get("recordId"), value["modelInput"]))
    return records


@dataclass
class BatchRun:
    locations: DataLocations
    input_root: Location
    output_root: Location  # <output>/<jobId>
    work_dir: Path
    call_model: CallModel
    concurrency: int
    should_stop: Callable[[], bool]
    report: Callable[[dict[str, Any]], None]
    deadline: float
    counts: Counts = field(default_factory=Counts)
    _files: list[Location] = field(default_factory=list)
    _done: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    _last_report: float = 0.0

    @property
    def journal(self) -> Path:
        return self.work_dir / "records.journal"

    async def run(self) -> Counts:
        self.report({"phase": "validating", **self.counts.as_dict()})
        self._files = await asyncio.to_thread(input_files, self.locations, self.input_root)
        if not self._files:
            raise JobFailure(f"No .jsonl input files were found at {self.input_root.uri}.")
        records: list[Record] = []
        for i, loc in enumerate(self._files):
            data = await asyncio.to_thread(self.locations.read, loc, "input")
            records.extend(parse_lines(data, i))
        self.counts.total = len(records)
        self._replay()
        todo = [r for r in records if (r.file, r.line) not in self._done]
        self._report(force=True, phase="running")
        stopped = await self._run_records(todo)
        self._report(force=True, phase="writing output")
        await asyncio.to_thread(self._write_outputs, records)
        if not stopped and time.time() > self.deadline:
            raise BatchExpired("The batch job did not finish within its timeoutDurationInHours.")
        self._report(force=True, phase="stopped" if stopped else "completed")
        return self.counts

    # ------------------------------------------------------------------ records

    async def _run_records(self, todo: list[Record]) -> bool:
        """Run every record; True if the job was stopped (or expired) before the end."""
        queue = list(reversed(todo))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with open(self.journal, "a", encoding="utf-8") as journal:

            async def worker() -> None:
                while queue and not self._halt():
                    record = queue.pop()
                    entry = await self._one(record)
                    journal.write(json.dumps(entry) + "\n")
                    journal.flush()  # a kill -9 loses at most the line being written
                    self._count(entry)
                    self._report()

            workers = [asyncio.create_task(worker()) for _ in range(max(1, self.concurrency))]
            try:
                while not all(w.done() for w in workers):
                    await asyncio.wait(workers, timeout=0.25)
                    if self._halt():
                        for w in workers:
                            w.cancel()  # in-flight records are dropped and rerun on resume
                        await asyncio.gather(*workers, return_exceptions=True)
                        return True
                for w in workers:
                    w.result()  # re-raise a worker's unexpected error
            finally:
                for w in workers:
                    w.cancel()
        return bool(queue)

    def _halt(self) -> bool:
        return self.should_stop() or time.time() > self.deadline

    async def _one(self, record: Record) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if record.record_id is not None:
            out["recordId"] = record.record_id
        out["modelInput"] = record.model_input
        entry: dict[str, Any] = {"file": record.file, "line": record.line, "in": 0, "out": 0}
        if record.problem is not None:
            out["error"] = {"errorCode": 400, "errorMessage": record.problem}
            return {**entry, "ok": False, "record": out}
        for attempt in range(RETRIES):
            try:
                output, n_in, n_out = await self.call_model(record.model_input)
            except (ThrottlingError, ModelNotReadyError):
                await asyncio.sleep(min(5.0, 0.25 * 2**attempt))
                continue
            except OutcropError as exc:
                out["error"] = {"errorCode": exc.status, "errorMessage": exc.message}
                return {**entry, "ok": False, "record": out}
            out["modelOutput"] = output
            return {**entry, "in": n_in, "out": n_out, "ok": True, "record": out}
        out["error"] = {"errorCode": 429, "errorMessage": "The model stayed busy; not run."}
        return {**entry, "ok": False, "record": out}

    def _count(self, entry: dict[str, Any]) -> None:
        self._done[(entry["file"], entry["line"])] = entry
        c = self.counts
        c.processed += 1
        c.success += 1 if entry["ok"] else 0
        c.error += 0 if entry["ok"] else 1
        c.input_tokens += entry["in"]
        c.output_tokens += entry["out"]

    def _replay(self) -> None:
        """Records a previous run finished; a torn last line is cut off."""
        if not self.journal.exists():
            return
        data = self.journal.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            with open(self.journal, "r+b") as fh:
                fh.truncate(end)
        for raw in data[:end].splitlines():
            entry = json.loads(raw)
            if (entry["file"], entry["line"]) not in self._done:
                self._count(entry)

    def _report(self, force: bool = False, phase: str | None = None) -> None:
        now = time.monotonic()
        if force or now - self._last_report > 0.5:
            self._last_report = now
            values = self.counts.as_dict()
            if phase:
                values["phase"] = phase
            self.report(values)

    # ------------------------------------------------------------------ output

    def _write_outputs(self, records: list[Record]) -> None:
        by_file: dict[int, list[str]] = {i: [] for i in range(len(self._files))}
        for r in records:
            entry = self._done.get((r.file, r.line))
            if entry is not None:
                by_file[r.file].append(json.dumps(entry["record"]))
        for i, loc in enumerate(self._files):
            name = relative_name(self.input_root, loc) + ".out"
            lines = by_file[i]
            write_output(
                self.output_root.child(name), ("\n".join(lines) + "\n" if lines else "").encode()
            )
        c = self.counts
        manifest = {
            "totalRecordCount": c.total,
            "processedRecordCount": c.processed,
            "successRecordCount": c.success,
            "errorRecordCount": c.error,
            "inputTokenCount": c.input_tokens,
            "outputTokenCount": c.output_tokens,
        }
        write_output(self.output_root.child(MANIFEST), json.dumps(manifest).encode())
