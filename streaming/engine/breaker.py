"""A circuit breaker per model version: a version that keeps failing stops being called.

After ``failures`` batches in a row raise, the breaker opens: the version's rows go straight to
the dead letters (stage inference, reason "circuit open") for ``cooldown_s`` without touching
the model, so a broken model costs nothing and cannot hold the pipeline in its error path.
Then one batch is let through (half-open): success closes the breaker, failure opens it again.

A version whose model call hung (streaming.engine.watchdog) is held open for good: a hung
thread cannot be killed, so no trial batch can ever be let through.
"""

from __future__ import annotations

import time
from collections.abc import Callable

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"


class CircuitBreaker:
    def __init__(
        self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.failures = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._streak = 0
        self._opened_at: float | None = None
        self.opened = 0
        """How many times it opened (for the logs and tests)."""
        self.held_open = False
        """Set once by the watchdog (its one write here, a single flag): open for good."""

    @property
    def state(self) -> str:
        if self.held_open:
            return OPEN
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at >= self.cooldown_s:
            return HALF_OPEN
        return OPEN

    def allow(self) -> bool:
        """May the next batch call the model?"""
        return self.state != OPEN

    def hold_open(self) -> None:
        """Open for good (a model call hung); only a new process closes it again."""
        self.held_open = True

    def record(self, ok: bool) -> bool:
        """Record a batch's outcome; True when this outcome opened the breaker."""
        if ok:
            self._streak = 0
            self._opened_at = None
            return False
        self._streak += 1
        if self.state == HALF_OPEN or (self._opened_at is None and self._streak >= self.failures):
            self._opened_at = self._clock()
            self.opened += 1
            return True
        return False
