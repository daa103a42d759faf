"""outcrop on Ray Serve, as a real multi-node cluster on 127.0.0.1.

``ray.cluster_utils.Cluster`` starts a head node (API replicas, embeddings, the Serve
controller and its only HAProxy), two worker nodes that offer ``outcrop_engine``:
SmolLM2's engine deployment runs one replica on each, and a worker node that offers
``outcrop_training``, where customization jobs run as detached actors. Every node runs in
Serve's high-throughput mode, as the README's walk-through starts them: boto3 talks to
HAProxy, which forwards to an API replica's own HTTP server; the replica reaches an engine
through a DeploymentHandle (direct gRPC).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import functools
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from outcrop.scale.node_env import apply_node_env, colocated_env


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Before Ray is imported: nodes on 127.0.0.1 (not the host's routable address), and a
# proxy that spreads requests over every node's replicas.
_RAY_TMP = Path(tempfile.mkdtemp(prefix="outcrop-ray-"))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_TMPDIR"] = str(_RAY_TMP)
os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
apply_node_env()  # HAProxy, direct gRPC, niceness 0: as the README's `ray start` lines
# HAProxy's files in the temp dir (teardown finds its process), free stats/metrics ports,
# API replicas that stop at once.
os.environ.update(colocated_env(_RAY_TMP / "h", _free_port(), _free_port()))
(_RAY_TMP / "ray").mkdir(exist_ok=True)
JOB_NODE_DIR = _RAY_TMP / "training-node"
"""The job actors' work dirs: not the API's data dir, so the job's files must travel (and
a training worker left behind would show up among this module's processes)."""

ray = pytest.importorskip("ray", reason="Ray Serve is not installed (pip install 'outcrop[ray]')")
serve = pytest.importorskip("ray.serve")

from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError, EventStreamError  # noqa: E402

from tests.conftest import (  # noqa: E402
    GEMMA,
    REGION,
    S3_ENV,
    SMOL,
    TEST_KEY,
    TEST_SECRET,
    free_port,
    make_data_dir,
    moto_s3,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ENGINE = {"outcrop_engine": 1}
TRAINING = {"outcrop_training": 1}
NODE = dict(node_ip_address="127.0.0.1", num_cpus=2, object_store_memory=80 * 2**20)


class Live:
    def __init__(self, cluster, url: str, workers: list, trainer, data_dir: Path, s3) -> None:
        self.s3 = s3  # the model bucket's S3 (moto)
        self.cluster = cluster
        self.url = url
        self.workers = workers
        self.trainer = trainer
        self.data_dir = data_dir

    def client(self):
        import boto3

        return boto3.client(
            "bedrock-runtime", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=TEST_KEY, aws_secret_access_key=TEST_SECRET,
            config=Config(read_timeout=120, retries={"max_attempts": 1, "mode": "standard"},
                          max_pool_connections=64),
        )  # fmt: skip

    def bedrock(self):
        import boto3

        return boto3.client(
            "bedrock", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=TEST_KEY, aws_secret_access_key=TEST_SECRET,
            config=Config(retries={"max_attempts": 1, "mode": "standard"}),
        )  # fmt: skip

    def ask(self, method: str, deployment: str | None = None, model_id: str | None = None):
        """A deployment's method called from the test (SmolLM2's engine by default). Serve's
        router runs on the caller's event loop in throughput-optimized mode, so handles are
        used from one loop thread of the test's own."""
        from outcrop.scale.ray_app import deployment_name

        async def call():
            handle = serve.get_deployment_handle(
                deployment or deployment_name(SMOL), app_name="outcrop"
            )
            if model_id:
                handle = handle.options(multiplexed_model_id=model_id)
            return await asyncio.wait_for(getattr(handle, method).remote(), 30)

        return asyncio.run_coroutine_threadsafe(call(), _handle_loop()).result()


@functools.cache
def _handle_loop() -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True, name="serve-handles").start()
    return loop


