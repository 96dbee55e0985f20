"""One version's model call in progress, and the claim that lets exactly one party answer its
rows: the inference thread when the call returns in time, else the watchdog
(streaming.engine.watchdog, whose docstring says which thread owns what).

The claim rule: a call is its generation number, bumped by ``begin``. ``finish`` (inference
thread) and ``expire`` (watchdog) both take the current call under the lock and clear it;
whichever finds its own call there answers the call's rows, the other answers none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streaming.engine.types import STAGE_INFERENCE, Chunk, Rejection

REASON_TIMEOUT = "timeout"


@dataclass(frozen=True, slots=True)
class Call:
    """One model call in progress: what the watchdog answers if it claims it."""

    generation: int
    started: float
    chunks: Sequence[Chunk]
    primary: bool
    """Primary rows are in the ledger and must be answered; shadow copies are not."""


class CallWatch:
    """One version's call in progress, if any, and whether the version hung."""

    def __init__(
        self, version: str, timeout_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.version = version
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()
        self._current: Call | None = None
        self.generation = 0
        self.hung: Rejection | None = None
        """Set once, by the watchdog's claim: the rejection every later row gets."""

    def begin(self, chunks: Sequence[Chunk], primary: bool) -> Call | None:
        """The inference thread is about to call the model; None if the version hung."""
        with self._lock:
            if self.hung is not None:
                return None
            self.generation += 1
            call = self._current = Call(self.generation, self._clock(), chunks, primary)
            return call

    def finish(self, call: Call) -> bool:
        """The model call returned: True if its results are the inference thread's to give."""
        with self._lock:
            if self._current is None or self._current.generation != call.generation:
                return False
            self._current = None
            return True

    def expire(self, now: float) -> Call | None:
        """The watchdog's claim: the call in progress if it ran past the timeout (it is then
        the watchdog's to answer, and the version is hung for good), else None."""
        with self._lock:
            call = self._current
            if call is None or now - call.started < self.timeout_s:
                return None
            self._current = None
            running = now - call.started
            self.hung = Rejection(
                STAGE_INFERENCE,
                f"{self.version}: model call did not return within worker.inference_timeout_s "
                f"({self.timeout_s:g} s; it had run {running:.2f} s when timed out); the "
                "version is no longer called until the worker restarts",
                REASON_TIMEOUT,
                self.version,
            )
            return call

    def running_for(self, now: float) -> float | None:
        call = self._current
        return None if call is None else now - call.started
