"""The cost and the gain of Ray Serve, side by side in one run.

    python benchmarks/bench_ray.py [--models-dir DIR] [--clients 32] [--requests 64] [--rounds 2]
        [--max-tokens 32] [--parallel 8] [--json OUT]

1. **Plain**: ``outcrop serve --threads 1`` (one process).
2. **Ray, one replica**: a simulated cluster on 127.0.0.1 (``ray.cluster_utils.Cluster``:
   a head for the API replica and proxy, two worker nodes offering ``outcrop_engine``),
   SmolLM2's engine deployment with one replica at 1 thread. (a) = 2 / 1: the cost of
   the distribution layer.
3. **Ray, two replicas**: the same application, two engine replicas (one per worker node,
   1 thread each). (b) = 3 / 2: what a second machine adds.
4. **Two plain servers** sharing the clients (1 thread each): what a second engine adds
   on *this* machine without Ray — (b)'s ceiling here, since both simulated nodes share
   the machine's cores with the API, the proxy and the load generator.

Each phase: ``--clients`` concurrent ConverseStream clients, ``--requests`` in all,
temperature 0. Reported: output tokens/s, TTFT p50, errors; for Ray also the engine
replica's cold start (deploy until RUNNING) and the RSS of the cluster's processes per node.
On a machine with fewer cores than replicas x threads + the API, (b) measures the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from outcrop.scale.node_env import apply_node_env, colocated_env  # imports no Ray


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


SMOL = "huggingface.smollm2-135m-instruct-v1:0"
RAY_TMP = Path(tempfile.mkdtemp(prefix="obench-ray-"))
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ["RAY_TMPDIR"] = str(RAY_TMP)
os.environ["RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING"] = "0"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
apply_node_env()  # HAProxy, direct gRPC, niceness 0: as the README's `ray start` lines
# HAProxy's files in the temp dir, free stats/metrics ports, and API replicas replaced by a
# redeploy that stop at once: "deploy -> RUNNING" then times the engine replicas.
os.environ.update(colocated_env(RAY_TMP / "h", _free_port(), _free_port()))
(RAY_TMP / "ray").mkdir(exist_ok=True)

from outcrop.bench.client import BedrockClient, converse_body, run_load  # noqa: E402
from outcrop.bench.serverproc import ServerProcess  # noqa: E402


def data_dir(root: Path, models: Path) -> Path:
    d = root / "data"
    d.mkdir(parents=True)
    (d / "models").symlink_to(models / "models", target_is_directory=True)
    (d / "cache").symlink_to(models / "cache", target_is_directory=True)
    return d


def measure(targets: list[tuple[str, str, str]], args: argparse.Namespace) -> dict[str, Any]:
    """``--clients`` streaming clients, ``--requests`` in all, split evenly over
    ``targets`` (url, key, secret) and run at once; tokens/s over the whole wall time."""
    body = converse_body("Write a short poem about the sea.", args.max_tokens)
    n = len(targets)

    async def go() -> Any:
        clients = [BedrockClient(u, k, s, max_connections=args.clients + 8) for u, k, s in targets]
        try:
            for client in clients:  # warm-up: first request, templates
                await run_load(client, SMOL, body, 2, 2)
            started = time.perf_counter()
            loads = await asyncio.gather(
                *(run_load(c, SMOL, body, args.clients // n, args.requests // n) for c in clients)
            )
            return loads, time.perf_counter() - started
        finally:
            for client in clients:
                await client.aclose()

    loads, wall = asyncio.run(go())
    requests = [r for load in loads for r in load.requests]
    ok = [r for r in requests if r.error is None]
    tokens = sum(r.output_tokens for r in ok)
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    return {
        "tokens_per_s": tokens / wall,
        "wall_s": wall,
        "output_tokens": tokens,
        "errors": len(requests) - len(ok),
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
    }


def rss_by_node() -> dict[str, float]:
    """MiB resident per node: each raylet with its workers (replicas, proxy, controller);
    ``other``: the head's processes outside any raylet (GCS, dashboard agents)."""
    import psutil

    out: dict[str, float] = {}
    seen: set[int] = set()
    mine = [p for p in psutil.process_iter(["cmdline"])
            if str(RAY_TMP) in " ".join(p.info["cmdline"] or [])]  # fmt: skip
    for p in mine:
        if "raylet" not in " ".join(p.info["cmdline"] or [])[:300]:
            continue
        try:
            family = [p, *p.children(recursive=True)]
            out[f"raylet-{p.pid}"] = sum(q.memory_info().rss for q in family) / 2**20
            seen |= {q.pid for q in family}
        except psutil.NoSuchProcess:
            continue
    rest = [p for p in mine if p.pid not in seen]
    out["other"] = sum(p.memory_info().rss for p in rest if p.is_running()) / 2**20
    return out


