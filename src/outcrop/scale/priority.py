"""Replicas run at the priority plain ``outcrop serve`` runs at.

Ray starts every worker process at niceness 15 (``RAY_worker_niceness``) so that raylets
stay responsive. A replica that serves requests then loses its cores to anything at normal
priority on the node — a load balancer, a client, a build — though Serve reserved them
for it (``num_cpus``). Measured on 2 cores: one engine replica at niceness 15 gave 0.86x
the tokens/s of plain ``outcrop serve`` (docs/benchmarks.md, "Ray Serve").
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("outcrop.scale")


def normal_priority() -> bool:
    """Bring every thread of this process back to niceness 0 (threads started later
    inherit it). Lowering niceness needs CAP_SYS_NICE: without it, log how to configure
    the cluster instead. Returns whether the process now runs at niceness 0."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: one process-wide niceness
        tids = [0]
    try:
        for tid in tids:
            if os.getpriority(os.PRIO_PROCESS, tid) > 0:
                os.setpriority(os.PRIO_PROCESS, tid, 0)
    except PermissionError:
        log.warning(
            "this replica runs at niceness %d (Ray's worker default) and may not lower it; "
            "start the Ray nodes with RAY_worker_niceness=0 so replicas keep their cores",
            os.getpriority(os.PRIO_PROCESS, 0),
        )
        return False
    except (OSError, ProcessLookupError):
        pass  # a thread that ended meanwhile
    return True
