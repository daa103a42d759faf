"""Batch inference's pure parts: record parsing, output names, the journal (no model)."""

from __future__ import annotations

import asyncio
import json
import time

from outcrop.batch.run import BatchRun, parse_lines, relative_name
from outcrop.errors import ThrottlingError, ValidationError
from outcrop.locations import DataLocations


def test_lines_become_records_and_bad_lines_say_why():
    data = b'{"recordId": "A", "modelInput": {"x": 1}}\n\n{oops\n{"recordId": "B"}\n[1]\n'
    records = parse_lines(data, 0)
    assert [(r.line, r.record_id) for r in records] == [(0, "A"), (2, None), (3, "B"), (4, None)]
    assert records[0].problem is None and records[0].model_input == {"x": 1}
    assert "Malformed JSON" in records[1].problem and records[1].model_input == "{oops"
    assert records[2].problem == records[3].problem == "The record has no modelInput."


def test_output_names_keep_the_path_below_the_input_prefix(tmp_path):
    loc = DataLocations(tmp_path)
    root = loc.parse("s3://bucket/in/", "input")
    assert relative_name(root, loc.parse("s3://bucket/in/a/b.jsonl", "x")) == "a/b.jsonl"
    single = loc.parse("s3://bucket/in/only.jsonl", "input")
    assert relative_name(single, single) == "only.jsonl"


def make_run(tmp_path, call, should_stop=lambda: False) -> BatchRun:
    loc = DataLocations(tmp_path)
    return BatchRun(
        locations=loc,
        input_root=loc.parse("s3://b/in/", "input"),
        output_root=loc.parse("s3://b/out/job1", "output"),
        work_dir=tmp_path / "work",
        call_model=call,
        concurrency=3,
        should_stop=should_stop,
        report=lambda values: None,
        deadline=time.time() + 3600,
    )


def write_input(tmp_path, n: int) -> None:
    folder = tmp_path / "s3" / "b" / "in"
    folder.mkdir(parents=True)
    rows = [json.dumps({"recordId": f"R{i}", "modelInput": {"i": i}}) for i in range(n)]
    (folder / "data.jsonl").write_text("\n".join(rows) + "\n")


def test_a_torn_journal_line_is_cut_and_only_missing_records_run(tmp_path):
    write_input(tmp_path, 6)
    calls = []

    async def call(model_input):
        calls.append(model_input["i"])
        if model_input["i"] == 4:
            raise ValidationError("bad body")
        return {"echo": model_input["i"]}, 2, 3

    run = make_run(tmp_path, call)
    run.work_dir.mkdir()
    done = {"file": 0, "line": 1, "in": 2, "out": 3, "ok": True,
            "record": {"recordId": "R1", "modelInput": {"i": 1}, "modelOutput": {"echo": 1}}}  # fmt: skip
    run.journal.write_text(json.dumps(done) + "\n" + '{"file": 0, "li')  # killed mid-write
    counts = asyncio.run(run.run())
    assert sorted(calls) == [0, 2, 3, 4, 5]  # record 1 was journaled: not run again
    assert (counts.total, counts.processed, counts.success, counts.error) == (6, 6, 5, 1)
    out = (tmp_path / "s3" / "b" / "out" / "job1" / "data.jsonl.out").read_text().splitlines()
    assert [json.loads(line)["recordId"] for line in out] == [f"R{i}" for i in range(6)]
    assert json.loads(out[4])["error"] == {"errorCode": 400, "errorMessage": "bad body"}
    manifest = json.loads(
        (tmp_path / "s3" / "b" / "out" / "job1" / "manifest.json.out").read_text()
    )
    assert manifest == {"totalRecordCount": 6, "processedRecordCount": 6, "successRecordCount": 5,
                        "errorRecordCount": 1, "inputTokenCount": 10, "outputTokenCount": 15}  # fmt: skip


def test_throttled_records_are_retried_not_failed(tmp_path, monkeypatch):
    write_input(tmp_path, 2)
    tries = {"n": 0}

    async def call(model_input):
        tries["n"] += 1
        if tries["n"] <= 2:
            raise ThrottlingError("busy")
        return {"ok": True}, 1, 1

    real_sleep = asyncio.sleep
    monkeypatch.setattr("outcrop.batch.run.asyncio.sleep", lambda s: real_sleep(0))
    counts = asyncio.run(make_run(tmp_path, call).run())
    assert (counts.success, counts.error) == (2, 0)


def test_a_stop_ends_the_run_and_keeps_what_was_done(tmp_path):
    write_input(tmp_path, 50)
    stop = {"now": False}

    async def call(model_input):
        if model_input["i"] >= 5:
            stop["now"] = True
            await asyncio.sleep(10)  # in flight when the stop lands: dropped, rerun on resume
        return {"i": model_input["i"]}, 1, 1

    run = make_run(tmp_path, call, should_stop=lambda: stop["now"])
    started = time.monotonic()
    counts = asyncio.run(run.run())
    assert time.monotonic() - started < 5
    assert 0 < counts.processed < 50
    out = (tmp_path / "s3" / "b" / "out" / "job1" / "data.jsonl.out").read_text().splitlines()
    assert len(out) == counts.processed
