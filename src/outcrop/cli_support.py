"""What every ``outcrop`` subcommand module shares: the error type, how errors are printed,
and Settings built from the flags given."""

from __future__ import annotations

import argparse
from typing import Any

EXIT_USAGE = 2


class CliError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def print_error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}"
    )


def settings_from_args(args: argparse.Namespace, **extra: Any):
    """Build Settings from the CLI flags that were given (None = not given)."""
    from pydantic import ValidationError as PydanticValidationError

    from outcrop.settings import Settings

    kwargs = {k: v for k, v in extra.items() if v is not None}
    if getattr(args, "data_dir", None) is not None:
        kwargs["data_dir"] = args.data_dir
    if getattr(args, "config", None) is not None:
        kwargs["config_file"] = args.config
    try:
        return Settings(**kwargs)
    except PydanticValidationError as exc:
        msgs = []
        for e in exc.errors():
            loc = ".".join(str(p) for p in e.get("loc", ()))
            msg = str(e.get("msg", "")).removeprefix("Value error, ")
            msgs.append(f"{loc}: {msg}" if loc else msg)
        raise CliError("invalid settings: " + "; ".join(msgs), EXIT_USAGE) from None
    except ValueError as exc:
        raise CliError(f"invalid settings: {exc}", EXIT_USAGE) from None