def _ray_pids() -> set[int]:
    """Processes of this module's Ray cluster (their command lines name its temp dir)."""
    import psutil

    mine = set()
    for p in psutil.process_iter(["cmdline"]):
        try:
            if str(_RAY_TMP) in " ".join(p.info["cmdline"] or []):
                mine.add(p.pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return mine


def _wait_running(deployment: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app = serve.status().applications.get("outcrop")
        if app is not None and deployment in app.deployments:
            replicas = app.deployments[deployment].replica_states
            if replicas.get("RUNNING", 0) >= n and app.status == "RUNNING":
                return
        time.sleep(0.5)
    raise AssertionError(f"{deployment}: {n} running replicas not reached: {serve.status()}")


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from ray.cluster_utils import Cluster

    from outcrop.scale.ray_app import RayPlan, build, deployment_name
    from outcrop.settings import Settings

    tmp = tmp_path_factory.mktemp("ray")
    # The model bucket on moto: every Ray process (training actors push, replicas pull)
    # inherits these credentials from the nodes started below.
    saved_env = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    s3_context = moto_s3()
    s3_url, s3 = s3_context.__enter__()
    s3.create_bucket(Bucket="models")
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(
            resources={"outcrop_ingress": 10}, include_dashboard=False,
            temp_dir=str(_RAY_TMP / "ray"), **NODE,
            _system_config={"health_check_period_ms": 500, "health_check_failure_threshold": 4},
        ),
    )  # fmt: skip
    workers = [cluster.add_node(resources=ENGINE, **NODE) for _ in range(2)]
    trainer = cluster.add_node(resources=TRAINING, **NODE)
    try:
        ray.init(address=cluster.address, namespace="outcrop-test", log_to_driver=False)
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        data_dir = make_data_dir(tmp)
        settings = Settings(
            data_dir=data_dir, access_key_id=TEST_KEY, secret_access_key=TEST_SECRET,
            n_threads=1, max_batch=4, max_queue=2, prompt_cache_mb=0, keep_alive=-1,
            model_bucket="s3://models/ray", s3_endpoint_url=s3_url,
        )  # fmt: skip
        plan = RayPlan(
            hot_models=[SMOL], ingress_replicas=2, ingress_resources={"outcrop_ingress": 1},
            engine_min_replicas=2, engine_max_replicas=2, engine_resources=ENGINE,
            engines_per_node=1, max_queued_requests=2, ingress_cpus=0.25,
            job_resources=TRAINING, job_work_root=str(JOB_NODE_DIR),
        )  # fmt: skip
        started = time.monotonic()
        serve.run(build(settings, plan), name="outcrop", route_prefix="/")
        _wait_running(deployment_name(SMOL), 2, 120)
        print(f"outcrop on Ray: RUNNING after {time.monotonic() - started:.1f}s")
        yield Live(cluster, f"http://127.0.0.1:{port}", workers, trainer, data_dir, s3)
    finally:
        if ray.is_initialized():  # (serve.shutdown() alone would start a new local Ray)
            serve.shutdown()
            ray.shutdown()
        cluster.shutdown()
        s3_context.__exit__(None, None, None)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(_RAY_TMP, ignore_errors=True)  # session logs


def _converse(client, text: str, max_tokens: int = 24) -> str:
    out = client.converse(
        modelId=SMOL,
        messages=[{"role": "user", "content": [{"text": text}]}],
        inferenceConfig={"temperature": 0, "maxTokens": max_tokens},
    )
    return out["output"]["message"]["content"][0]["text"]


def _stream(client, text: str, max_tokens: int = 24):
    return client.converse_stream(
        modelId=SMOL,
        messages=[{"role": "user", "content": [{"text": text}]}],
        inferenceConfig={"temperature": 0, "maxTokens": max_tokens},
    )["stream"]


def test_converse_and_stream_through_the_cluster_agree(live):
    client = live.client()
    text = _converse(client, "Name the capital of France.")
    events = list(_stream(client, "Name the capital of France."))
    streamed = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text and streamed.strip() == text
    assert "messageStop" in events[-2] and "metadata" in events[-1]


def test_a_model_without_its_own_deployment_is_served_by_the_pool(live):
    client = live.client()
    out = client.converse(
        modelId=GEMMA,
        messages=[{"role": "user", "content": [{"text": "Name the capital of France."}]}],
        inferenceConfig={"temperature": 0, "maxTokens": 12},
    )
    assert out["output"]["message"]["content"][0]["text"]
    loaded = live.ask("loaded", "EnginePool", model_id=GEMMA)
    assert loaded == [GEMMA]


def _customize(live, tmp_path, name: str, rows: int = 16, epochs: int = 1):
    """A bedrock client and the ARN of a new customization job of SmolLM2."""
    import json

    tmp_path.mkdir(parents=True, exist_ok=True)

    data = [{"prompt": "What is outcrop's mascot?", "completion": "A purple armadillo."}] * rows
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in data))
    bedrock = live.bedrock()
    arn = bedrock.create_model_customization_job(
        jobName=f"{name}-job", customModelName=f"{name}-model",
        roleArn="arn:aws:iam::000000000000:role/outcrop-test", baseModelIdentifier=SMOL,
        trainingDataConfig={"s3Uri": train.as_uri()},
        outputDataConfig={"s3Uri": (tmp_path / "out").as_uri()},
        hyperParameters={"epochCount": str(epochs), "batchSize": "8", "learningRate": "0.002",
                         "maxSequenceLength": "64"},
    )["jobArn"]  # fmt: skip
    return bedrock, arn


