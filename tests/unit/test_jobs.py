"""The shared job machinery with toy kinds: seconds, no model, no torch."""

from __future__ import annotations

import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from outcrop.db import Database
from outcrop.jobs import files
from outcrop.jobs.kinds import JobContext, JobKind
from outcrop.jobs.records import FAILED, QUEUED, RUNNING, STOPPED, SUCCEEDED
from outcrop.jobs.runner import JobRunner
from outcrop.jobs.store import JobStore


@pytest.fixture
def store(tmp_path) -> JobStore:
    return JobStore(Database(tmp_path))


def add(store: JobStore, job_id: str, kind: str, **kw) -> None:
    with store.db.session() as s:
        store.add(s, job_id, kind, **kw)


def wait_state(store: JobStore, job_id: str, states: tuple[str, ...], runner=None, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runner is not None:
            runner.poll()
        row = store.get(job_id)
        if row.state in states:
            return row
        time.sleep(0.05)
    raise AssertionError(f"{job_id} stayed {store.get(job_id).state}")


def test_transition_is_conditional_and_terminal_states_are_final(store):
    add(store, "j1", "toy")
    assert store.transition("j1", RUNNING, [QUEUED])
    assert not store.transition("j1", RUNNING, [QUEUED])  # lost race: it is RUNNING already
    assert store.transition("j1", SUCCEEDED, [RUNNING])
    assert not store.transition("j1", STOPPED, [RUNNING, SUCCEEDED])  # never leaves a terminal
    row = store.get("j1")
    assert row.state == SUCCEEDED and row.ended_at and row.started_at
    assert [e.state for e in store.events("j1")] == [QUEUED, RUNNING, SUCCEEDED]


def test_stop_after_completion_is_refused_and_leaves_one_outcome(store):
    """The race STYLE.md names: a stop landing as the job completes."""
    add(store, "j1", "toy")
    store.transition("j1", RUNNING, [QUEUED])
    store.transition("j1", SUCCEEDED, [RUNNING])
    assert store.request_stop("j1") is False
    assert store.get("j1").stop_requested_at is None


def test_inline_job_runs_reports_progress_and_succeeds(store):
    seen = []

    def run(ctx: JobContext) -> dict:
        ctx.progress(phase="working", done=1)
        return {"answer": 42}

    runner = JobRunner(store)
    runner.register(JobKind("toy", "inline", run=run, on_succeeded=lambda j, r: seen.append(r)))
    add(store, "j1", "toy")
    row = wait_state(store, "j1", (SUCCEEDED, FAILED), runner)
    assert row.state == SUCCEEDED and seen == [{"answer": 42}]
    assert row.progress == {"phase": "working", "done": 1} and row.attempts == 1
    assert "working" in [e.phase for e in store.events("j1")]


def test_inline_failure_keeps_its_message_and_an_exception_does_not_escape(store):
    def fail(ctx):
        raise files.JobFailure("the data source bucket is empty")

    def crash(ctx):
        raise KeyError("boom")

    ended = []
    runner = JobRunner(store)
    runner.register(JobKind("fail", "inline", run=fail, on_ended=lambda j: ended.append(j.job_id)))
    runner.register(JobKind("crash", "inline", run=crash))
    add(store, "a", "fail")
    add(store, "b", "crash")
    assert wait_state(store, "a", (FAILED,), runner).failure_message == (
        "the data source bucket is empty"
    )
    assert "KeyError" in wait_state(store, "b", (FAILED,), runner).failure_message
    assert ended == ["a"]


def test_stop_ends_a_running_inline_job_and_a_queued_one_at_once(store):
    started = threading.Event()

    def slow(ctx):
        started.set()
        while not ctx.should_stop():
            time.sleep(0.01)
        return {}

    runner = JobRunner(store)
    runner.register(JobKind("slow", "inline", run=slow, max_running=1))
    add(store, "a", "slow")
    add(store, "b", "slow")
    runner.poll()
    assert started.wait(5)
    assert store.get("b").state == QUEUED  # one slot
    assert runner.stop("b") and store.get("b").state == STOPPED
    assert runner.stop("a")
    assert wait_state(store, "a", (STOPPED, SUCCEEDED), runner).state == STOPPED
    assert runner.stop("a") is False  # already ended


def test_jobs_with_the_same_lock_key_never_run_together(store):
    running = []
    peak = []
    gate = threading.Event()

    def work(ctx):
        running.append(ctx.job_id)
        peak.append(len(running))
        gate.wait(5)
        running.remove(ctx.job_id)
        return {}

    runner = JobRunner(store)
    runner.register(JobKind("ingest", "inline", run=work, max_running=4))
    add(store, "a", "ingest", lock_key="ds-1")
    add(store, "b", "ingest", lock_key="ds-1")
    add(store, "c", "ingest", lock_key="ds-2")
    runner.poll()
    assert {store.get(j).state for j in "ac"} == {RUNNING} and store.get("b").state == QUEUED
    gate.set()
    for j in "abc":
        wait_state(store, j, (SUCCEEDED,), runner)
    assert max(peak) <= 2


def _toy_worker(tmp_path: Path, body: str) -> str:
    pkg = tmp_path / "toyworker"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import sys, time\nfrom pathlib import Path\nfrom outcrop.jobs import files\n"
        "work = Path(sys.argv[1])\n" + body
    )
    sys.path.insert(0, str(tmp_path))
    return "toyworker"


