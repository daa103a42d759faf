"""Assemble the server from settings, and run it with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from outcrop.api.admin import AdminApi
from outcrop.api.app import OutcropApp
from outcrop.api.auth import Authenticator
from outcrop.api.batch import BatchApi
from outcrop.api.control import ControlApi
from outcrop.api.customization import CustomizationApi
from outcrop.api.guardrails import GuardrailsApi
from outcrop.api.imports import ImportApi
from outcrop.api.openai import OpenAiApi
from outcrop.api.routing import Router
from outcrop.api.runtime import RuntimeApi
from outcrop.credentials import export_lines, load_or_create_credentials
from outcrop.db import Database
from outcrop.engines.base import Engine
from outcrop.jobs.launch import Launcher
from outcrop.jobs.runner import JobRunner
from outcrop.jobs.store import JobStore
from outcrop.metering import Metrics
from outcrop.models.catalog import Catalog, ModelCard
from outcrop.models.manager import EngineFactory, ModelManager
from outcrop.models.resolve import ModelResolver
from outcrop.models.store import ModelStore, model_store
from outcrop.service.batch import BatchService
from outcrop.service.embeddings import EmbeddingService
from outcrop.service.invoke import InvokeService
from outcrop.service.runtime import RuntimeService
from outcrop.settings import Settings

log = logging.getLogger("outcrop")


@dataclass
class Server:
    app: OutcropApp
    settings: Settings
    catalog: Catalog
    store: ModelStore
    manager: ModelManager
    access_key: tuple[str, str] | None
    created_credentials: bool
    console: object | None = None  # outcrop.console.ConsoleApp


def engine_factory(settings: Settings):
    from outcrop.engines.prompt_cache import PromptCache, default_capacity_mb

    mb = settings.prompt_cache_mb
    prompt_cache = PromptCache((default_capacity_mb() if mb is None else mb) * 2**20)
    if settings.bench_instant_engine:
        from outcrop.bench.instant_engine import InstantEngine

        return lambda card, path: InstantEngine(card.model_id)

    def build(card: ModelCard, path: Path) -> Engine:
        if card.engine == "sentence-transformers":
            from outcrop.engines.embeddings import EmbeddingConfig, SentenceTransformerEngine

            return SentenceTransformerEngine(
                card.model_id,
                path,
                EmbeddingConfig(
                    max_batch=settings.max_batch,
                    max_queue=settings.max_queue,
                    n_threads=settings.n_threads or 1,  # see EmbeddingConfig.n_threads
                ),
            )
        from outcrop.engines.llamacpp.engine import EngineConfig, LlamaCppEngine

        config = EngineConfig(
            slots=settings.max_batch,
            n_ctx_per_seq=min(settings.n_ctx, card.context_length),
            max_queue=settings.max_queue,
            prefill_chunk=settings.prefill_chunk,
            background_share=settings.background_share,
            n_threads=settings.n_threads,
            gpu_layers=settings.gpu_layers,
            llama_log=settings.llama_log,
            prompt_cache=prompt_cache,
        )
        return LlamaCppEngine(card.model_id, path, config)

    return build


def _customization(settings, catalog, resolver, store, manager, db, runner):
    from outcrop.service.customization import CustomizationService

    service = CustomizationService(
        catalog, resolver, store, settings.data_dir, settings.region, settings.account_id,
        db, runner,
        s3_endpoint_url=settings.s3_endpoint_url, file_roots=settings.file_root_paths,
        training_threads=settings.training_threads,
        unload=manager.unload, bucket=store.bucket,
    )  # fmt: skip
    service.start()  # re-registers custom models
    return service


def _imports(settings, catalog, resolver, manager, db, runner, bucket=None):
    from outcrop.service.imports import ImportService

    service = ImportService(
        catalog, resolver, settings.data_dir, settings.region, settings.account_id, db, runner,
        s3_endpoint_url=settings.s3_endpoint_url, weight_format=settings.weight_format,
        threads=settings.training_threads, manager=manager,
        delete_wait_s=settings.import_delete_wait_s, file_roots=settings.file_root_paths,
        bucket=bucket,
    )  # fmt: skip
    service.start()  # serves imported models (the runner resumes interrupted imports)
    return service


def _knowledge(settings, embeddings, runtime, router, db, runner):
    """Knowledge bases: bedrock-agent's control plane and bedrock-agent-runtime."""
    from outcrop.api.agent import AgentApi
    from outcrop.api.agent_runtime import AgentRuntimeApi
    from outcrop.service.kb_documents import KnowledgeDocuments
    from outcrop.service.kb_jobs import IngestionJobs
    from outcrop.service.kb_runtime import KnowledgeRuntime
    from outcrop.service.kb_stores import KnowledgeStores
    from outcrop.service.knowledge import KnowledgeService

    stores = KnowledgeStores(settings.data_dir / "knowledge", embeddings)
    service = KnowledgeService(
        settings.data_dir, stores, db, runner, settings.region, settings.account_id,
        s3_endpoint_url=settings.s3_endpoint_url,
    )  # fmt: skip
    jobs = IngestionJobs(service)
    runner.register(jobs.kind())
    AgentApi(service, jobs, KnowledgeDocuments(service)).register(router)
    AgentRuntimeApi(KnowledgeRuntime(service, runtime)).register(router)
    return service