@contextmanager
def ray_cluster(root: Path, models: Path, args: argparse.Namespace):  # noqa: ANN201
    """A head and two engine nodes on 127.0.0.1; yields ``deploy(replicas) -> (url, row)``."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from outcrop.scale.ray_app import RayPlan, build, deployment_name
    from outcrop.settings import Settings

    node = dict(node_ip_address="127.0.0.1", num_cpus=2, object_store_memory=80 * 2**20)
    cluster = Cluster(
        initialize_head=True,
        head_node_args=dict(resources={"outcrop_ingress": 4}, include_dashboard=False,
                            temp_dir=str(RAY_TMP / "ray"), **node),
    )  # fmt: skip
    for _ in range(2):
        cluster.add_node(resources={"outcrop_engine": 1}, **node)
    key, secret = "AKIABENCHRAY0000001", "bench-ray-secret-0000000000000000000000"
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
        settings = Settings(
            data_dir=data_dir(root / "ray", models), access_key_id=key, secret_access_key=secret,
            n_threads=1, max_batch=args.parallel, max_queue=64, n_ctx=1024,  # as ServerProcess
        )  # fmt: skip

        def deploy(replicas: int) -> dict[str, Any]:
            plan = RayPlan(
                hot_models=[SMOL], ingress_replicas=1, ingress_cpus=0.25,
                ingress_resources={"outcrop_ingress": 1}, engine_min_replicas=replicas,
                engine_max_replicas=replicas, engine_resources={"outcrop_engine": 1},
                engines_per_node=1, pool_replicas=1,
            )  # fmt: skip
            started = time.perf_counter()
            serve.run(build(settings, plan), name="outcrop", route_prefix="/")
            name = deployment_name(SMOL)
            while True:
                dep = serve.status().applications["outcrop"].deployments[name]
                if dep.replica_states.get("RUNNING", 0) == replicas and dep.status == "HEALTHY":
                    break
                time.sleep(0.2)
            running = time.perf_counter() - started
            # Measure the steady state: the whole application up, replaced replicas gone.
            while serve.status().applications["outcrop"].status != "RUNNING":
                time.sleep(0.2)
            return {"url": f"http://127.0.0.1:{port}", "key": key, "secret": secret,
                    "deploy_until_running_s": running}  # fmt: skip

        yield deploy
    finally:
        if ray.is_initialized():
            serve.shutdown()
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(RAY_TMP, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = os.environ.get("OUTCROP_TEST_DATA_DIR", str(Path.home() / ".cache/outcrop-test"))
    parser.add_argument("--models-dir", type=Path, default=Path(default))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--parallel", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="outcrop-bench-"))
    rows: dict[str, list[dict[str, Any]]] = {"plain": [], "plain_2": [], "ray_1": [], "ray_2": []}

    def plain(name: str) -> ServerProcess:
        return ServerProcess(
            data_dir(root / name, args.models_dir), parallel=args.parallel, threads=1,
            max_queue=64, n_ctx=1024, log_path=root / f"{name}.log",
        )  # fmt: skip

    # Every set-up stays up for the whole run and they take turns, round after round, so
    # a neighbour's load on a shared machine falls on each of them alike. ``plain_2``, two
    # plain servers sharing the clients, is what a second engine gives on this machine
    # without Ray: the ceiling (b) is measured against.
    with (
        plain("plain") as srv,
        plain("plain2") as srv2,
        ray_cluster(root, args.models_dir, args) as deploy,
    ):
        for _ in range(args.rounds):
            row = measure([(srv.url, srv.key, srv.secret)], args)
            rows["plain"].append(row)
            print(f"plain outcrop serve: {row}", file=sys.stderr)
            row = measure([(x.url, x.key, x.secret) for x in (srv, srv2)], args)
            rows["plain_2"].append(row)
            print(f"two plain servers: {row}", file=sys.stderr)
            for replicas in (1, 2):
                target = deploy(replicas)
                row = measure([(target["url"], target["key"], target["secret"])], args)
                row["deploy_until_running_s"] = target["deploy_until_running_s"]
                row["rss_mib_by_node"] = rss_by_node()
                rows[f"ray_{replicas}"].append(row)
                print(f"ray, {replicas} replica(s): {row}", file=sys.stderr)

    def rate(name: str) -> float:
        return statistics.mean(r["tokens_per_s"] for r in rows[name])

    report = {
        "clients": args.clients, "requests": args.requests, "max_tokens": args.max_tokens,
        "parallel": args.parallel, "threads_per_engine": 1, "rounds": args.rounds, **rows,
        "ratio_a_ray1_vs_plain": rate("ray_1") / rate("plain"),
        "ratio_b_ray2_vs_ray1": rate("ray_2") / rate("ray_1"),
        "machine_ceiling_plain2_vs_plain": rate("plain_2") / rate("plain"),
        "per_round_a": [r["tokens_per_s"] / p["tokens_per_s"]
                        for r, p in zip(rows["ray_1"], rows["plain"], strict=True)],
        "per_round_b": [r2["tokens_per_s"] / r1["tokens_per_s"]
                        for r2, r1 in zip(rows["ray_2"], rows["ray_1"], strict=True)],
        "cpus": os.cpu_count(),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    print(
        f"(a) Ray, 1 replica / plain: {report['ratio_a_ray1_vs_plain']:.2f}x   "
        f"(b) Ray, 2 replicas on 2 nodes / 1 replica: {report['ratio_b_ray2_vs_ray1']:.2f}x   "
        f"this machine, two plain servers / one: "
        f"{report['machine_ceiling_plain2_vs_plain']:.2f}x"
    )
    shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
