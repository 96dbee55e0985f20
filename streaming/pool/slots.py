"""One slot of the pool: a stable worker id, and the child process currently running it.

The worker id ``<pod>-<n>`` belongs to the slot, not to the process, so a restarted child
keeps it: its exactly-once ``transactional.id`` (``<group>-<worker id>``) is the same, and the
new producer fences its killed predecessor's open transaction.
"""

from __future__ import annotations

import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streaming.pool.status import read_status

STALE_S = 30.0
"""A running child whose status is older than this is unwell (its status thread is stuck,
or the process is frozen): the same limit as a worker's own stalled loop."""


@dataclass
class Slot:
    """Owned by the supervisor's loop; the HTTP thread only reads it (``describe``)."""

    index: int
    worker_id: str
    status_path: Path
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    """When a dead child is to be started again (after its backoff)."""
    done: bool = False
    """Its child exited 0 (drained on SIGTERM, or --idle-exit / --max-events): not restarted."""
    exits: list[str] = field(default_factory=list)
    """Why each earlier child of this slot ended (exit code or signal)."""

    @property
    def running(self) -> bool:
        return self.proc is not None

    def describe(self, now: float) -> tuple[bool, bool, dict[str, Any]]:
        """(healthy, ready, detail) of this slot for /healthz and /readyz."""
        detail: dict[str, Any] = {"restarts": len(self.exits)}
        if self.exits:
            detail["last_exit"] = self.exits[-1]
        proc = self.proc
        if self.done:
            return True, True, {**detail, "state": "done"}
        if proc is None:
            wait = max(0.0, (self.restart_at or now) - now)
            return True, False, {**detail, "state": f"restarting in {wait:.1f} s"}
        detail["pid"] = proc.pid
        status = read_status(self.status_path)
        if status is None or status.get("pid") != proc.pid:
            return True, False, {**detail, "state": "starting"}
        age = now - float(status["at"])
        health, ready = status["healthz"], status["readyz"]
        detail.update(state="running", status_age_s=round(age, 1), healthz=health, readyz=ready)
        if age > STALE_S:
            detail["state"] = f"no status for {age:.0f} s"
            return False, False, detail
        return bool(health["ok"]), bool(ready["ok"]), detail


def describe_exit(code: int) -> str:
    """'exit code 1' or 'killed by SIGKILL' (Popen gives a signal as a negative code)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