def _guardrails(settings, catalog, store, db):
    from outcrop.guardrails.records import GuardrailStore
    from outcrop.service.guardrails import EMBEDDING_MODEL, GuardrailService, StaticEmbedding

    embed = StaticEmbedding(
        store, catalog.get(EMBEDDING_MODEL), settings.data_dir / "cache" / "guardrails"
    )
    return GuardrailService(GuardrailStore(db), settings.region, settings.account_id, embed)


def _console(settings, pair, authenticator, metrics, catalog, store, manager, customization):
    """The web console at /console; its session cookie also opens the APIs it calls."""
    from outcrop.console import ConsoleApp, ConsoleSessions, SessionAuthenticator
    from outcrop.console.models import ConsoleModels
    from outcrop.console.usage import UsageHistory

    keys = [settings.api_key or "", pair[1] if pair else ""]
    sessions = ConsoleSessions(keys, required=settings.auth != "none")
    console = ConsoleApp(
        sessions, ConsoleModels(catalog, store, manager), UsageHistory(metrics), customization
    )
    return console, SessionAuthenticator(authenticator, sessions)


def build_server(
    settings: Settings, factory: EngineFactory | None = None, job_launcher: Launcher | None = None
) -> Server:
    """``factory``: how loaded models become engines (default: local ones; Ray Serve
    replicas pass remote ones, scale/remote.py). ``job_launcher``: where ``process`` jobs
    run (default: child processes; Ray Serve replicas pass detached actors, scale/jobs.py)."""
    # Owner-only from the start: the data dir holds credentials, records and prompts.
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    catalog = Catalog()
    resolver = ModelResolver(catalog, settings.aliases, settings.region, settings.account_id)
    store = model_store(settings)
    keep_alive = settings.keep_alive
    manager = ModelManager(
        store,
        factory or engine_factory(settings),
        max_loaded=settings.max_loaded_models,
        memory_budget_bytes=settings.memory_budget_mb * 2**20
        if settings.memory_budget_mb
        else None,
        keep_alive=None if keep_alive is None or keep_alive < 0 else keep_alive,
    )

    keys: dict[str, str] = {}
    created = False
    pair: tuple[str, str] | None = None
    if settings.access_key_id and settings.secret_access_key:
        pair = (settings.access_key_id, settings.secret_access_key)
    elif settings.auth == "sigv4":
        key, secret, created = load_or_create_credentials(settings.data_dir)
        pair = (key, secret)
    if pair:
        keys[pair[0]] = pair[1]
    api_keys = {settings.api_key} if settings.api_key else set()
    authenticator = Authenticator(keys, api_keys, mode=settings.auth, region=settings.region)

    router = Router()
    metrics = Metrics(manager)
    runtime = RuntimeService(resolver, manager, metrics)
    embeddings = EmbeddingService(resolver, manager)
    db = Database(settings.data_dir, url=settings.database_url)
    guardrails = _guardrails(settings, catalog, store, db)
    invoker = InvokeService(runtime, embeddings)
    RuntimeApi(runtime, embeddings, invoker, guardrails=guardrails).register(router)
    OpenAiApi(runtime, resolver, catalog, embeddings).register(router)
    ControlApi(catalog, settings.region).register(router)
    AdminApi(manager).register(router)
    runner = JobRunner(JobStore(db), launcher=job_launcher)
    # Imported models first: a custom model may be trained on one, and is served again
    # at start only if its base is known.
    imports = _imports(settings, catalog, resolver, manager, db, runner, store.bucket)
    ImportApi(imports).register(router)
    customization = _customization(settings, catalog, resolver, store, manager, db, runner)
    CustomizationApi(customization).register(router)
    GuardrailsApi(guardrails).register(router)
    # Twice the slots in flight: the engine's background queue always holds the next
    # record, so a finished record's slot is refilled at the next step, not after its
    # output is written.
    batch = BatchService(
        resolver, invoker, settings.data_dir, settings.region, settings.account_id, db, runner,
        s3_endpoint_url=settings.s3_endpoint_url, concurrency=2 * settings.max_batch,
        file_roots=settings.file_root_paths,
    )  # fmt: skip
    BatchApi(batch).register(router)
    knowledge = _knowledge(settings, embeddings, runtime, router, db, runner)
    console, authenticator = _console(
        settings, pair, authenticator, metrics, catalog, store, manager, customization
    )
    app = OutcropApp(router, authenticator, metrics)
    app.mounts.append(("/console", console))
    app.on_startup.append(console.usage.start)
    app.on_shutdown.append(console.usage.stop)
    # Every job kind is registered by now; jobs start once the event loop runs (inline jobs
    # call the engines on it), resuming what a previous server left.
    app.on_startup.append(lambda: runner.start(asyncio.get_running_loop()))
    app.on_startup.append(knowledge.start)
    app.on_shutdown.append(knowledge.close)  # ends running syncs first, resumable
    # Off the loop: inline jobs finish their step on it while the runner waits for them.
    app.on_shutdown.append(lambda: asyncio.to_thread(runner.close))
    app.on_shutdown.append(imports.close)
    app.on_shutdown.append(manager.close)
    return Server(app, settings, catalog, store, manager, pair, created, console)


