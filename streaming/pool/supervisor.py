"""The pool supervisor: N worker processes in one consumer group, kept running and drained.

    start N children -> watch: restart the dead (backoff, budget) -> SIGTERM: forward, wait

Each child is ``streaming run --processes 1`` with its own worker id ``<pod>-<n>`` (see
slots.py), prometheus' multiprocess directory and a status file (status.py). The supervisor
serves the pod's one HTTP port: /metrics summed over the children, /healthz and /readyz naming
the child that is unwell. Exit codes: 0 when every child drained and exited 0; 1 when the
restart budget ran out or a child had to be killed past the drain deadline; 2 when a child
failed its start-up checks (bad config, missing topics: a restart would fail the same way).

Threads: the main thread (``run``) owns the slots and the restart policy; the signal handler
only sets ``_stopping``; the HTTP thread only reads the slots.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from streaming.config import PipelineConfig
from streaming.pool.collector import EndToEndTotals, retire
from streaming.pool.restarts import RestartPolicy
from streaming.pool.slots import Slot, describe_exit
from streaming.pool.status import ENV_PARENT_PID, ENV_STATUS_FILE

log = logging.getLogger("streaming.pool")

CLOSE_MARGIN_S = 10.0
"""Past the drain deadline, what a child may take to flush its producer and leave the group
(the worker gives its sink 5 s) before the supervisor kills it."""
TURN_S = 0.1
ENV_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"


class Supervisor:
    """Runs the pool until it is stopped (SIGTERM / SIGINT) or every child is done."""

    def __init__(
        self,
        config: PipelineConfig,
        child_args: list[str],
        processes: int,
        pod_id: str,
        work_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.pod_id = pod_id
        self._child_args = child_args
        self._own_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="streaming-pool-"))
        self.metrics_dir = self.work_dir / "metrics"
        self._prepare_dirs()
        w = config.worker
        self.policy = RestartPolicy(w.restart_budget, w.restart_window_s, w.restart_backoff_s)
        self.slots = [
            Slot(n, f"{pod_id}-{n}", self.work_dir / f"status-{n}.json") for n in range(processes)
        ]
        self.end_to_end = EndToEndTotals()
        """Latencies reported by children that ended (read by the /metrics thread)."""
        self.restarts = 0
        """Children started again after dying (streaming_pool_restarts_total)."""
        self._stopping = threading.Event()
        self._code = 0

    def _prepare_dirs(self) -> None:
        # prometheus' files of an earlier run would be summed into this one's counters
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        self.metrics_dir.mkdir(parents=True)
        for old in self.work_dir.glob("status-*.json"):
            old.unlink()

    def stop(self) -> None:
        """Drain every child and return (signal-safe: only sets an event)."""
        self._stopping.set()

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Start the children, keep them running, drain them when stopped; the exit code."""
        log.info("pool of %d processes starting", len(self.slots))
        try:
            for slot in self.slots:
                self._spawn(slot)
            self._supervise()
            self._drain()
        finally:
            self._kill_all()
            if self._own_dir:
                shutil.rmtree(self.work_dir, ignore_errors=True)
        log.info("pool stopped (exit %d)", self._code)
        return self._code

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is not None:
                    self._reap(slot, now)
                elif slot.restart_at is not None and now >= slot.restart_at:
                    self._spawn(slot)
            if all(s.done for s in self.slots):
                return
            self._stopping.wait(TURN_S)

    def _reap(self, slot: Slot, now: float) -> None:
        """A child ended while the pool runs: done, restart later, or stop the pool."""
        assert slot.proc is not None
        code = slot.proc.returncode
        why = describe_exit(code)
        self._forget(slot)
        if code == 0:
            slot.done = True
            log.info("%s finished (exit 0)", slot.worker_id)
        elif code == 2:
            log.error("%s failed its start-up checks (exit 2): stopping the pool", slot.worker_id)
            self._fail(2)
        elif not self.policy.allow(now):
            log.error(
                "%s died (%s) and the restart budget is spent (%d restarts in %.0f s): "
                "stopping the pool; see the child's log lines above for why it died",
                slot.worker_id,
                why,
                self.policy.budget,
                self.policy.window_s,
            )
            self._fail(1)
        else:
            delay = self.policy.delay(slot.index, now)
            slot.restart_at = now + delay
            log.warning(
                "%s died (%s): restarting it in %.1f s (%d of %d restarts in %.0f s used)",
                slot.worker_id,
                why,
                delay,
                self.policy.used(now),
                self.policy.budget,
                self.policy.window_s,
                extra={"child": slot.worker_id, "exit": why},
            )
        slot.exits.append(why)

    def _fail(self, code: int) -> None:
        self._code = max(self._code, code)
        self._stopping.set()

    def _spawn(self, slot: Slot) -> None:
        env = {
            **os.environ,
            "STREAMING_WORKER_ID": slot.worker_id,
            ENV_MULTIPROC: str(self.metrics_dir),
            ENV_STATUS_FILE: str(slot.status_path),
            ENV_PARENT_PID: str(os.getpid()),
        }
        cmd = [sys.executable, "-m", "streaming", "run", *self._child_args]
        slot.proc = subprocess.Popen(cmd, env=env)
        slot.started_at = time.monotonic()
        if slot.restart_at is not None:
            self.restarts += 1
        slot.restart_at = None
        log.info("%s started (pid %d)", slot.worker_id, slot.proc.pid)

    def _forget(self, slot: Slot) -> None:
        """A child is gone: its live gauges leave the sums, its latencies stay counted."""
        from prometheus_client import multiprocess

        assert slot.proc is not None
        multiprocess.mark_process_dead(slot.proc.pid, str(self.metrics_dir))
        retire(self, slot)
        slot.proc = None

    # ------------------------------------------------------------------ shutdown

    def _drain(self) -> None:
        """Forward SIGTERM, wait for every child to drain and commit, within the deadline."""
        live = [s for s in self.slots if s.proc is not None]
        for slot in self.slots:
            slot.restart_at = None  # nothing is started again once the pool stops
        if not live:
            return
        log.info("stopping: draining %d children", len(live))
        for slot in live:
            assert slot.proc is not None
            slot.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.config.worker.drain_timeout_s + CLOSE_MARGIN_S
        while time.monotonic() < deadline and any(s.proc for s in self.slots):
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is not None:
                    code = slot.proc.returncode
                    if code != 0:
                        log.error(
                            "%s ended with %s while draining", slot.worker_id, describe_exit(code)
                        )
                        self._code = max(self._code, 1)
                    slot.exits.append(describe_exit(code))
                    slot.done = code == 0
                    self._forget(slot)
            time.sleep(TURN_S)

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.proc is not None and slot.proc.poll() is None:
                log.error("%s did not drain within the deadline: killing it", slot.worker_id)
                slot.proc.kill()
                slot.proc.wait(10)
                self._code = max(self._code, 1)
            if slot.proc is not None:
                self._forget(slot)
