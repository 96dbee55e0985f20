"""``streaming run --processes N`` with N > 1: the supervisor's side of the command."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
from pathlib import Path

from streaming.config import PipelineConfig
from streaming.pool.cores import allowed_cores

ENV_POOL_DIR = "STREAMING_POOL_DIR"
"""Where the pool keeps prometheus' multiprocess files and the children's status files
(default: a fresh directory under the temp dir, removed at exit)."""

log = logging.getLogger("streaming.pool")


def resolve_processes(requested: int | str) -> int:
    """``auto`` is the cores the cgroup allows; a number is taken as it is."""
    return allowed_cores() if requested == "auto" else int(requested)


def child_args(args: argparse.Namespace) -> list[str]:
    """The ``streaming run`` arguments of each child: the pod's own, one process, no port
    (the supervisor serves the pod's port)."""
    out = ["-c", str(Path(args.config).resolve()), "--processes", "1", "--metrics-port", "0"]
    if args.bootstrap:
        out += ["--bootstrap", args.bootstrap]
    if args.max_events is not None:
        out += ["--max-events", str(args.max_events)]
    if args.idle_exit is not None:
        out += ["--idle-exit", str(args.idle_exit)]
    return [*out, "--log-level", args.log_level]


def run_pool(args: argparse.Namespace, cfg: PipelineConfig, processes: int) -> int:
    """Supervise ``processes`` workers until SIGTERM / SIGINT or until all are done."""
    from streaming.cli.commands import fail
    from streaming.observability.logs import setup_logging
    from streaming.pool import collector
    from streaming.pool.supervisor import Supervisor

    pod = os.environ.get("STREAMING_WORKER_ID") or socket.gethostname()
    setup_logging(pod, args.log_level)
    pool_dir = os.environ.get(ENV_POOL_DIR)
    supervisor = Supervisor(
        cfg, child_args(args), processes, pod, Path(pool_dir) if pool_dir else None
    )
    port = args.metrics_port if args.metrics_port is not None else cfg.worker.metrics_port
    if port:
        from streaming.observability.http import serve

        try:
            serve(
                port,
                collector.pool_registry(supervisor),
                lambda: collector.healthz(supervisor),
                lambda: collector.readyz(supervisor),
            )
        except OSError as exc:
            return fail(
                f"cannot serve metrics on port {port}: {exc}; choose another "
                "--metrics-port (or worker.metrics_port)"
            )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: supervisor.stop())
    return supervisor.run()
