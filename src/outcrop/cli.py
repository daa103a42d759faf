"""``outcrop`` command line: serve, models list/pull/rm/show, jobs, kb, credentials, bench."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from outcrop.cli_support import EXIT_USAGE, CliError, print_error, settings_from_args


def _resolver(settings=None, catalog=None):
    from outcrop.models.catalog import Catalog
    from outcrop.models.resolve import ModelResolver

    catalog = catalog or Catalog()
    if settings is None:
        return ModelResolver(catalog, [])
    try:
        return ModelResolver(catalog, settings.aliases, settings.region, settings.account_id)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None


def _resolve_card(resolver, model_id: str):
    from outcrop.errors import OutcropError

    try:
        return resolver.resolve(model_id).card
    except OutcropError:
        known = ", ".join(sorted(c.model_id for c in resolver.catalog.all()))
        raise CliError(f"unknown model {model_id!r}; known models: {known}", EXIT_USAGE) from None


def _human(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _format_arg(text: str) -> str:
    from outcrop.models.formats import WeightFormatError, check_format

    try:
        return check_format(text)
    except WeightFormatError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _weights_rows(weights: dict[str, Any] | None) -> list[tuple[str, str]]:
    """``models show`` lines for a record's ``weights`` entry."""
    if not weights:
        return [("weights", "no format decision recorded (original file served)")]
    orig = weights.get("original") or {}
    conv = weights.get("converted") or {}
    ev = weights.get("eval") or {}
    rows = [
        ("weights.policy", f"{weights.get('policy')} (CPU class {weights.get('cpu_class')})"),
        ("weights.served", f"{weights.get('file')} ({weights.get('selected')})"),
        ("weights.reason", str(weights.get("reason", ""))),
        ("original.format", str(orig.get("format", "-")).upper()),
        ("original.size", _human(orig.get("size_bytes"))),
        ("original.sha256", str(orig.get("sha256", "-"))),
    ]
    if conv:
        rows += [
            ("converted.format", str(conv.get("format", "-")).upper()),
            (
                "converted.file",
                f"{conv.get('file')} ({'kept' if conv.get('accepted') else 'not kept'})",
            ),
            ("converted.size", _human(conv.get("size_bytes"))),
            ("converted.sha256", str(conv.get("sha256", "-"))),
            ("converted.made_by", str(conv.get("made_by", "-"))),
        ]
        if "perplexity" in conv:
            rows += [
                (
                    "perplexity",
                    f"original {orig.get('perplexity'):.3f} vs converted "
                    f"{conv['perplexity']:.3f} ({ev.get('tokens', '?')} held-out tokens)",
                ),
                ("perplexity.delta", f"{conv['delta_pct']:+.2f}% (bound {conv['bound_pct']:g}%)"),
                (
                    "greedy.agreement",
                    f"{conv['greedy_agreement']:.0%} of {ev.get('greedy_prompts', '?')} prompts "
                    f"identical ({conv.get('greedy_prefix_share', 0):.0%} of tokens before "
                    "the first difference)",
                ),
            ]
        if "decode_tok_s" in conv:
            rows.append(
                (
                    "probe.decode",
                    f"original {orig.get('decode_tok_s')} tok/s vs converted "
                    f"{conv['decode_tok_s']} tok/s (1 stream, {ev.get('threads', '?')} thread(s))",
                )
            )
        if "decode_tok_s_32" in conv:
            rows.append(
                (
                    "probe.decode_32",
                    f"original {orig.get('decode_tok_s_32')} tok/s vs converted "
                    f"{conv['decode_tok_s_32']} tok/s (32 sequences in lock-step)",
                )
            )
        if conv.get("error"):
            rows.append(("converted.error", str(conv["error"])))
    return rows