def serve(settings: Settings, preload: list[str] | None = None) -> None:
    import uvicorn

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = build_server(settings)
    endpoint = f"http://{settings.host}:{settings.port}"
    if server.access_key and settings.auth == "sigv4":
        # The secret never goes to the log (journald, CI logs keep it): only how to get it.
        key = server.access_key[0]
        if settings.access_key_id:
            note = "from OUTCROP_ACCESS_KEY_ID / OUTCROP_SECRET_ACCESS_KEY"
            how = 'export AWS_SECRET_ACCESS_KEY="$OUTCROP_SECRET_ACCESS_KEY"'
        else:
            verb = "created" if server.created_credentials else "loaded"
            note = f"{verb} in {settings.data_dir}"
            how = (
                f'eval "$(outcrop credentials --data-dir {shlex.quote(str(settings.data_dir))}'
                f' --endpoint {endpoint})"'
            )
        print(f"outcrop: credentials {note} (access key {key}); point clients here with:",
              file=sys.stderr)  # fmt: skip
        print(export_lines(endpoint, key, "", settings.region).replace(
            "export AWS_SECRET_ACCESS_KEY=''\n", how + "\n"), file=sys.stderr)  # fmt: skip
    elif settings.auth == "none":
        print(
            "outcrop: --auth none: requests are NOT authenticated (loopback only).", file=sys.stderr
        )
    if server.console is not None:
        if settings.auth == "none":
            print(f"outcrop: web console at {endpoint}/console", file=sys.stderr)
        else:
            token = server.console.sessions.one_time_link()
            print(
                f"outcrop: web console at {endpoint}/console — sign in with the API key or "
                f"secret key, or open once within 15 minutes: "
                f"{endpoint}/console/login?token={token}",
                file=sys.stderr,
            )
    for model_id in preload or []:
        card = ModelResolver(server.catalog, settings.aliases).resolve(model_id).card
        server.store.ensure(card, progress=True)
    uvicorn.run(
        server.app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
