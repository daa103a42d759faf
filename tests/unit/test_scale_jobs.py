"""Process jobs on Ray, without a cluster: the job actor as a plain object, what travels
between it and the runner, and the runner's re-attach and node-loss decisions."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from outcrop.db import Database
from outcrop.jobs import files
from outcrop.jobs.kinds import JobKind
from outcrop.jobs.launch import WATCHED_ELSEWHERE, WorkerLost, after_loss
from outcrop.jobs.records import FAILED, QUEUED, RUNNING, STOPPED, SUCCEEDED
from outcrop.jobs.runner import JobRunner
from outcrop.jobs.store import JobStore
from outcrop.scale import jobs as ray_jobs
from outcrop.scale.jobs import (
    MARK,
    JobActor,
    apply_report,
    fitting_nodes,
    gather_inputs,
)

NODE = {"id": "n" * 56, "host": "trainer-1", "ip": "10.0.0.7"}


def _node(node_id: str, alive: bool = True, **resources: float) -> dict:
    return {"NodeID": node_id, "Alive": alive, "Resources": resources}


def test_only_live_nodes_with_the_training_resource_and_cpus_fit():
    nodes = [
        _node("head", CPU=8),
        _node("engine", CPU=8, outcrop_engine=1),
        _node("small", CPU=1, outcrop_training=1),
        _node("dead", alive=False, CPU=8, outcrop_training=1),
        _node("trainer", CPU=4, outcrop_training=1),
    ]
    assert fitting_nodes(nodes, {"CPU": 2, "outcrop_training": 1}) == ["trainer"]
    assert fitting_nodes(nodes, {"CPU": 1, "outcrop_training": 1}) == ["small", "trainer"]
    assert fitting_nodes(nodes, {"CPU": 1, "outcrop_gpu_training": 1}) == []


def test_inputs_ship_by_name_skip_absent_ones_and_refuse_oversize(tmp_path):
    (tmp_path / "spec.json").write_text("{}")
    (tmp_path / "train.jsonl").write_text('{"prompt": "a"}\n')
    (tmp_path / "checkpoint.pt").write_bytes(b"x" * 100)  # not an input: never shipped
    got = gather_inputs(tmp_path, ("spec.json", "train.jsonl", "validation.jsonl"))
    assert got == {"spec.json": b"{}", "train.jsonl": b'{"prompt": "a"}\n'}
    with pytest.raises(files.JobFailure, match="exceed"):
        gather_inputs(tmp_path, ("spec.json", "train.jsonl"), limit=10)


def _toy_worker(tmp_path: Path, body: str) -> str:
    pkg = tmp_path / "toyjobworker"
    pkg.mkdir(exist_ok=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import sys, time\nfrom pathlib import Path\nfrom outcrop.jobs import files\n"
        "work = Path(sys.argv[1])\n" + body
    )
    return "toyjobworker"


@pytest.fixture
def actor_env(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_jobs, "this_node", lambda: dict(NODE))
    monkeypatch.setenv("PYTHONPATH", f"{tmp_path}:{':'.join(sys.path)}")


def _wait_exit(actor: JobActor, owner: str = "api-1") -> dict:
    """The last report, with every small file sent on the way (each travels once)."""
    texts: dict[str, str] = {}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        report = actor.poll(owner)
        texts.update(report["text"])
        if report["exit_code"] is not None:
            return {**report, "text": texts}
        time.sleep(0.05)
    raise AssertionError("the worker did not exit")


def test_the_actor_runs_the_worker_on_its_node_with_the_shipped_inputs(tmp_path, actor_env):
    module = _toy_worker(
        tmp_path,
        "spec = (work / 'spec.json').read_text()\n"
        "files.write_json(work / files.PROGRESS, {'phase': 'training', 'spec': spec})\n"
        "(work / 'steps.csv').open('a').write('1,0,0.5\\n')\n"
        "files.write_json(work / files.RESULT, {'path': str(work / 'model.gguf')})\n",
    )
    node_dir = tmp_path / "node-disk" / "job-1"
    actor = JobActor(
        "job-1", module, {"OUTCROP_X": "1"}, str(node_dir),
        {"spec.json": b'{"a": 1}'}, ("steps.csv",), "api-1",
    )  # fmt: skip
    report = _wait_exit(actor)
    assert report["exit_code"] == 0 and report["json"][files.NODE] == NODE
    assert report["json"][files.PROGRESS]["spec"] == '{"a": 1}'
    assert report["json"][files.RESULT] == {"path": str(node_dir / "model.gguf")}
    assert report["json"][files.ERROR] is None
    assert report["text"]["steps.csv"] == "1,0,0.5\n"
    assert f"runs on node {NODE['id']} (host trainer-1" in report["text"][files.LOG]
    # Small logs travel again only when they changed.
    assert actor.poll("api-1")["text"] == {}

    local = tmp_path / "api-disk" / "job-1"
    apply_report(report, local)
    assert files.read_json(local / files.RESULT) == report["json"][files.RESULT]
    assert files.read_json(local / files.NODE) == NODE  # the runner's progress shows it
    assert (local / "steps.csv").read_text() == "1,0,0.5\n"
    assert not (local / files.ERROR).exists()


def test_one_folder_for_actor_and_runner_is_never_copied_onto_itself(tmp_path, actor_env):
    module = _toy_worker(tmp_path, "files.write_json(work / files.RESULT, {'ok': 1})\n")
    work = tmp_path / "job"
    actor = JobActor("j", module, {}, str(work), {}, (), "api-1")
    report = _wait_exit(actor)
    assert (work / MARK).read_text() == report["mark"]
    (work / files.LOG).write_text("the worker's own log\n")  # newer than the report's copy
    apply_report(report, work)
    assert (work / files.LOG).read_text() == "the worker's own log\n"


def test_stop_sends_sigterm_and_a_bad_input_name_fails_the_job_not_the_actor(tmp_path, actor_env):
    module = _toy_worker(tmp_path, "time.sleep(60)\n")
    actor = JobActor("j", module, {}, str(tmp_path / "a"), {}, (), "api-1")
    actor.stop()
    assert _wait_exit(actor)["exit_code"] == -15
    broken = JobActor("j", module, {}, str(tmp_path / "b"), {"../x": b""}, (), "api-1")
    report = broken.poll("api-1")
    assert report["exit_code"] == -1
    assert f"could not be started on node {NODE['id']}" in report["json"][files.ERROR]["message"]


def test_one_watcher_at_a_time_until_it_goes_quiet_or_is_known_dead(tmp_path, actor_env):
    module = _toy_worker(tmp_path, "time.sleep(60)\n")
    actor = JobActor("j", module, {}, str(tmp_path / "a"), {}, (), "api-1")
    try:
        assert not actor.claim("api-2", force=False)  # api-1 started it and polls it
        assert actor.claim("api-2", force=True)  # api-1 is known to be dead
        assert not actor.claim("api-1", force=False)
        actor.release("api-2")  # a closing replica hands it back
        assert actor.claim("api-3", force=False)
        actor.last_poll -= 60
        assert actor.claim("api-1", force=False)  # api-3 went quiet
        actor.last_poll -= 7200
        assert not actor.orphaned()  # nobody asks, but it still trains: it stays
    finally:
        actor.kill()
    actor.process.wait(10)
    assert actor.orphaned()  # ended, and nobody polled for two hours: it goes
    actor.poll("api-1")
    assert not actor.orphaned()


def test_a_lost_node_queues_the_job_again_or_fails_it_naming_the_node():
    lost = WorkerLost(f"The job's node {NODE['id']} (host trainer-1) was lost.", resumable=True)
    assert after_loss(lost, 1, 3, False) == (QUEUED, None)
    state, message = after_loss(lost, 3, 3, False)
    assert state == FAILED and NODE["id"] in message and "started 3 times" in message
    gone = WorkerLost(lost.message, resumable=False)
    state, message = after_loss(gone, 1, 3, False)
    assert state == FAILED and NODE["id"] in message and "No node left" in message
    assert after_loss(lost, 1, 3, True) == (STOPPED, None)


# ------------------------------------------------------------------ the runner's side


class _Handle:
    def __init__(self, outcomes: list) -> None:
        self.outcomes = outcomes  # what successive polls answer: None, an exit code, a loss
        self.returncode = None
        self.log = "remote log"
        self.released = self.interrupted = False

    def poll(self):
        out = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(out, WorkerLost):
            raise out
        self.returncode = out
        return out

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def release(self) -> None:
        self.released = True

    def interrupt(self) -> None:
        self.interrupted = True


class _Launcher:
    adopts = True

    def __init__(self) -> None:
        self.launched: list[str] = []
        self.live: dict[str, object] = {}
        self.discarded: list[str] = []
        self.rounds: list[list[str]] = []  # the job IDs each attach call asked about
        self.next: list = [None]

    def launch(self, job, kind, work, owner):
        self.launched.append(job.job_id)
        return _Handle(list(self.next))

    def attach(self, jobs, owner):
        self.rounds.append([item.job.job_id for item in jobs])
        return {i.job.job_id: self.live[i.job.job_id] for i in jobs if i.job.job_id in self.live}

    def discard(self, job_id):
        self.discarded.append(job_id)


@pytest.fixture
def store(tmp_path) -> JobStore:
    return JobStore(Database(tmp_path))


def _running_job(store, tmp_path, job_id, owner="elsewhere-host:1", attempts=1):
    work = tmp_path / job_id
    work.mkdir()
    with store.db.session() as s:
        store.add(s, job_id, "train", work_dir=str(work))
    store.transition(job_id, RUNNING, [QUEUED], attempts=attempts, owner=owner)
    return work


def test_a_new_runner_watches_live_workers_again_instead_of_starting_them_twice(store, tmp_path):
    launcher = _Launcher()
    live = _Handle([None, 0])
    launcher.live = {"live": live, "watched": WATCHED_ELSEWHERE}
    work = _running_job(store, tmp_path, "live")
    _running_job(store, tmp_path, "watched")
    _running_job(store, tmp_path, "gone")
    results = []
    runner = JobRunner(store, launcher=launcher)
    runner.register(
        JobKind("train", "process", module="m", on_succeeded=lambda j, r: results.append(r))
    )
    runner._closing.set()  # recover only
    runner.start()
    assert store.get("live").owner == runner.owner and runner.running("live")
    assert store.get("watched").state == RUNNING and store.get("watched").owner != runner.owner
    assert store.get("gone").state == QUEUED  # no worker anywhere: started again
    assert launcher.rounds == [["live", "watched", "gone"]]  # one round for all of them
    files.write_json(work / files.RESULT, {"path": "m.gguf"})
    runner.poll()
    runner.poll()
    assert store.get("live").state == SUCCEEDED and live.released
    assert results == [{"path": "m.gguf"}] and launcher.launched == []
    assert launcher.discarded == []  # released by its handle: nothing left to discard


def test_a_running_runner_adopts_a_worker_whose_server_died_on_another_host(store, tmp_path):
    launcher = _Launcher()
    runner = JobRunner(store, launcher=launcher)
    runner.register(JobKind("train", "process", module="m"))
    runner._closing.set()
    runner.start()  # nothing to recover yet
    _running_job(store, tmp_path, "late", owner="other-host:7")
    store.request_stop("late")  # asked while nobody watched it
    launcher.live = {"late": _Handle([None, -15])}
    runner._adopt()
    assert runner.running("late") and store.get("late").owner == runner.owner
    runner._closing.clear()
    for _ in range(3):
        runner.poll()
    assert store.get("late").state == STOPPED


def test_a_worker_whose_node_died_is_queued_again_then_failed_naming_the_node(store, tmp_path):
    launcher = _Launcher()
    lost = WorkerLost(f"The job's node {NODE['id']} (host trainer-1) was lost.", resumable=True)
    launcher.next = [None, lost]
    runner = JobRunner(store, launcher=launcher)
    runner.register(JobKind("train", "process", module="m", max_attempts=2))
    (tmp_path / "j").mkdir()
    with store.db.session() as s:
        store.add(s, "j", "train", work_dir=str(tmp_path / "j"))
    for _ in range(6):
        runner.poll()
    row = store.get("j")
    assert launcher.launched == ["j", "j"]  # lost once, started again on another node
    assert row.state == FAILED and row.attempts == 2
    assert NODE["id"] in row.failure_message and "started 2 times" in row.failure_message
    assert launcher.discarded == []  # each lost worker was released by its handle
    assert [e.state for e in store.events("j")] == [QUEUED, RUNNING, QUEUED, RUNNING, FAILED]


def test_the_node_a_worker_reports_joins_the_progress_whatever_the_handle(store, tmp_path):
    """The runner reads where a worker runs from its work dir (a Ray actor's report puts
    ``node.json`` there); a handle is never asked."""
    launcher = _Launcher()
    runner = JobRunner(store, launcher=launcher)
    runner.register(JobKind("train", "process", module="m"))
    work = tmp_path / "j"
    work.mkdir()
    with store.db.session() as s:
        store.add(s, "j", "train", work_dir=str(work))
    runner.poll()
    files.write_json(work / files.PROGRESS, {"phase": "training"})
    runner.poll()
    assert store.get("j").progress == {"phase": "training"}  # a local worker: no node
    apply_report({"json": {files.NODE: NODE, files.PROGRESS: {"phase": "exporting"}}}, work)
    runner.poll()
    assert store.get("j").progress == {"phase": "exporting", "node": NODE}


def test_only_a_job_ended_while_unwatched_has_its_worker_discarded(store, tmp_path):
    """A queued job stopped (its worker may have been handed back by a closing server)
    is discarded; adoption asks again only about jobs nobody here watches."""
    launcher = _Launcher()
    runner = JobRunner(store, launcher=launcher)
    runner.register(JobKind("train", "process", module="m"))
    for job_id in ("q", "w"):
        (tmp_path / job_id).mkdir()
        with store.db.session() as s:
            store.add(s, job_id, "train", work_dir=str(tmp_path / job_id))
    runner.stop("q")
    assert store.get("q").state == STOPPED and launcher.discarded == ["q"]
    launcher.next = [None, -15]  # the worker exits once signalled
    runner.poll()  # "w" starts here
    _running_job(store, tmp_path, "elsewhere", owner="other-host:9")
    runner._adopt()
    assert launcher.rounds == [["elsewhere"]]  # not "w", which this runner watches
    runner.stop("w")
    runner.poll()
    runner.poll()
    assert store.get("w").state == STOPPED and launcher.discarded == ["q"]


def test_a_closing_runner_hands_its_workers_back_queued(store, tmp_path):
    launcher = _Launcher()
    runner = JobRunner(store, launcher=launcher)
    runner.register(JobKind("train", "process", module="m"))
    (tmp_path / "j").mkdir()
    with store.db.session() as s:
        store.add(s, "j", "train", work_dir=str(tmp_path / "j"))
    runner.poll()
    handle = runner._running["j"].process
    runner.close()
    assert handle.interrupted and store.get("j").state == QUEUED and store.get("j").attempts == 0


def test_job_resources_come_from_the_command_line():
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed")
    import argparse

    from outcrop.cli_ray import add_serve_arguments, plan_from_args
    from outcrop.scale.ray_app import RayPlan

    assert RayPlan().job_resources == {"outcrop_training": 1}
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    plan = plan_from_args(p.parse_args(["--job-resources", '{"gpu_trainer": 1}']), [])
    assert plan.job_resources == {"gpu_trainer": 1}
    assert plan_from_args(p.parse_args([]), []).job_resources == {"outcrop_training": 1}


def test_ray_adoption_is_one_listing_and_one_wait_and_a_pending_claim_is_not_resent(
    tmp_path, monkeypatch
):
    """Without a cluster: a stand-in for ``ray`` counts the calls. Jobs without an actor
    cost nothing; an actor still waiting for a node keeps its one claim."""
    import types

    from outcrop.jobs.launch import Unwatched
    from outcrop.scale.jobs import RayJobLauncher, RayJobRun, actor_name

    calls: dict[str, int] = {"list": 0, "wait": 0, "claim": 0}
    answers = {"mine": True, "theirs": False}  # "pending" never answers

    class Ref:
        def __init__(self, job_id):
            self.job_id = job_id

    class Actor:
        def __init__(self, job_id):
            self.claim = types.SimpleNamespace(remote=lambda owner, dead: self._claim())
            self.job_id = job_id

        def _claim(self):
            calls["claim"] += 1
            return Ref(self.job_id)

    actors = {actor_name(j): Actor(j) for j in ("mine", "theirs", "pending")}

    def list_named_actors(all_namespaces=False):
        calls["list"] += 1
        return [{"name": n, "namespace": "outcrop"} for n in actors]

    def wait(refs, num_returns, timeout):
        calls["wait"] += 1
        return [r for r in refs if r.job_id in answers], []

    def get_actor(name, namespace):
        return actors[name]

    fake = types.ModuleType("ray")
    fake.util = types.SimpleNamespace(list_named_actors=list_named_actors)
    fake.get_actor, fake.wait = get_actor, wait
    fake.get = lambda ref: answers[ref.job_id]
    fake.exceptions = types.SimpleNamespace(RayActorError=RuntimeError)
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setitem(sys.modules, "ray.exceptions", fake.exceptions)

    class Row:
        def __init__(self, job_id):
            self.job_id, self.kind = job_id, "train"

    kind = JobKind("train", "process", module="m")
    jobs = [
        Unwatched(Row(j), kind, tmp_path, owner_dead=False)  # type: ignore[arg-type]
        for j in ("mine", "theirs", "pending", "no-actor")
    ]
    launcher = RayJobLauncher()
    found = launcher.attach(jobs, "api-1")
    assert isinstance(found["mine"], RayJobRun)
    assert found["theirs"] is WATCHED_ELSEWHERE and found["pending"] is WATCHED_ELSEWHERE
    assert "no-actor" not in found
    assert calls == {"list": 1, "wait": 1, "claim": 3}
    launcher.attach(jobs[2:], "api-1")  # the pending actor's claim is read again, not resent
    assert calls == {"list": 2, "wait": 2, "claim": 3}
