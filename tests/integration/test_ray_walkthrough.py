"""The README's multi-node walk-through ("Several machines (Ray Serve)"), run as written.

The test reads the shell block of that README section and runs its lines as subprocesses,
the way a user types them: the exports, ``ray get-auth-token --generate`` and
``ray start --head`` for the head, ``ray start --address=HEAD_IP:6379 --resources=...`` for
an engine node and a training node, then ``outcrop serve --ray auto ...`` on the head.
boto3 then talks to HEAD_IP, and the engine replica must run on the engine node, the API
replicas on the head. A line of that block the test does not know fails it, so the README
and this test cannot drift apart.

Three "machines" share this one, so each line gets only what sharing needs:
- a free GCS port instead of 6379 and a free HTTP port instead of 8000;
- per node: its own ``--dashboard-agent-listen-port`` and, in its environment, its own
  HAProxy stats/metrics ports and worker-proxy HTTP port (Ray Serve's knobs for
  co-located nodes), ``--object-store-memory`` of 100 MB, and a HOME of its own: the head's
  ``~/.ray/auth_token`` is copied into the others', as the README says;
- RAY_TMPDIR (sessions, logs, ``auto``'s address file) and HAProxy's files in a temp dir,
  so every process of the walk-through names it and teardown finds them all without
  ``ray stop`` (which would kill every Ray process on the machine, other users' too);
- ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S=1``: stopping takes 1 s, not 30;
- no ``OUTCROP_DATABASE_URL`` (it names a PostgreSQL server; on one machine every replica
  shares the SQLite records in the data dir).

The nodes take the machine's routable address, as ``ray start`` gives them: it turns
127.0.0.1 into that address itself, and with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (which
keeps loopback) ``ray start --address`` refuses to join ("Multi-node Ray clusters are not
supported"). ``test_ray_cluster.py`` covers the rest on ``ray.cluster_utils.Cluster``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'outcrop[ray]')")
psutil = pytest.importorskip("psutil")

from botocore.config import Config  # noqa: E402

from outcrop.scale.node_env import colocated_env  # noqa: E402
from tests.conftest import REGION, SMOL, TEST_KEY, TEST_SECRET, make_data_dir  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

README = Path(__file__).parents[2] / "README.md"
BIN = Path(sys.executable).parent
ENGINE = {"outcrop_engine": 1}
TRAINING = {"outcrop_training": 1}


def walkthrough_lines() -> list[list[str]]:
    """The commands of the README section's shell block (continuations joined, comments
    and redirections dropped)."""
    section = README.read_text().split("## Several machines (Ray Serve)", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0].replace("\\\n", " ")
    lines = []
    for line in block.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            argv = shlex.split(line)
            lines.append(argv[: argv.index(">")] if ">" in argv else argv)
    return lines


@dataclass
class Step:
    """One README line, as this machine runs it."""

    node: str  # head, engine, training
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def plan_steps(lines: list[list[str]]) -> tuple[dict[str, str], list[Step], Step]:
    """The exports, the node starts (in order) and ``outcrop serve``; anything else in the
    block is a line this test does not know how to run."""
    exports: dict[str, str] = {}
    starts: list[Step] = []
    serve: Step | None = None
    for argv in lines:
        if argv[0] == "export":
            for pair in argv[1:]:
                key, _, value = pair.partition("=")
                exports[key] = value
        elif argv[:2] == ["ray", "get-auth-token"] or argv[:3] == ["ray", "start", "--head"]:
            starts.append(Step("head", argv))
        elif argv[:2] == ["ray", "start"]:
            resources = next(
                json.loads(a.split("=", 1)[1]) for a in argv if a.startswith("--resources=")
            )
            node = {json.dumps(ENGINE): "engine", json.dumps(TRAINING): "training"}
            starts.append(Step(node[json.dumps(resources)], argv))
        elif argv[:2] == ["outcrop", "serve"]:
            serve = Step("head", argv)
        elif argv[:3] == ["outcrop", "ray", "deploy"]:
            pass  # the Serve config file: test_ray_cluster.py runs it
        else:
            raise AssertionError(f"a README line this test does not run: {shlex.join(argv)}")
    assert serve is not None, "no `outcrop serve --ray` line in the walk-through"
    assert [s.node for s in starts] == ["head", "head", "engine", "training"], starts
    return exports, starts, serve


def test_the_walkthrough_is_the_readme_block():
    """What the live test below runs is the README's block, line by line."""
    exports, starts, serve = plan_steps(walkthrough_lines())
    assert exports["RAY_AUTH_MODE"] == "token"
    assert exports["RAY_SERVE_ENABLE_HA_PROXY"] == "1"
    assert starts[1].argv == ["ray", "start", "--head", "--port=6379"]
    assert "--address=HEAD_IP:6379" in starts[2].argv
    assert serve.argv[:4] == ["outcrop", "serve", "--ray", "auto"]
    assert serve.argv[serve.argv.index("--engine-resources") + 1] == json.dumps(ENGINE)


