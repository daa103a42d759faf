"""Pure parts of the Ray Serve layer: deployment options, names, error translation."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("ray.serve", reason="Ray Serve is not installed (pip install 'outcrop[ray]')")

from outcrop.errors import InternalServerError, ThrottlingError  # noqa: E402
from outcrop.scale.ray_app import RayPlan, deployment_name, engine_options  # noqa: E402
from outcrop.scale.remote import translate  # noqa: E402
from outcrop.settings import Settings  # noqa: E402


def test_engine_replica_reserves_its_threads_and_bounds_its_queue(tmp_path):
    settings = Settings(data_dir=tmp_path, n_threads=3, max_batch=8, max_queue=16)
    plan = RayPlan(engine_min_replicas=1, engine_max_replicas=4, engines_per_node=1,
                   engine_resources={"outcrop_engine": 1})  # fmt: skip
    o = engine_options(settings, plan, "engine-x")
    assert o["ray_actor_options"] == {"num_cpus": 3, "resources": {"outcrop_engine": 1}}
    assert o["max_ongoing_requests"] == 24 and o["max_queued_requests"] == 16
    assert o["autoscaling_config"]["target_ongoing_requests"] == 6
    assert (o["autoscaling_config"]["min_replicas"], o["autoscaling_config"]["max_replicas"]) == (
        1,
        4,
    )
    assert o["max_replicas_per_node"] == 1


def test_a_gpu_card_asks_ray_for_a_gpu(tmp_path):
    o = engine_options(Settings(data_dir=tmp_path, gpu_layers=-1), RayPlan(), "engine-x")
    assert o["ray_actor_options"]["num_gpus"] == 1
    assert (
        "num_gpus"
        not in engine_options(Settings(data_dir=tmp_path), RayPlan(), "e")["ray_actor_options"]
    )


def test_deployment_names_are_serve_safe():
    assert deployment_name("huggingface.smollm2-135m-instruct-v1:0") == (
        "engine-huggingface.smollm2-135m-instruct-v1-0"
    )
    assert "/" not in deployment_name("arn:aws:bedrock:us-east-1:0:custom-model/a/b")


def test_unknown_plan_options_are_refused():
    with pytest.raises(ValueError, match="hot_model"):
        RayPlan.from_args({"hot_model": ["x"]})
    assert RayPlan.from_args({"hot_models": ["x"], "settings": {}}).hot_models == ["x"]


def test_serve_back_pressure_is_bedrock_throttling_and_a_lost_replica_a_500():
    from ray.exceptions import ActorDiedError
    from ray.serve.exceptions import BackPressureError

    throttled = translate(BackPressureError(num_queued_requests=3, max_queued_requests=2))
    assert isinstance(throttled, ThrottlingError) and throttled.status == 429
    lost = translate(ActorDiedError())
    assert isinstance(lost, InternalServerError) and lost.status == 500
    mine = ThrottlingError("queue full")
    assert translate(mine) is mine


def _run(coro):  # noqa: ANN001, ANN202
    import asyncio

    return asyncio.run(coro)


def test_replica_events_travel_in_batches_but_the_first_alone():
    import asyncio

    from outcrop.engines.base import Finished, TextChunk
    from outcrop.scale.replicas import coalesce

    async def engine():  # noqa: ANN202
        for i in range(6):
            yield TextChunk(str(i), 1)
            await asyncio.sleep(0.001)
        yield Finished("eos", 3, 6)

    async def go():  # noqa: ANN202
        return [batch async for batch in coalesce(engine())]

    batches = _run(go())
    assert len(batches[0]) == 1 and len(batches) < 7
    flat = [e for b in batches for e in b]
    assert [e.text for e in flat[:-1]] == list("012345") and isinstance(flat[-1], Finished)


def test_leaving_a_batched_stream_closes_the_engine_generation_and_errors_pass_through():
    import asyncio

    from outcrop.engines.base import TextChunk
    from outcrop.scale.replicas import coalesce

    closed = asyncio.Event

    async def go():  # noqa: ANN202
        done = closed()

        async def engine():  # noqa: ANN202
            try:
                while True:
                    yield TextChunk("x", 1)
                    await asyncio.sleep(0.005)
            finally:
                done.set()

        stream = coalesce(engine())
        await anext(stream)
        await stream.aclose()
        await asyncio.wait_for(done.wait(), 1)

        async def full():  # noqa: ANN202
            raise ThrottlingError("queue full")
            yield  # pragma: no cover

        with pytest.raises(ThrottlingError):
            async for _ in coalesce(full()):
                pass

    _run(go())


def test_every_api_replica_gets_the_same_sigv4_key(tmp_path):
    from outcrop.scale.ray_app import with_shared_credentials

    first = with_shared_credentials(Settings(data_dir=tmp_path))
    again = with_shared_credentials(Settings(data_dir=tmp_path))
    assert first.access_key_id and first.secret_access_key
    assert (again.access_key_id, again.secret_access_key) == (
        first.access_key_id,
        first.secret_access_key,
    )
    given = Settings(data_dir=tmp_path / "x", access_key_id="AKIAX", secret_access_key="s")
    assert with_shared_credentials(given) is given
    assert (
        with_shared_credentials(Settings(data_dir=tmp_path / "y", auth="none")).access_key_id
        is None
    )


def test_a_unary_call_whose_replica_died_mid_answer_runs_again_whole():
    import time

    from outcrop.engines.base import Finished, TextChunk
    from outcrop.models.catalog import Catalog
    from outcrop.scale.remote import ReplicaLostError
    from outcrop.service.runtime import Prepared, RuntimeService

    async def healthy():  # noqa: ANN202
        yield TextChunk("Paris", 1)
        yield TextChunk(" is the capital.", 4)
        yield Finished("eos", 10, 5)

    async def dies():  # noqa: ANN202
        yield TextChunk("Par", 1)
        raise ReplicaLostError("replica stopped", restart=healthy)

    card = Catalog().all()[0]
    service = RuntimeService(None, None)  # type: ignore[arg-type]
    prepared = Prepared(card, None, dies(), 10, [], time.perf_counter())  # type: ignore[arg-type]
    result = _run(service.complete(prepared))
    assert result.text == "Paris is the capital." and result.usage.output_tokens == 5

    async def always_dies():  # noqa: ANN202
        yield TextChunk("Par", 1)
        raise ReplicaLostError("replica stopped", restart=always_dies)

    prepared = Prepared(card, None, always_dies(), 10, [], time.perf_counter())  # type: ignore[arg-type]
    with pytest.raises(ReplicaLostError):
        _run(service.complete(prepared))


def test_a_replica_takes_back_the_priority_ray_lowered_for_every_thread():
    """Ray starts workers at niceness 15; a replica brings all its threads back to 0 (or,
    without CAP_SYS_NICE, says how to configure the cluster)."""
    import os
    import subprocess
    import sys

    code = """
