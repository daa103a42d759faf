"""``outcrop serve --ray [ADDRESS]`` and ``outcrop ray deploy FILE``: outcrop on Ray Serve."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from outcrop.cli_support import CliError

NO_RAY = "Ray Serve is not installed: pip install 'outcrop[ray]'"


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
        help="serve on Ray Serve: the cluster at ADDRESS (host:6379 or 'auto'), or a new "
        "local Ray instance when none is given",
    )  # fmt: skip
    p.add_argument(
        "--hot-model", action="append", metavar="MODEL_ID",
        help="--ray: a model with an engine deployment of its own (default: the --preload ones)",
    )  # fmt: skip
    p.add_argument("--ingress-replicas", type=int, default=None, help="--ray: API replicas")
    p.add_argument(
        "--ingress-resources", type=json.loads, default=None, metavar="JSON",
        help="--ray: custom resources an API replica needs (default: the head node; "
        "'{}' lets Serve place them on any node)",
    )  # fmt: skip
    p.add_argument(
        "--engine-replicas", default=None, metavar="MIN[:MAX]",
        help="--ray: autoscaling bounds of each hot model's engine replicas",
    )  # fmt: skip
    p.add_argument(
        "--engine-resources", type=json.loads, default=None, metavar="JSON",
        help="--ray: custom resources an engine replica needs, e.g. '{\"outcrop_engine\": 1}'",
    )  # fmt: skip
    p.add_argument(
        "--job-resources", type=json.loads, default=None, metavar="JSON",
        help="--ray: custom resources a customization/import job's actor needs "
        "(default: '{\"outcrop_training\": 1}')",
    )  # fmt: skip


def plan_from_args(args: argparse.Namespace, preload: list[str]):  # noqa: ANN201
    from outcrop.scale.ray_app import RayPlan

    plan = RayPlan(hot_models=list(args.hot_model or preload))
    if args.ingress_replicas is not None:
        plan.ingress_replicas = args.ingress_replicas
    if args.engine_replicas:
        low, _, high = str(args.engine_replicas).partition(":")
        try:
            plan.engine_min_replicas = int(low)
            plan.engine_max_replicas = int(high or low)
        except ValueError:
            raise CliError(
                f"--engine-replicas: expected MIN[:MAX], got {args.engine_replicas}"
            ) from None
    if args.ingress_resources is not None:
        plan.ingress_resources = dict(args.ingress_resources)
    if args.engine_resources is not None:
        plan.engine_resources = dict(args.engine_resources)
    if args.job_resources is not None:
        plan.job_resources = dict(args.job_resources)
    return plan


def serve_on_ray(settings, plan, address: str) -> None:  # noqa: ANN001
    """Start (or join) Ray, run the application, and keep it up until interrupted."""
    try:
        import ray
        from ray import serve
    except ImportError:
        raise CliError(NO_RAY) from None
    from outcrop.credentials import export_lines
    from outcrop.scale.node_env import apply_node_env
    from outcrop.scale.ray_app import build, with_shared_credentials

    settings = with_shared_credentials(settings)
    if settings.auth == "sigv4":
        endpoint = f"http://{settings.host}:{settings.port}"
        print("outcrop: point clients at the cluster with:", file=sys.stderr)
        lines = export_lines(endpoint, settings.access_key_id, settings.secret_access_key,
                             settings.region)  # fmt: skip
        print(lines, file=sys.stderr)
    # "local": a new instance even when one runs on this machine (ray.init's default joins it);
    # it offers the job resources, so customization and imports run on this machine.
    local: dict = {}
    if address == "local":
        local["resources"] = dict(plan.job_resources)
        # The new instance's nodes get what a walk-through's `ray start` lines export.
        apply_node_env()
    ray.init(address=address, namespace="outcrop", **local)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    app = build(settings, plan)
    serve.run(app, name="outcrop", route_prefix="/")
    print(f"outcrop: serving on Ray at http://{settings.host}:{settings.port}", file=sys.stderr)

    def stop(_signum, _frame):  # noqa: ANN001, ANN202 - SIGTERM (systemd, docker) as Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
        ray.shutdown()


def cmd_ray_deploy(args: argparse.Namespace) -> int:
    """Run a Serve config file (``serve run FILE``) against a cluster: Ray's own CLI, so the
    file is exactly what ``serve run`` / ``serve deploy`` accept."""
    try:
        from ray.serve.scripts import cli
    except ImportError:
        raise CliError(NO_RAY) from None
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no Serve config file at {path}")
    argv = ["run", str(path)]
    if args.address:
        argv += ["--address", args.address]
    if args.non_blocking:
        argv.append("--non-blocking")
    cli.main(args=argv, prog_name="outcrop ray deploy", standalone_mode=False)
    return 0


def add_parsers(sub) -> None:  # noqa: ANN001
    ray = sub.add_parser("ray", help="outcrop on a Ray cluster")
    rsub = ray.add_subparsers(dest="ray_command", metavar="COMMAND", required=True)
    p = rsub.add_parser("deploy", help="run a Serve config file (see deploy/ray-serve.yaml)")
    p.add_argument("file", help="Serve config YAML (import_path: outcrop.scale.ray_app:build_app)")
    p.add_argument("--address", default=None, help="Ray cluster address (default: auto/local)")
    p.add_argument("--non-blocking", action="store_true", help="return once it is deployed")
    p.set_defaults(func=cmd_ray_deploy)