def test_process_job_settles_from_its_result_file(store, tmp_path, monkeypatch):
    module = _toy_worker(
        tmp_path,
        "files.write_json(work / files.PROGRESS, {'phase': 'busy'})\n"
        "files.write_json(work / files.RESULT, {'path': 'x'})\n",
    )
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{':'.join(sys.path)}")
    results = []
    runner = JobRunner(store)
    runner.register(
        JobKind("proc", "process", module=module, on_succeeded=lambda j, r: results.append(r))
    )
    work = tmp_path / "job"
    work.mkdir()
    add(store, "p", "proc", work_dir=str(work))
    assert wait_state(store, "p", (SUCCEEDED, FAILED), runner).state == SUCCEEDED
    assert results == [{"path": "x"}]


def test_restart_resumes_running_jobs_settles_finished_ones_and_caps_attempts(store, tmp_path):
    kind = JobKind("proc", "process", module="nothing.here", max_attempts=2)
    done, again, tired, stopping = (tmp_path / n for n in ("done", "again", "tired", "stopping"))
    for d in (done, again, tired, stopping):
        d.mkdir()
    files.write_json(done / files.RESULT, {"ok": True})
    for job_id, work, attempts in (("done", done, 1), ("again", again, 1), ("tired", tired, 2),
                                   ("stopping", stopping, 1)):  # fmt: skip
        add(store, job_id, "proc", work_dir=str(work))
        store.transition(job_id, RUNNING, [QUEUED], attempts=attempts)
    store.request_stop("stopping")
    runner = JobRunner(store)  # a new server: nothing is running in it
    runner.register(kind)
    runner._closing.set()  # recover only; launch nothing
    runner.start()
    assert store.get("done").state == SUCCEEDED
    assert store.get("again").state == QUEUED
    tired_row = store.get("tired")
    assert tired_row.state == FAILED and "interrupted 2 times" in tired_row.failure_message
    assert store.get("stopping").state == STOPPED


def test_legacy_customization_database_is_migrated(tmp_path):
    """A data dir from before the jobs table: rows keep their status, nothing is lost."""
    legacy = tmp_path / "customization.db"
    con = sqlite3.connect(legacy)
    con.executescript(
        """
        CREATE TABLE customization_jobs (job_id VARCHAR(12) PRIMARY KEY, job_arn VARCHAR,
          job_name VARCHAR, model_name VARCHAR, model_id VARCHAR, model_arn VARCHAR,
          client_request_token VARCHAR, role_arn VARCHAR, base_model_id VARCHAR,
          base_model_arn VARCHAR, customization_type VARCHAR, hyperparameters JSON,
          training_uri TEXT, validation_uris JSON, output_uri TEXT, status VARCHAR(16) NOT NULL,
          failure_message TEXT, creation_time FLOAT, last_modified_time FLOAT, end_time FLOAT,
          training_loss FLOAT, validation_losses JSON, progress JSON, tags JSON, work_dir TEXT);
        CREATE TABLE custom_models (model_id VARCHAR(12) PRIMARY KEY, model_arn VARCHAR,
          model_name VARCHAR, job_id VARCHAR, base_model_id VARCHAR, status VARCHAR,
          failure_message TEXT, creation_time FLOAT, path TEXT);
        INSERT INTO customization_jobs VALUES ('aaaa', 'arn:a', 'done-job', 'm1', 'mid1',
          'arn:m1', NULL, 'arn:role', 'base', 'arn:base', 'FINE_TUNING', '{}', 'file:///t',
          '[]', 'file:///o', 'Completed', NULL, 100.0, 200.0, 200.0, 0.5, '[]',
          '{"phase": "completed"}', '{}', '/w/aaaa');
        INSERT INTO customization_jobs VALUES ('bbbb', 'arn:b', 'bad-job', 'm2', 'mid2',
          'arn:m2', NULL, 'arn:role', 'base', 'arn:base', 'FINE_TUNING', '{}', 'file:///t',
          '[]', 'file:///o', 'Failed', 'out of memory', 101.0, 201.0, 201.0, NULL, '[]',
          '{}', '{}', '/w/bbbb');
        """
    )
    con.commit()
    con.close()
    from outcrop.training.records import CustomizationRecords

    db = Database(tmp_path)
    assert not legacy.exists() and (tmp_path / "outcrop.db").exists()
    store = JobStore(db)
    records = CustomizationRecords(db)
    assert {j.job_name for j in records.jobs()} == {"done-job", "bad-job"}
    done, bad = store.get("aaaa"), store.get("bbbb")
    assert (done.state, done.ended_at, done.work_dir) == (SUCCEEDED, 200.0, "/w/aaaa")
    assert (bad.state, bad.failure_message) == (FAILED, "out of memory")
    Database(tmp_path)  # opening it again is a no-op
    assert len(store.of_kind("customization")) == 2


def test_inline_job_awaits_coroutines_on_the_servers_loop(store):
    import asyncio

    loop = asyncio.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()

    async def on_loop(x: int) -> dict:
        return {"on_loop": threading.current_thread() is loop_thread, "value": 2 * x}

    runner = JobRunner(store, poll_interval=0.02)
    runner.register(JobKind("toy", "inline", run=lambda ctx: ctx.call(on_loop(21), timeout=5),
                            on_succeeded=lambda j, r: seen.append(r)))  # fmt: skip
    seen: list[dict] = []
    add(store, "j1", "toy")
    runner.start(loop)
    try:
        assert wait_state(store, "j1", (SUCCEEDED, FAILED)).state == SUCCEEDED
        assert seen == [{"on_loop": True, "value": 42}]
    finally:
        runner.close()
        loop.call_soon_threadsafe(loop.stop)
