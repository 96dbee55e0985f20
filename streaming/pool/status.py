"""What a pool child tells its supervisor: health, readiness and end-to-end latencies, in a
small JSON file rewritten every second.

Why a file and not a port per child: nothing to allocate or race for, it survives the
supervisor being slow, and a child that stops writing (stuck, dead) shows as stale. The child
also watches its parent: if the supervisor dies, the child drains and exits instead of running
on as an orphan nobody supervises.

Threads: ``pool-status`` (in the child) is the only writer of the file; the supervisor reads it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streaming.observability.threads import named_thread

if TYPE_CHECKING:
    from streaming.observability.metrics import WorkerMetrics
    from streaming.worker import Worker

ENV_STATUS_FILE = "STREAMING_POOL_STATUS_FILE"
"""Set by the supervisor for each child: where that child writes its status."""
ENV_PARENT_PID = "STREAMING_POOL_PARENT"
"""The supervisor's pid: a child whose parent changed was orphaned and drains."""
INTERVAL_S = 1.0

log = logging.getLogger("streaming.pool")


class StatusReporter:
    """The child side: a daemon thread writing the worker's status every ``INTERVAL_S``."""

    def __init__(
        self, path: Path, worker: Worker, metrics: WorkerMetrics, parent_pid: int | None
    ) -> None:
        self.path = path
        self._worker = worker
        self._metrics = metrics
        self._parent = parent_pid
        self._stop = threading.Event()
        self._thread = named_thread(self._run, "pool-status")

    def start(self) -> StatusReporter:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread after one last write (so the final counts are not lost)."""
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        orphaned = False
        while True:
            stopping = self._stop.wait(INTERVAL_S)
            with contextlib.suppress(Exception):  # a status write must never kill the worker
                self._write()
            if stopping:
                return
            if not orphaned and self._parent is not None and os.getppid() != self._parent:
                orphaned = True
                log.warning("the pool supervisor is gone: draining and stopping")
                self._worker.stop()

    def _write(self) -> None:
        healthy, health = self._worker.healthz()
        ready, readiness = self._worker.readyz()
        status = {
            "pid": os.getpid(),
            "worker": self._worker.worker_id,
            "at": time.monotonic(),
            "healthz": {"ok": healthy, **health},
            "readyz": {"ok": ready, **readiness},
            "end_to_end": self._metrics.end_to_end_snapshot(),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, default=str))
        os.replace(tmp, self.path)  # readers never see half a file


def start_reporter(worker: Worker, metrics: WorkerMetrics) -> StatusReporter | None:
    """In a pool child (the supervisor set the env), start reporting; else None."""
    path = os.environ.get(ENV_STATUS_FILE)
    if not path:
        return None
    parent = os.environ.get(ENV_PARENT_PID)
    return StatusReporter(Path(path), worker, metrics, int(parent) if parent else None).start()


def read_status(path: Path) -> dict[str, Any] | None:
    """The supervisor side: a child's last status, or None when it wrote none yet."""
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None