import os, threading, time
os.nice(10)  # what Ray's raylet does to a worker
ready = threading.Event()
def worker():
    ready.set(); time.sleep(2)
t = threading.Thread(target=worker); t.start(); ready.wait()
from outcrop.scale.priority import normal_priority
ok = normal_priority()
tids = os.listdir("/proc/self/task")
print(ok, sorted({os.getpriority(os.PRIO_PROCESS, int(tid)) for tid in tids}))
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    if os.geteuid() == 0:
        assert out.stdout.strip() == "True [0]"
    else:
        assert out.stdout.strip() == "False [10]"
        assert "RAY_worker_niceness=0" in out.stderr


def test_node_env_keeps_what_the_user_set_and_names_what_is_missing(monkeypatch, caplog):
    from outcrop.scale.node_env import NODE_ENV, apply_node_env, check_node_env

    for key in NODE_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("RAY_worker_niceness", "5")
    with caplog.at_level("WARNING", logger="outcrop.scale"):
        assert sorted(check_node_env()) == sorted(NODE_ENV)
    assert "export RAY_SERVE_ENABLE_HA_PROXY=1" in caplog.text
    apply_node_env()
    assert os.environ["RAY_worker_niceness"] == "5"  # the user's, kept
    assert os.environ["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    caplog.clear()
    assert check_node_env() == ["RAY_worker_niceness"]


def test_api_replicas_stay_on_the_head_node_unless_told_otherwise():
    """The README's walk-through puts the API replicas on the head: one elsewhere would take
    part of an engine node's cores, and an engine that reserves them all would never fit."""
    import argparse

    from outcrop.cli_ray import add_serve_arguments, plan_from_args

    assert RayPlan().ingress_resources == {"node:__internal_head__": 0.001}
    p = argparse.ArgumentParser()
    add_serve_arguments(p)
    assert plan_from_args(p.parse_args([]), []).ingress_resources == RayPlan().ingress_resources
    spread = plan_from_args(p.parse_args(["--ingress-resources", "{}"]), [])
    assert spread.ingress_resources == {}