def _free_ports(n: int) -> list[int]:
    """n distinct free ports (held together while picked)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("", 0))
        return [s.getsockname()[1] for s in socks]


def _exe(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else shutil.which(name) or name


def _ours(tmp: Path) -> dict[int, psutil.Process]:
    """The walk-through's processes: those whose command line names its temp dir
    (GCS, raylets, dashboard, monitors, HAProxy) and all they started (workers and
    agents rename themselves ``ray::...``)."""
    found: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        try:
            if p.pid != os.getpid() and str(tmp) in " ".join(p.info["cmdline"] or []):
                found[p.pid] = p
                for child in p.children(recursive=True):
                    found[child.pid] = child
        except psutil.Error:
            pass
    return found


def _alive(procs) -> list[psutil.Process]:
    alive = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                alive.append(p)
        except psutil.Error:
            pass
    return alive


class Walkthrough:
    """The three nodes and ``outcrop serve`` of one run."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ray_tmp = Path(tempfile.mkdtemp(prefix="ocw-"))  # short: unix socket paths
        (self.ray_tmp / "ray").mkdir()
        self.seen: dict[int, psutil.Process] = {}
        self.serve: subprocess.Popen | None = None
        self.serve_log = tmp / "outcrop-serve.log"
        self.address = ""  # HEAD_IP:port, as the head's `ray start` printed it
        self.http_port = 0
        self.head_env: dict[str, str] = {}

    def env(self, node: str, exports: dict[str, str], ports: dict[str, int]) -> dict[str, str]:
        home = self.tmp / f"{node}-home"
        home.mkdir(exist_ok=True)
        hap = self.ray_tmp / "hap"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "OUTCROP_"))}
        env.update(exports)
        env.update(
            HOME=str(home), RAY_TMPDIR=str(self.ray_tmp), RAY_USAGE_STATS_ENABLED="0",
            PYTHONUNBUFFERED="1",
        )  # fmt: skip
        env.update(colocated_env(hap, ports["stats"], ports["metrics"]))
        if node != "head":
            env["RAY_SERVE_WORKER_PROXY_HTTP_PORT"] = str(ports["http"])
        return env

    def run(self, step: Step, env: dict[str, str], extra: list[str]) -> str:
        argv = [_exe(step.argv[0])] + [
            a.replace("HEAD_IP:6379", self.address) for a in step.argv[1:]
        ] + extra  # fmt: skip
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        self.seen |= _ours(self.ray_tmp)
        out = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout + done.stderr)
        assert done.returncode == 0, f"{shlex.join(step.argv)} failed:\n{out[-3000:]}"
        return out

    def start(self) -> None:
        exports, starts, serve = plan_steps(walkthrough_lines())
        # A PostgreSQL server on DB_HOST: here every replica shares the data dir's SQLite.
        assert exports.pop("OUTCROP_DATABASE_URL").startswith("postgresql+psycopg://")
        names = ["gcs", "client", "dashboard"] + [
            f"{node}-{what}" for node in ("head", "engine", "training")
            for what in ("agent", "stats", "metrics", "http")
        ]  # fmt: skip
        ports = dict(zip(names, _free_ports(len(names)), strict=True))
        envs = {}
        for node in ("head", "engine", "training"):
            mine = {k.split("-", 1)[1]: v for k, v in ports.items() if k.startswith(node)}
            envs[node] = self.env(node, exports, mine)
        common = ["--object-store-memory=100000000"]
        for step in starts:
            agent = [f"--dashboard-agent-listen-port={ports[step.node + '-agent']}", *common]
            if step.argv[1] == "get-auth-token":
                self.run(step, envs["head"], [])
                token = self.tmp / "head-home" / ".ray" / "auth_token"
                for node in ("engine", "training"):  # "copy it to every node"
                    (self.tmp / f"{node}-home" / ".ray").mkdir(exist_ok=True)
                    shutil.copy(token, self.tmp / f"{node}-home" / ".ray" / "auth_token")
            elif step.node == "head":
                step.argv = [a.replace("--port=6379", f"--port={ports['gcs']}") for a in step.argv]
                out = self.run(step, envs["head"], agent + [
                    f"--ray-client-server-port={ports['client']}",
                    f"--dashboard-port={ports['dashboard']}",
                ])  # fmt: skip
                # What a user reads off the head's output to start the others.
                self.address = re.search(r"ray start --address='([^']+)'", out).group(1)
            else:
                self.run(step, envs[step.node], agent)
        self.http_port = ports["head-http"]
        argv = list(serve.argv)
        argv[argv.index("--port") + 1] = str(self.http_port)
        env = envs["head"] | {
            "OUTCROP_DATA_DIR": str(make_data_dir(self.tmp)),
            "OUTCROP_ACCESS_KEY_ID": TEST_KEY,
            "OUTCROP_SECRET_ACCESS_KEY": TEST_SECRET,
        }
        self.serve = subprocess.Popen(
            [_exe("outcrop"), *argv[1:]], env=env, stdout=self.serve_log.open("wb"),
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.head_env = env

    def wait_serving(self, timeout: float = 180) -> None:
        """``outcrop serve`` says so once ``serve.run`` returned (every deployment's
        minimum replicas RUNNING); then HAProxy answers on HEAD_IP."""
        deadline = time.monotonic() + timeout
        while "outcrop: serving on Ray at" not in self.serve_log.read_text(errors="replace"):
            assert self.serve.poll() is None, f"outcrop serve exited:\n{self.log_tail()}"
            assert time.monotonic() < deadline, f"outcrop serve not up:\n{self.log_tail()}"
            time.sleep(0.5)
        while True:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"no /health on {self.url}:\n{self.log_tail()}"
            time.sleep(0.5)

    @property
    def url(self) -> str:
        return f"http://{self.address.rsplit(':', 1)[0]}:{self.http_port}"

    def log_tail(self) -> str:
        return self.serve_log.read_text(errors="replace")[-4000:]

    def client(self):
        import boto3

        return boto3.client(
            "bedrock-runtime", endpoint_url=self.url, region_name=REGION,
            aws_access_key_id=TEST_KEY, aws_secret_access_key=TEST_SECRET,
            config=Config(read_timeout=120, retries={"max_attempts": 1, "mode": "standard"}),
        )  # fmt: skip

    def probe(self) -> dict:
        """The cluster as a driver on the head sees it (a process of its own: Ray's
        settings are per process)."""
        from outcrop.scale.ray_app import deployment_name

        done = subprocess.run(
            [sys.executable, "-c", PROBE, self.address, deployment_name(SMOL)],
            env=self.head_env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def stop_serve(self) -> int | None:
        if self.serve is None or self.serve.poll() is not None:
            return self.serve.returncode if self.serve else None
        self.seen |= _ours(self.ray_tmp)
        self.serve.send_signal(signal.SIGTERM)  # as systemd or docker stop it
        try:
            return self.serve.wait(60)
        except subprocess.TimeoutExpired:
            self.serve.kill()
            self.serve.wait(10)
            return None

    def stop_nodes(self) -> list[psutil.Process]:
        """SIGTERM, then SIGKILL, every process of the walk-through (seen while it ran,
        or found now); the ones still alive after that."""
        deadline = time.monotonic() + 30
        sig = signal.SIGTERM
        while True:
            self.seen |= _ours(self.ray_tmp)
            alive = _alive(self.seen.values())
            if not alive or time.monotonic() > deadline:
                return alive
            for p in alive:
                try:
                    p.send_signal(sig)
                except psutil.Error:
                    pass
            psutil.wait_procs(alive, timeout=5)
            sig = signal.SIGKILL  # Ray's agents outlive their raylet and ignore SIGTERM

    def close(self) -> list[psutil.Process]:
        self.stop_serve()
        left = self.stop_nodes()
        shutil.rmtree(self.ray_tmp, ignore_errors=True)
        return left


PROBE = """
import asyncio, json, sys
import ray
from ray import serve
from ray.util.state import list_actors

address, engine = sys.argv[1], sys.argv[2]
ray.init(address=address, namespace="outcrop-walkthrough-probe", log_to_driver=False)

async def engine_node():
    # Throughput-optimized Serve routes from the caller's event loop.
    handle = serve.get_deployment_handle(engine, app_name="outcrop")
    return await asyncio.wait_for(handle.node.remote(), 60)

nodes = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
actors = [
    {"class": a.class_name, "node": a.node_id}
    for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
]
print(json.dumps({"nodes": nodes, "engine": asyncio.run(engine_node()), "actors": actors}))
"""


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    w = Walkthrough(tmp_path_factory.mktemp("walkthrough"))
    try:
        started = time.monotonic()
        w.start()
        w.wait_serving()
        print(f"walk-through serving after {time.monotonic() - started:.1f}s")
        yield w
    finally:
        left = w.close()
        assert not left, [(p.pid, p.name()) for p in left]


def test_converse_and_converse_stream_through_the_walkthrough_cluster(walk):
    client = walk.client()
    messages = [{"role": "user", "content": [{"text": "Name the capital of France."}]}]
    config = {"temperature": 0, "maxTokens": 24}
    out = client.converse(modelId=SMOL, messages=messages, inferenceConfig=config)
    text = out["output"]["message"]["content"][0]["text"]
    events = list(
        client.converse_stream(modelId=SMOL, messages=messages, inferenceConfig=config)["stream"]
    )
    streamed = "".join(
        e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e
    )
    assert text and streamed.strip() == text.strip()
    assert "messageStop" in events[-2] and "metadata" in events[-1]


def test_the_engine_runs_on_the_engine_node_and_the_api_on_the_head(walk):
    seen = walk.probe()
    nodes = seen["nodes"]
    by_role = {
        "head": [n for n, r in nodes.items() if "node:__internal_head__" in r],
        "engine": [n for n, r in nodes.items() if r.get("outcrop_engine")],
        "training": [n for n, r in nodes.items() if r.get("outcrop_training")],
    }
    assert {k: len(v) for k, v in by_role.items()} == {"head": 1, "engine": 1, "training": 1}
    assert len(nodes) == 3, nodes
    assert seen["engine"]["node_id"] == by_role["engine"][0], seen["engine"]
    ingress = [a["node"] for a in seen["actors"] if a["class"].endswith(":OutcropIngress")]
    assert len(ingress) == 2 and set(ingress) == set(by_role["head"]), seen["actors"]


def test_zz_stopping_it_leaves_no_process(walk):
    """Runs last: ``outcrop serve`` stops on SIGTERM, taking the application down; then
    the nodes are stopped by PID and nothing of the walk-through is left."""
    assert walk.stop_serve() == 0, walk.log_tail()
    left = walk.stop_nodes()
    assert not left, [(p.pid, p.name()) for p in left]
    assert not _ours(walk.ray_tmp)