def _alias_arg(text: str) -> tuple[str, str]:
    from outcrop.settings import parse_alias

    try:
        return parse_alias(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# --------------------------------------------------------------------------- commands


def cmd_models_ps(args: argparse.Namespace) -> int:
    """Ask a running server (SigV4 with this data dir's credentials) what it has loaded."""
    import httpx
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from outcrop.credentials import load_or_create_credentials

    settings = settings_from_args(args)
    endpoint = (args.endpoint or f"http://{settings.host}:{settings.port}").rstrip("/")
    if settings.access_key_id and settings.secret_access_key:
        key, secret = settings.access_key_id, settings.secret_access_key
    else:
        key, secret, _ = load_or_create_credentials(settings.data_dir)
    request = AWSRequest(method="GET", url=endpoint + "/outcrop/ps")
    SigV4Auth(Credentials(key, secret), "bedrock", settings.region).add_auth(request)
    try:
        response = httpx.get(request.url, headers=dict(request.headers), timeout=10)
    except httpx.HTTPError as exc:
        raise CliError(f"no outcrop server answered at {endpoint}: {exc}") from None
    if response.status_code != 200:
        raise CliError(f"{endpoint} answered {response.status_code}: {response.text}")
    models = response.json()["models"]
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Loaded models ({endpoint})")
    for col in ("model", "memory", "running", "waiting", "slots/batch", "idle", "prompt cache"):
        table.add_column(col)
    for m in models:
        table.add_row(
            m["modelId"],
            _human(m.get("memoryBytes")),
            str(m.get("running", "")),
            str(m.get("waiting", "")),
            str(m.get("slots", m.get("max_batch", ""))),
            f"{m.get('idleSeconds', 0):.0f}s",
            _prompt_cache_cell(m),
        )
    if not models:
        table.caption = "nothing loaded"
    Console().print(table)
    return 0


def _prompt_cache_cell(m: dict) -> str:
    """Hit tokens, hits/misses, evictions and host bytes of a model's prefix cache."""
    if not m.get("prefix_cache"):
        return "off" if "prefix_cache" in m else ""
    return (
        f"{m.get('cache_hit_tokens', 0)} tok hit, {m.get('cache_hits', 0)}/"
        f"{m.get('cache_misses', 0)} hit/miss, {m.get('cache_evictions', 0)} evicted, "
        f"{_human(m.get('cache_bytes'))} in {m.get('cache_entries', 0)} entries"
    )


def cmd_serve(args: argparse.Namespace) -> int:
    settings = settings_from_args(
        args,
        host=args.host,
        port=args.port,
        auth=args.auth,
        max_queue=args.max_queue,
        max_batch=args.parallel,
        n_threads=args.threads,
        s3_endpoint_url=args.s3_endpoint_url,
        training_threads=args.training_threads,
        max_loaded_models=args.max_loaded_models,
        memory_budget_mb=args.memory_budget_mb,
        keep_alive=args.keep_alive,
        weight_format=args.weight_format,
        gpu_layers=args.gpu_layers,
        prompt_cache_mb=args.prompt_cache_mb,
        database_url=args.database_url,
        file_roots=args.file_roots,
        model_bucket=args.model_bucket,
    )
    if args.alias:
        # --alias flags come first: they win over aliases from the environment / config file.
        settings = settings.model_copy(update={"aliases": list(args.alias) + settings.aliases})
    resolver = _resolver(settings)
    preload: list[str] = []
    for model_id in args.preload or []:
        card = _resolve_card(resolver, model_id)
        if card.model_id not in preload:
            preload.append(card.model_id)

    if args.ray is not None:
        from outcrop.cli_ray import plan_from_args, serve_on_ray

        serve_on_ray(settings, plan_from_args(args, preload), args.ray)
        return 0
    from outcrop import server  # written elsewhere; imported lazily

    server.serve(settings, preload=preload)
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from outcrop.models.catalog import Catalog
    from outcrop.models.store import ModelStore

    settings = settings_from_args(args)
    catalog = Catalog()
    store = ModelStore(settings.data_dir)
    installed = {card.model_id: (card, size) for card, size in store.list_installed()}
    cards = catalog.all() + [c for mid, (c, _) in installed.items() if mid not in catalog]

    from outcrop.cli_imports import imported_rows

    imported = imported_rows(settings)
    if args.json:
        rows = [
            {
                "modelId": c.model_id,
                "providerName": c.provider_name,
                "inputModalities": list(c.input_modalities),
                "outputModalities": list(c.output_modalities),
                "installed": store.path(c) is not None,
                "sizeBytes": installed[c.model_id][1] if c.model_id in installed else None,
            }
            for c in cards
        ]
        rows += [
            {"modelId": m["modelId"], "providerName": "Imported", "imported": True,
             "modelArn": m["arn"], "architecture": m["architecture"],
             "inputModalities": ["TEXT"], "outputModalities": ["TEXT"],
             "installed": Path(m["path"]).is_file(), "sizeBytes": m["sizeBytes"]}
            for m in imported
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0

    table = Table(title=f"Models ({settings.data_dir})")
    table.add_column("Model ID", overflow="fold")
    table.add_column("Provider", overflow="fold")
    table.add_column("Modalities", no_wrap=True)
    table.add_column("Installed", no_wrap=True)
    table.add_column("Size", justify="right", no_wrap=True)
    for c in cards:
        ok = store.path(c) is not None
        size = installed[c.model_id][1] if c.model_id in installed else c.size_bytes
        table.add_row(
            c.model_id,
            c.provider_name,
            f"{'+'.join(c.input_modalities)}→{'+'.join(c.output_modalities)}",
            "[green]yes[/]" if ok else "no",
            _human(size),
        )
    for m in imported:
        table.add_row(
            f"{m['modelId']} [cyan](imported)[/]", f"Imported ({m['architecture']})",
            "TEXT→TEXT", "[green]yes[/]" if Path(m["path"]).is_file() else "missing",
            _human(m["sizeBytes"]),
        )  # fmt: skip
    Console().print(table)
    return 0


def cmd_models_pull(args: argparse.Namespace) -> int:
    from outcrop.models.store import ModelStoreError, model_store

    settings = settings_from_args(args, weight_format=args.weight_format)
    resolver = _resolver(settings)
    cards = [_resolve_card(resolver, m) for m in args.model_ids]  # validate all first
    store = model_store(settings)
    for card in cards:
        try:
            if not args.force and store.path(card) is not None:
                before = store.path(card)
                path = store.ensure(card, progress=not args.quiet)  # a pending format choice
                verb = "already installed at" if path == before else "installed at"
            else:
                path = store.pull(card, progress=not args.quiet)
                verb = "installed at"
        except ModelStoreError as exc:
            raise CliError(exc.message) from None
        weights = (store.record(card) or {}).get("weights") or {}
        conv = weights.get("converted") or {}
        if conv and not conv.get("accepted"):
            print(f"{card.model_id}: warning: {weights.get('reason')}", file=sys.stderr)
        print(f"{card.model_id}: {verb} {path}")
        if conv.get("accepted") and "perplexity" in conv:
            orig = weights.get("original") or {}
            print(
                f"{card.model_id}: serving {str(conv.get('format')).upper()} instead of "
                f"{str(orig.get('format')).upper()}: perplexity {orig.get('perplexity'):.3f} -> "
                f"{conv['perplexity']:.3f} ({conv['delta_pct']:+.2f}%, bound "
                f"{conv['bound_pct']:g}%); `outcrop models show` has the details"
            )
    return 0


def cmd_models_rm(args: argparse.Namespace) -> int:
    from outcrop.models.store import ModelStore

    settings = settings_from_args(args)
    card = _resolve_card(_resolver(settings), args.model_id)
    if ModelStore(settings.data_dir).remove(card):
        print(f"{card.model_id}: removed")
    else:
        print(f"{card.model_id}: not installed")
    return 0


def cmd_models_show(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from outcrop.models.catalog import to_foundation_model_summary
    from outcrop.models.store import model_store

    settings = settings_from_args(args)
    card = _resolve_card(_resolver(settings), args.model_id)
    store = model_store(settings)
    path = store.path(card)
    data = card.model_dump(mode="json")
    data["installed_path"] = str(path) if path else None
    weights = (store.record(card) or {}).get("weights") if path else None
    if args.json:
        data["weights"] = weights
        data["foundationModelSummary"] = to_foundation_model_summary(card, settings.region)
        print(json.dumps(data, indent=2))
        return 0
    table = Table(title=card.model_id, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for key, value in data.items():
        if isinstance(value, list | dict):
            value = json.dumps(value)
        table.add_row(key, "-" if value is None else str(value))
    if path is not None and card.engine == "llamacpp" and not card.local_path:
        for key, value in _weights_rows(weights):
            table.add_row(key, value)
    Console().print(table)
    return 0


def cmd_credentials(args: argparse.Namespace) -> int:
    from outcrop import credentials

    settings = settings_from_args(args)
    endpoint = args.endpoint
    if endpoint is None:
        host = settings.host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        endpoint = f"http://{host}:{settings.port}"
    key, secret, created = credentials.load_or_create_credentials(settings.data_dir)
    if created:
        print(f"# created new credentials in {settings.data_dir}", file=sys.stderr)
    text = credentials.export_lines(endpoint, key, secret, settings.region)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from outcrop.bench import options, runner

    settings = settings_from_args(args)
    try:
        opts = options.from_args(args, settings.data_dir)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    for model_id in opts.models:
        _resolve_card(_resolver(), model_id)
    runner.run(opts, n_ctx=settings.n_ctx)
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir", type=Path, default=None, help="where models and credentials live"
    )
    common.add_argument("--config", type=Path, default=None, help="TOML config file")

    parser = argparse.ArgumentParser(
        prog="outcrop", description="Amazon Bedrock's API on your own hardware."
    )
    try:
        from importlib.metadata import version

        ver = version("outcrop")
    except Exception:
        ver = "unknown"
    parser.add_argument("--version", action="version", version=f"outcrop {ver}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("serve", parents=[common], help="run the server")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument(
        "--alias",
        action="append",
        type=_alias_arg,
        metavar="PATTERN=MODEL_ID",
        help="serve MODEL_ID for requested IDs matching the glob PATTERN (repeatable)",
    )
    p.add_argument("--auth", choices=["sigv4", "none"], default=None)
    p.add_argument("--max-queue", type=int, default=None, help="queued requests per model")
    p.add_argument("--parallel", type=int, default=None, help="parallel slots per model")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: auto)")
    p.add_argument(
        "--gpu-layers", type=int, default=None,
        help="layers llama.cpp offloads to a GPU (-1: all; needs a GPU build of llama-cpp-python)",
    )  # fmt: skip
    p.add_argument(
        "--s3-endpoint-url", default=None, help="S3-compatible endpoint for s3:// job data"
    )
    p.add_argument(
        "--training-threads", type=int, default=None, help="torch threads per training job"
    )
    p.add_argument(
        "--file-roots", default=None, metavar="DIR[:DIR...]",
        help="folders file:// job locations may use (default: any on loopback, none otherwise)",
    )  # fmt: skip
    p.add_argument(
        "--preload", nargs="+", action="extend", metavar="MODEL_ID", help="load at start-up"
    )
    p.add_argument("--max-loaded-models", type=int, default=None, help="models loaded at once")
    p.add_argument("--memory-budget-mb", type=int, default=None, help="memory for loaded models")
    p.add_argument(
        "--prompt-cache-mb", type=int, default=None,
        help="host memory for saved prompt prefixes (KV), shared by all models; "
        "0 turns prefix reuse off (default: 1/16 of RAM, at most 4096)",
    )  # fmt: skip
    p.add_argument(
        "--format",
        dest="weight_format",
        type=_format_arg,
        default=None,
        metavar="FORMAT",
        help="weight format to serve: auto (default: convert a format slow on this CPU, "
        "quality-gated), original, q8_0, q4_0, ...",
    )
    p.add_argument(
        "--keep-alive",
        type=float,
        default=None,
        help="seconds an idle model stays loaded (-1: forever)",
    )
    p.add_argument(
        "--database-url", default=None, metavar="URL",
        help="SQLAlchemy URL of the records database, shared by several servers "
        "(postgresql+psycopg://user@host/db; default: SQLite in the data dir)",
    )  # fmt: skip
    p.add_argument(
        "--model-bucket", default=None, metavar="s3://BUCKET/PREFIX",
        help="where custom and imported model files live for every server sharing the "
        "records (on --s3-endpoint-url); each server caches them in its data dir",
    )  # fmt: skip
    from outcrop.cli_ray import add_parsers as add_ray_parsers
    from outcrop.cli_ray import add_serve_arguments

    add_serve_arguments(p)
    p.set_defaults(func=cmd_serve)
    add_ray_parsers(sub)

    models = sub.add_parser("models", help="manage local models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    p = msub.add_parser("list", parents=[common], help="list known and installed models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_list)

    p = msub.add_parser("pull", parents=[common], help="download and install models")
    p.add_argument("model_ids", nargs="+", metavar="MODEL_ID")
    p.add_argument("--force", action="store_true", help="re-install even if present")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--format",
        dest="weight_format",
        type=_format_arg,
        default=None,
        metavar="FORMAT",
        help="auto (default: convert a format slow on this CPU, quality-gated), original, "
        "q8_0, q4_0, ...",
    )
    p.set_defaults(func=cmd_models_pull)

    from outcrop.cli_imports import add_parser as add_import_parser

    add_import_parser(msub, common, _format_arg)

    p = msub.add_parser("rm", parents=[common], help="remove an installed model")
    p.add_argument("model_id", metavar="MODEL_ID")
    p.set_defaults(func=cmd_models_rm)

    p = msub.add_parser("ps", parents=[common], help="what a running server has loaded")
    p.add_argument("--endpoint", default=None, help="server URL (default: from settings)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_ps)

    p = msub.add_parser("show", parents=[common], help="show a model card")
    p.add_argument("model_id", metavar="MODEL_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models_show)

    from outcrop.cli_jobs import add_parsers as add_jobs_parsers

    add_jobs_parsers(sub, common)

    from outcrop.cli_kb import add_parsers as add_kb_parsers

    add_kb_parsers(sub, common)

    p = sub.add_parser("credentials", parents=[common], help="print export lines for clients")
    p.add_argument("--endpoint", default=None, help="endpoint URL (default: from settings)")
    p.set_defaults(func=cmd_credentials)

    from outcrop.bench.options import add_arguments as add_bench_arguments

    p = sub.add_parser("bench", parents=[common], help="benchmark a real server and baselines")
    add_bench_arguments(p)
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CliError as exc:
        print_error(exc.message)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
