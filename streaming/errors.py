"""How a worker stops on its own: start-up errors, fatal errors, and the one channel through
which any thread reports the fault that stops it."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("streaming.worker")


class StartupError(RuntimeError):
    """The worker cannot start; the message names the fix. Nothing was committed."""


class FatalWorkerError(RuntimeError):
    """The worker must stop without committing past what is durable.

    ``exit_code`` 1: a restart may get past it (a broker that timed out); 2: no restart will
    (a topic deleted, authorization revoked) until someone fixes the setup."""

    def __init__(self, reason: str, exit_code: int = 1) -> None:
        super().__init__(reason)
        self.exit_code = exit_code


class Faults:
    """The worker's error channel: the first fatal reason wins, whichever thread reports it.

    Written by any thread (main loop, inference threads, delivery thread, committer) under a
    lock; read without one by the loop and the health check. Once set, the loop stops, nothing
    more is committed, and ``Worker.run`` raises :class:`FatalWorkerError` with the reason.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reason: str | None = None
        self.exit_code = 1

    def report(self, reason: str, exit_code: int = 1) -> bool:
        """Record a fatal fault; True if it is the first (later ones are only logged)."""
        with self._lock:
            first = self._reason is None
            if first:
                self._reason = reason
                self.exit_code = exit_code
        if not first:
            log.debug("a further fault after the first: %s", reason)
        return first

    @property
    def reason(self) -> str | None:
        return self._reason

    def error(self) -> FatalWorkerError:
        return FatalWorkerError(self._reason or "", self.exit_code)

    def __bool__(self) -> bool:
        return self._reason is not None


class Health:
    """Liveness trouble that is not fatal: the worker goes on, but its pod must be replaced.

    A model call that hung (streaming.engine.watchdog) is the case: the thread cannot be
    killed, so only a new process can score that version again; meanwhile the worker keeps
    scoring the other versions and dead-lettering the hung one's rows, so a fatal fault
    (which stops the loop and commits nothing more) would be worse. /healthz fails on it and
    the liveness probe restarts the pod; a SIGTERM still drains, since nothing waits on the
    hung thread. Written by any thread under a lock; read by /healthz.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reasons: list[str] = []

    def unhealthy(self, reason: str) -> None:
        with self._lock:
            self._reasons.append(reason)
        log.error("unhealthy: %s", reason)

    @property
    def reasons(self) -> list[str]:
        with self._lock:
            return list(self._reasons)

    @property
    def ok(self) -> bool:
        return not self._reasons
