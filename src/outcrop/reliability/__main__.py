"""``python -m outcrop.reliability [fuzz|raw|tamper|soak|crash|all] [--full]``.

Starts its own servers (fresh data dirs under a temp folder, models from the shared
cache), runs each part, prints one JSON summary per part and writes them all to
``--out`` (default ``reliability.json``). Exit status 1 if anything did not hold.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PARTS = ("fuzz", "raw", "tamper", "soak", "crash")


def run_part(name: str, full: bool, root: Path, args: argparse.Namespace) -> dict[str, Any]:

    if name == "fuzz":
        from outcrop.reliability import contract

        return contract.run(root / "fuzz", args.requests or (12_000 if full else 600), args.seed)
    if name == "raw":
        from outcrop.reliability import rawsock

        return rawsock.run(root / "raw", full=full)
    if name == "tamper":
        from outcrop.reliability import tamper

        return tamper.run(root / "tamper")
    if name == "soak":
        from outcrop.reliability import soak

        clients = args.clients or (64 if full else 8)
        seconds = args.seconds or (600 if full else 60)
        return soak.run(root / "soak", clients=clients, seconds=seconds)
    if name == "crash":
        from outcrop.reliability import crash

        return crash.run(root / "crash", full=full)
    raise SystemExit(f"unknown part {name}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m outcrop.reliability")
    p.add_argument("parts", nargs="*", default=["all"], help=f"{', '.join(PARTS)} or all")
    p.add_argument("--full", action="store_true", help="the full run (else a short one)")
    p.add_argument("--requests", type=int, default=None, help="fuzz: requests to send")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--clients", type=int, default=None, help="soak: concurrent clients")
    p.add_argument("--seconds", type=float, default=None, help="soak: duration")
    p.add_argument("--out", type=Path, default=Path("reliability.json"))
    args = p.parse_args(argv)
    parts = PARTS if args.parts == ["all"] else args.parts
    results: dict[str, Any] = {}
    ok = True
    with tempfile.TemporaryDirectory(prefix="outcrop-reliability-") as tmp:
        for name in parts:
            started = time.monotonic()
            results[name] = run_part(name, args.full, Path(tmp), args)
            results[name]["wall_s"] = round(time.monotonic() - started, 1)
            ok &= bool(results[name].get("held"))
            print(json.dumps({name: results[name]}, indent=1, default=str), flush=True)
            args.out.write_text(json.dumps(results, indent=1, default=str))
    print("ALL HELD" if ok else "SOMETHING DID NOT HOLD", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
