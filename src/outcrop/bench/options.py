"""What a benchmark run does: the ``outcrop bench`` flags and their typed form."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

SMOL = "huggingface.smollm2-135m-instruct-v1:0"
GEMMA = "google.gemma-3-270m-v1:0"
SHORT_NAMES = {"smollm2": SMOL, "smol": SMOL, "gemma": GEMMA, "gemma3": GEMMA}
DEFAULT_PROMPT = "Write a story about a lighthouse keeper who finds a message in a bottle."


@dataclass
class BenchOptions:
    models: list[str] = field(default_factory=lambda: [SMOL])
    concurrency: int = 32
    requests: int = 64
    max_tokens: int = 128
    prompt: str = DEFAULT_PROMPT
    threads: int = 2
    parallel: int = 32
    data_dir: Path | None = None
    json_out: Path | None = None
    price_per_hour: float | None = None
    quick: bool = False
    single_stream_runs: int = 3
    http_requests: int = 300
    bandwidth_mib: int = 256
    baselines: bool = True
    server_log_dir: Path | None = None
    llama_server: str = "auto"  # auto: use a cached build; build: compile it; off

    @classmethod
    def quick_defaults(cls, **overrides) -> BenchOptions:
        """A tiny run for CI: every phase runs, none for long."""
        base = dict(
            concurrency=2,
            requests=4,
            max_tokens=8,
            parallel=2,
            single_stream_runs=1,
            http_requests=30,
            bandwidth_mib=32,
            quick=True,
        )
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        dest="bench_models",
        metavar="MODEL_ID",
        help=f"model to benchmark, repeatable (default SmolLM2; short names: {', '.join(SHORT_NAMES)})",
    )
    p.add_argument("--concurrency", type=int, default=None, help="concurrent clients (32)")
    p.add_argument("--requests", type=int, default=None, help="requests in all (2x concurrency)")
    p.add_argument("--max-tokens", type=int, default=None, help="new tokens per request (128)")
    p.add_argument("--prompt", default=None, help="the user message every request sends")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    p.add_argument("--parallel", type=int, default=None, help="server slots (= concurrency)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, metavar="OUT")
    p.add_argument("--quick", action="store_true", help="tiny run for CI")
    p.add_argument("--price-per-hour", type=float, default=None, metavar="USD")
    p.add_argument(
        "--no-baselines", action="store_true", help="only load the server, skip baselines (a)-(c)"
    )
    p.add_argument(
        "--llama-server",
        choices=["auto", "build", "off"],
        default=None,
        help="llama.cpp's llama-server baseline on the shipped weights: build = compile it "
        "once if needed (~10 min; the default), auto = only if already built (--quick's "
        "default), off",
    )


def from_args(args: argparse.Namespace, data_dir: Path) -> BenchOptions:
    models = [SHORT_NAMES.get(m.lower(), m) for m in (args.bench_models or [SMOL])]
    given = dict(
        models=models,
        concurrency=args.concurrency,
        max_tokens=args.max_tokens,
        prompt=args.prompt,
        threads=args.threads,
        data_dir=data_dir,
        json_out=args.json_out,
        price_per_hour=args.price_per_hour,
        baselines=not args.no_baselines,
        # A full run measures against llama-server (building it once if needed); the quick
        # CI run only uses an existing build.
        llama_server=getattr(args, "llama_server", None) or ("auto" if args.quick else "build"),
    )
    if args.quick:
        opts = BenchOptions.quick_defaults(**given)
    else:
        opts = BenchOptions(**{k: v for k, v in given.items() if v is not None})
    opts.requests = args.requests or (opts.requests if args.quick else 2 * opts.concurrency)
    opts.parallel = args.parallel or opts.concurrency
    opts.threads = opts.threads or max(1, os.cpu_count() or 1)
    for name in ("concurrency", "requests", "max_tokens", "parallel", "threads"):
        if getattr(opts, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    return opts