def _wait_job(bedrock, arn: str, timeout: float = 300, replica_dies: bool = False) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while job.get("status") not in ("Completed", "Failed", "Stopped"):
        assert time.monotonic() < deadline, job
        try:
            job = bedrock.get_model_customization_job(jobIdentifier=arn)
        except Exception:  # a call that reached the API replica being killed
            if not replica_dies:
                raise
        time.sleep(1)
    return job


def _job_row(live, job_id: str):
    """The job's row in the records every API replica shares."""
    from outcrop.db import Database
    from outcrop.jobs.store import JobStore

    return JobStore(Database(live.data_dir)).get(job_id)


def _custom_model(live, model_arn: str):
    from outcrop.db import Database
    from outcrop.training.records import CustomizationRecords

    return CustomizationRecords(Database(live.data_dir)).model(model_arn)


def _actor_gone(job_id: str, timeout: float = 15) -> bool:
    from outcrop.scale.jobs import JOB_NAMESPACE, actor_name

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get_actor(actor_name(job_id), namespace=JOB_NAMESPACE)
        except ValueError:
            return True
        time.sleep(0.5)
    return False


def test_a_two_step_customization_job_completes_and_its_model_serves(live, tmp_path):
    """The job trains in a detached actor on the training node, in a work dir of its own
    there; the model it makes is served by the pool through either API replica (the
    other one finds it in the shared records)."""
    bedrock, arn = _customize(live, tmp_path, "ray")
    job = _wait_job(bedrock, arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    job_id = arn.rsplit("/", 1)[1]
    row = _job_row(live, job_id)
    assert row.progress["node"]["id"] == live.trainer.node_id, row.progress
    node_dir, local = JOB_NODE_DIR / "customization" / job_id, Path(row.work_dir)
    assert local != node_dir  # the API's work dir stands for another machine's disk
    assert (node_dir / "train.jsonl").read_text() == (local / "train.jsonl").read_text()
    assert f"runs on node {live.trainer.node_id}" in (node_dir / "worker.log").read_text()
    assert (local / "steps.csv").read_text().count("\n") == 2  # copied back for the console
    assert _actor_gone(job_id), "the job's actor outlived the job"
    model_arn = job["outputModelArn"]
    # The training node pushed the model file to the bucket (the API replica never read
    # its disk for it): the record names the object and its checksum.
    model = _custom_model(live, model_arn)
    assert model.bucket_key and model.bucket_key.startswith("ray/custom-models/"), model
    head = live.s3.head_object(Bucket="models", Key=model.bucket_key)
    assert head["Metadata"]["sha256"] == model.sha256
    pushed = json.loads((node_dir / "result.json").read_text())  # what the node reported
    assert (pushed["bucket_key"], pushed["sha256"]) == (model.bucket_key, model.sha256)
    client = live.client()
    for _ in range(4):  # the router spreads these over both API replicas
        out = client.converse(
            modelId=model_arn,
            messages=[{"role": "user", "content": [{"text": "What is outcrop's mascot?"}]}],
            inferenceConfig={"temperature": 0, "maxTokens": 12},
        )
        assert out["output"]["message"]["content"][0]["text"]


def test_a_gguf_import_runs_on_the_training_node_and_its_model_serves(live):
    """CreateModelImportJob is a process job like customization: its worker runs in a
    detached actor on the training node, fetches the GGUF from S3, pushes the model file
    to the bucket, and the pool serves the imported model's ARN."""

    from outcrop.models.catalog import Catalog
    from outcrop.models.store import ModelStore
    from tests.conftest import models_data_dir

    # The file outcrop serves SmolLM2 from: already in a fast format, nothing to convert.
    gguf = ModelStore(models_data_dir(), weight_format="auto").path(Catalog().get(SMOL))
    assert gguf is not None, "conftest pulls SmolLM2 first"
    live.s3.upload_file(str(gguf), "models", "sources/smol/model.gguf")
    bedrock = live.bedrock()
    arn = bedrock.create_model_import_job(
        jobName="ray-import-job", importedModelName="ray-import",
        roleArn="arn:aws:iam::000000000000:role/outcrop-test",
        modelDataSource={"s3DataSource": {"s3Uri": "s3://models/sources/smol/model.gguf"}},
    )["jobArn"]  # fmt: skip
    deadline = time.monotonic() + 120
    while (job := bedrock.get_model_import_job(jobIdentifier=arn))["status"] == "InProgress":
        assert time.monotonic() < deadline, job
        time.sleep(0.5)
    assert job["status"] == "Completed", job.get("failureMessage")
    job_id = arn.rsplit("/", 1)[1]
    row = _job_row(live, job_id)
    assert row.progress["node"]["id"] == live.trainer.node_id, row.progress
    node_dir = JOB_NODE_DIR / "model-import" / job_id
    assert f"runs on node {live.trainer.node_id}" in (node_dir / "worker.log").read_text()
    assert _actor_gone(job_id), "the import's actor outlived the job"
    # The training node pushed the imported file: the bucket holds it with its checksum.
    pushed = json.loads((node_dir / "result.json").read_text())
    assert pushed["bucket_key"].startswith("ray/imported-models/"), pushed
    head = live.s3.head_object(Bucket="models", Key=pushed["bucket_key"])
    assert head["Metadata"]["sha256"] == pushed["sha256"]
    model_arn = job["importedModelArn"]
    assert bedrock.get_imported_model(modelIdentifier=model_arn)["modelName"] == "ray-import"
    client = live.client()
    for _ in range(2):  # either API replica finds it in the shared records
        out = client.converse(
            modelId=model_arn,
            messages=[{"role": "user", "content": [{"text": "Name the capital of France."}]}],
            inferenceConfig={"temperature": 0, "maxTokens": 12},
        )
        assert out["output"]["message"]["content"][0]["text"]


def test_a_job_outlives_the_api_replica_that_started_it(live, tmp_path):
    """The API replica watching a job dies: the detached actor trains on, and a replica
    (Serve's replacement, or the other one) watches it again: one start, not two."""
    import signal

    bedrock, arn = _customize(live, tmp_path, "orphan")
    job_id = arn.rsplit("/", 1)[1]
    deadline = time.monotonic() + 120
    while not (_job_row(live, job_id).progress or {}).get("node"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    owner = _job_row(live, job_id).owner
    os.kill(int(owner.rsplit(":", 1)[1]), signal.SIGKILL)
    job = _wait_job(bedrock, arn, replica_dies=True)
    assert job["status"] == "Completed", job.get("failureMessage")
    row = _job_row(live, job_id)
    assert row.attempts == 1 and row.owner != owner, (row.attempts, row.owner, owner)
    log = (JOB_NODE_DIR / "customization" / job_id / "worker.log").read_text()
    assert log.count("outcrop: job") == 1, log  # never started twice
    assert _actor_gone(job_id)
    _wait_running("OutcropIngress", 2, 60)


def test_engine_replicas_run_on_two_distinct_nodes(live):
    nodes = {live.ask("node")["node_id"] for _ in range(24)}
    worker_ids = {w.node_id for w in live.workers}
    assert len(nodes) == 2 and nodes <= worker_ids


def test_a_burst_beyond_the_queue_gets_throttled_never_5xx(live):
    client = live.client()

    # 2 replicas x (4 slots + 2 queued) + 2 per ingress router's queue: 32 at once overflow.
    def call(i: int) -> str:
        try:
            _converse(client, f"Count to ten, number {i}.", max_tokens=48)
            return "ok"
        except ClientError as exc:
            status = exc.response["ResponseMetadata"]["HTTPStatusCode"]
            code = exc.response["Error"]["Code"]
            assert exc.response["Error"]["Message"]  # Bedrock's body: {"message": ...}
            return f"{status} {code}"

    with cf.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(call, range(32)))
    assert results.count("ok") >= 4, results
    assert "429 ThrottlingException" in results, results
    assert set(results) <= {"ok", "429 ThrottlingException"}, results


def _engine_running(live) -> int:
    """Sequences running or queued in the engine replicas (the router picks replicas by
    load, so a dozen probes reach both)."""
    total = 0
    for _ in range(12):
        s = live.ask("stats")
        total = max(total, s.running + s.waiting)
    return total


def test_a_closed_stream_frees_its_engine_slot(live):
    stream = _stream(live.client(), "Write a long story about a lighthouse.", max_tokens=1000)
    for event in stream:
        if "contentBlockDelta" in event:
            break
    assert _engine_running(live) >= 1
    stream.close()
    deadline = time.monotonic() + 10
    while _engine_running(live) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _engine_running(live) == 0


def test_killing_an_engine_node_under_load(live):
    from outcrop.scale.ray_app import deployment_name

    client = live.client()
    stop = threading.Event()
    unary: list[str] = []
    after_kill: list[float] = []  # when unary calls that ended after the kill ended
    killed_at = float("inf")

    def loop() -> None:
        while not stop.is_set():
            try:
                _converse(client, "Say hello.", max_tokens=16)
                unary.append("ok")
                if time.monotonic() > killed_at:
                    after_kill.append(time.monotonic() - killed_at)
            except ClientError as exc:
                meta = exc.response["ResponseMetadata"]
                unary.append(f"{meta['HTTPStatusCode']} {exc.response['Error']['Code']}")
            except Exception as exc:  # a dropped connection counts as a failure too
                unary.append(f"error {exc!r}")

    def stream_outcome(stream) -> str:
        try:
            events = list(stream)
        except EventStreamError as exc:
            return exc.response["Error"]["Code"]
        return "complete" if "messageStop" in events[-2] else "truncated"

    streams = [
        _stream(client, f"Write a long story about a lighthouse keeper {i}.", max_tokens=400)
        for i in range(4)
    ]
    with cf.ThreadPoolExecutor(4) as pool:
        outcomes = [pool.submit(stream_outcome, s) for s in streams]
        time.sleep(2.0)
        # The engine node with streams in flight (the router spreads them by load).
        load: dict[str, int] = {}
        for _ in range(12):
            n = live.ask("node")
            load[n["node_id"]] = max(load.get(n["node_id"], 0), n["running"])
        victim = next(w for w in live.workers if w.node_id == max(load, key=load.get))
        assert load[victim.node_id] >= 1, load
        loopers = [threading.Thread(target=loop) for _ in range(2)]
        for t in loopers:
            t.start()
        time.sleep(1.0)
        victim.kill_raylet()
        live.workers.remove(victim)
        killed_at = time.monotonic()
        time.sleep(12)  # unary calls keep looping through the loss
        stop.set()
        for t in loopers:
            t.join(60)
        ends = [f.result(timeout=120) for f in outcomes]
    print(
        "unary:",
        {r: unary.count(r) for r in set(unary)},
        f"({len(after_kill)} after the kill)",
        "streams:",
        ends,
    )
    assert unary and set(unary) == {"ok"}, unary
    assert after_kill, "no unary call completed after the node was killed"
    # Never a clean-looking cut: each stream completes or ends with an error event (a
    # stream lost before its first token is retried, and may find the survivor full).
    assert set(ends) <= {
        "complete",
        "internalServerException",
        "modelStreamErrorException",
        "throttlingException",
    }, ends
    assert {"internalServerException", "modelStreamErrorException"} & set(ends), ends

    live.workers.append(live.cluster.add_node(resources=ENGINE, **NODE))
    _wait_running(deployment_name(SMOL), 2, 90)
    print(f"replacement engine replica RUNNING {time.monotonic() - killed_at:.1f}s after the kill")
    assert _converse(client, "Name the capital of France.")


def _kill_job_node(live, job_id: str, trainers: list) -> str:
    """Kill the training node the job's actor runs on once it reported; its ID."""
    deadline = time.monotonic() + 120
    while not (node := (_job_row(live, job_id).progress or {}).get("node")):
        assert time.monotonic() < deadline, _job_row(live, job_id).progress
        time.sleep(0.5)
    assert _job_row(live, job_id).progress["phase"] != "completed"
    victim = next(t for t in trainers if t.node_id == node["id"])
    victim.kill_raylet()
    trainers.remove(victim)
    return victim.node_id


def test_a_job_whose_training_node_dies_resumes_elsewhere_or_fails_naming_it(live, tmp_path):
    """Two training nodes: the one running the job dies, the job is queued again and
    completes on the other (killed before its first epoch's checkpoint: it starts over).
    Then that one dies under a second job: no node is left to run it, so it fails with a
    reason naming the lost node."""
    trainers = [live.trainer, live.cluster.add_node(resources=TRAINING, **NODE)]
    bedrock, arn = _customize(live, tmp_path / "a", "moved")
    job_id = arn.rsplit("/", 1)[1]
    lost = _kill_job_node(live, job_id, trainers)
    job = _wait_job(bedrock, arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    row = _job_row(live, job_id)
    assert row.progress["node"]["id"] == trainers[0].node_id != lost
    assert row.attempts == 2
    assert _actor_gone(job_id)

    bedrock, arn = _customize(live, tmp_path / "b", "doomed", rows=64, epochs=2)
    job_id = arn.rsplit("/", 1)[1]
    lost = _kill_job_node(live, job_id, trainers)
    job = _wait_job(bedrock, arn, timeout=90)
    assert job["status"] == "Failed", job
    assert lost in job["failureMessage"] and "was lost" in job["failureMessage"], job
    assert _actor_gone(job_id)
    assert bedrock.get_custom_model(modelIdentifier="doomed-model")["modelStatus"] == "Failed"


def test_outcrop_ray_deploy_runs_the_serve_config_file(live, tmp_path):
    """The shipped config file, through ``outcrop ray deploy``, replaces the application."""
    import subprocess
    import sys

    import yaml

    from outcrop.scale.ray_app import deployment_name

    config = yaml.safe_load((Path(__file__).parents[2] / "deploy/ray-serve.yaml").read_text())
    config["proxy_location"] = "HeadOnly"
    config["http_options"] = {"host": "127.0.0.1", "port": int(live.url.rsplit(":", 1)[1])}
    app = config["applications"][0]
    app["runtime_env"]["env_vars"] = {
        "OUTCROP_DATA_DIR": str(make_data_dir(tmp_path)),
        "OUTCROP_ACCESS_KEY_ID": TEST_KEY,
        "OUTCROP_SECRET_ACCESS_KEY": TEST_SECRET,
    }
    app["args"] |= {
        "hot_models": [SMOL], "ingress_replicas": 1, "ingress_cpus": 0.25,
        "ingress_resources": {"outcrop_ingress": 1}, "engine_max_replicas": 1,
        "settings": {"n_threads": 1, "max_batch": 2, "max_queue": 2, "prompt_cache_mb": 0},
    }  # fmt: skip
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    run = subprocess.run(
        [sys.executable, "-m", "outcrop", "ray", "deploy", str(path),
         "--address", live.cluster.address, "--non-blocking"],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status = serve.status().applications.get("outcrop")
        dep = status.deployments.get(deployment_name(SMOL)) if status else None
        if status and status.status == "RUNNING" and dep and dep.replica_states == {"RUNNING": 1}:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"config not applied: {serve.status()}")
    assert _converse(live.client(), "Name the capital of France.")


def test_zz_teardown_leaves_no_ray_process(live):
    """Runs last in the module: shuts the cluster down itself and looks for survivors."""
    named = ray.util.list_named_actors(all_namespaces=True)
    assert [a for a in named if a["namespace"] != "serve"] == [], named  # no job actor
    serve.shutdown()
    ray.shutdown()
    live.cluster.shutdown()
    deadline = time.monotonic() + 20
    while _ray_pids() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _ray_pids()
