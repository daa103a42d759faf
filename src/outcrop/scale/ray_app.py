"""outcrop as a Ray Serve application: the same Starlette app as ingress (N replicas),
one engine deployment per hot model, a multiplexed pool for every other text model, and
an embedding deployment.

``serve run`` reaches it through the builder ``outcrop.scale.ray_app:build_app`` (args:
RayPlan's fields, plus ``settings`` overrides; the rest of Settings comes from OUTCROP_*
variables on every node); ``outcrop serve --ray`` builds the same application.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields
from typing import Any

from ray import serve
from ray.serve import Application

from outcrop.models.catalog import Catalog, ModelCard
from outcrop.models.resolve import ModelResolver
from outcrop.scale.jobs import DEFAULT_JOB_RESOURCES, RayJobLauncher
from outcrop.scale.node_env import check_node_env
from outcrop.scale.priority import normal_priority
from outcrop.scale.remote import remote_factory
from outcrop.scale.replicas import EmbeddingReplica, PooledEngineReplica, TextEngineReplica
from outcrop.settings import Settings

log = logging.getLogger("outcrop.scale")

HEAD_NODE = {"node:__internal_head__": 0.001}
"""Resources that place an actor on the head node (Ray's own state actors use this)."""


@dataclass
class RayPlan:
    """How outcrop spreads over the cluster (everything else is Settings)."""

    hot_models: list[str] = field(default_factory=list)
    """Models with a deployment of their own (the rest share the pool)."""
    ingress_replicas: int = 2
    ingress_cpus: float = 0.25
    """Logical CPUs an API replica reserves (it mostly waits on engines)."""
    ingress_resources: dict[str, float] = field(default_factory=lambda: dict(HEAD_NODE))
    """Custom resources an API replica needs. By default the head node, where clients and
    the Serve controller are: an API replica elsewhere would take part of the cores an
    engine node offers, and an engine replica that reserves all of them would never fit."""
    engine_min_replicas: int = 1
    engine_max_replicas: int = 2
    engine_resources: dict[str, float] = field(default_factory=dict)
    """Custom resources each engine replica needs (``{"outcrop_engine": 1}``: only nodes
    started with ``ray start --resources='{"outcrop_engine": N}'`` run engines)."""
    engines_per_node: int | None = None
    """At most this many replicas of one engine per node (1: spread over machines)."""
    max_queued_requests: int | None = None
    """Requests an ingress replica holds for an engine deployment before answering 429
    (default: Settings.max_queue)."""
    pool_replicas: int = 1
    """At most this many pool replicas; like the embeddings, the pool scales from zero
    (its first request waits for a replica), so it holds no cores while unused."""
    pool_resources: dict[str, float] = field(default_factory=dict)
    embedding_replicas: int = 1
    job_resources: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_JOB_RESOURCES))
    """Custom resources a customization or import job's actor needs: only nodes started
    with ``ray start --resources='{"outcrop_training": 1}'`` train (one job each)."""
    job_work_root: str | None = None
    """Where a job's actor keeps its work dir on its node (default: the same path as the
    API replica's, which suits one machine or a shared data dir)."""

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> RayPlan:
        known = {f.name for f in fields(cls)}
        unknown = set(args) - known - {"settings"}
        if unknown:
            raise ValueError(f"unknown outcrop Ray options: {', '.join(sorted(unknown))}")
        return cls(**{k: v for k, v in args.items() if k in known})


def deployment_name(model_id: str) -> str:
    """A hot model's deployment name (Serve names allow no ``:`` or ``/``)."""
    return "engine-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", model_id)


def engine_options(settings: Settings, plan: RayPlan, name: str) -> dict[str, Any]:
    """A hot model's deployment options: cores, back-pressure and autoscaling tied to the
    engine's slots."""
    slots, queue = settings.max_batch, settings.max_queue
    actor: dict[str, Any] = {
        # As many cores as llama.cpp threads, so two engines never share a core.
        "num_cpus": settings.n_threads or 1,
        "resources": dict(plan.engine_resources),
    }
    if settings.gpu_layers:
        actor["num_gpus"] = 1
    options: dict[str, Any] = {
        "name": name,
        "ray_actor_options": actor,
        # Never below the slots (batching would starve); the engine's own queue beyond.
        "max_ongoing_requests": slots + queue,
        "max_queued_requests": plan.max_queued_requests
        if plan.max_queued_requests is not None
        else queue,
        "autoscaling_config": {
            "min_replicas": plan.engine_min_replicas,
            "max_replicas": max(plan.engine_min_replicas, plan.engine_max_replicas),
            "initial_replicas": plan.engine_min_replicas,
            "target_ongoing_requests": max(1.0, 0.75 * slots),
            "upscale_delay_s": 10,
            "downscale_delay_s": 300,
        },
        "health_check_period_s": 2,
        "health_check_timeout_s": 10,
    }
    if plan.engines_per_node:
        options["max_replicas_per_node"] = plan.engines_per_node
    return options


def _from_zero(max_replicas: int) -> dict[str, Any]:
    return {
        "min_replicas": 0,
        "initial_replicas": 0,
        "max_replicas": max(1, max_replicas),
        "target_ongoing_requests": 4,
        "downscale_delay_s": 600,
    }


@serve.deployment(name="OutcropIngress")
@serve.ingress()
class OutcropIngress:
    """The unchanged OutcropApp; its ModelManager builds remote engines."""

    def __init__(
        self,
        settings: Settings,
        hot: dict[str, Any],
        pool: Any,
        embeddings: Any,
        jobs: dict[str, Any] | None = None,
    ) -> None:
        normal_priority()
        check_node_env()
        self.settings = settings
        self.hot = hot
        self.pool = pool
        self.embeddings = embeddings
        self.jobs = jobs or {}

    def _route(self, card: ModelCard) -> tuple[Any, bool]:
        handle = self.hot.get(card.model_id)
        return (handle, False) if handle is not None else (self.pool, True)

    def __serve_build_asgi_app__(self):  # noqa: ANN204
        from outcrop.server import build_server

        factory = remote_factory(self.settings, self._route, self.embeddings)
        # Training and imports run as detached actors on training nodes, not in here.
        launcher = RayJobLauncher(self.jobs.get("resources"), self.jobs.get("work_root"))
        return build_server(self.settings, factory=factory, job_launcher=launcher).app


def with_shared_credentials(settings: Settings) -> Settings:
    """Every API replica must accept the same SigV4 key: load (or create) it once, where
    the application is built, instead of once per node's data dir."""
    if settings.auth != "sigv4" or (settings.access_key_id and settings.secret_access_key):
        return settings
    from outcrop.credentials import load_or_create_credentials

    key, secret, _ = load_or_create_credentials(settings.data_dir)
    return settings.model_copy(update={"access_key_id": key, "secret_access_key": secret})


def build(settings: Settings, plan: RayPlan) -> Application:
    settings = with_shared_credentials(settings)
    resolver = ModelResolver(Catalog(), settings.aliases, settings.region, settings.account_id)
    hot: dict[str, Application] = {}
    for model_id in plan.hot_models:
        card = resolver.resolve(model_id).card
        if card.engine != "llamacpp" or card.model_id in hot:
            continue
        options = engine_options(settings, plan, deployment_name(card.model_id))
        hot[card.model_id] = (
            serve.deployment(TextEngineReplica).options(**options).bind(settings, card)
        )
    threads = settings.n_threads or 1
    pool = (
        serve.deployment(PooledEngineReplica)
        .options(
            name="EnginePool",
            autoscaling_config=_from_zero(plan.pool_replicas),
            max_ongoing_requests=settings.max_batch + settings.max_queue,
            max_queued_requests=settings.max_queue,
            ray_actor_options={"num_cpus": threads, "resources": dict(plan.pool_resources)},
        )
        .bind(settings)
    )
    embeddings = (
        serve.deployment(EmbeddingReplica)
        .options(
            name="Embeddings",
            autoscaling_config=_from_zero(plan.embedding_replicas),
            max_ongoing_requests=settings.max_batch + settings.max_queue,
            max_queued_requests=settings.max_queue,
            ray_actor_options={"num_cpus": 0.25, "resources": dict(plan.ingress_resources)},
        )
        .bind(settings)
    )
    return OutcropIngress.options(
        num_replicas=plan.ingress_replicas,
        ray_actor_options={"num_cpus": plan.ingress_cpus, "resources": plan.ingress_resources},
        max_ongoing_requests=1000,  # the ingress only waits on engines; they bound the work
    ).bind(
        settings, hot, pool, embeddings,
        {"resources": dict(plan.job_resources), "work_root": plan.job_work_root},
    )  # fmt: skip


def build_app(args: dict[str, Any]) -> Application:
    """Serve's application builder (``import_path: outcrop.scale.ray_app:build_app``)."""
    settings = Settings(**dict(args.get("settings") or {}))
    return build(settings, RayPlan.from_args(args))
