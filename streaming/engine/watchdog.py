"""A model call that hangs: who notices, and who answers its rows (exactly one party).

A hung thread cannot be killed, so a version whose model call runs past
``worker.inference_timeout_s`` is given up on for the life of the process: its breaker is held
open for good, its in-progress, queued and later rows are dead-lettered (stage ``inference``,
reason class ``timeout``), and /healthz fails so that the pod is replaced (streaming.errors,
Health). The other versions go on scoring meanwhile.

Who owns what:

- the version's inference thread: ``CallWatch.begin`` before each model call (stamps the
  start, bumps the version's generation) and ``CallWatch.finish`` after it returns, before it
  publishes or dead-letters anything of that call. ``begin`` on a hung version returns None:
  the thread then refuses the chunks it took itself (it is not stuck; they are in no call).
- the watchdog thread (one per engine, ``Watchdog``): every tick, ``CallWatch.expire`` on
  each version; a call it claims is its to answer. It holds the breaker open, fails the lane
  (which hands it the queued chunks and refuses later puts) and dead-letters the primary rows
  of both, then marks the worker unhealthy. It never waits on the hung thread.
- the feeding thread: a chunk the failed lane refuses is dead-lettered by it (Engine._queue).

The claim rule: a call is its generation number. ``finish`` and ``expire`` both take the
current call under the watch's lock and clear it; whichever finds its own call there answers
the call's rows, the other answers nothing. So a hung call that returns late finds its claim
gone and its scores (or its error) are discarded; a call that returned in time is never timed
out, however late the watchdog looks. Shadow rows are in no ledger: nobody answers them.

Why a thread and not the main loop: the main loop blocks in ``Lane.put`` while the hung
version's lane is full (backpressure), i.e. it stops turning exactly when it would be needed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from streaming.engine.calls import Call
from streaming.engine.dead_letters import DeadLetters
from streaming.engine.versions import ModelVersion
from streaming.errors import Health
from streaming.observability.threads import named_thread

log = logging.getLogger("streaming.worker")


class Watchdog:
    """Times out hung model calls; ``check`` is one look (tests call it with a fake clock)."""

    def __init__(
        self,
        versions: Sequence[ModelVersion],
        dead_letters: DeadLetters,
        health: Health,
        model: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._versions = versions
        self._dead_letters = dead_letters
        self._health = health
        self._model = model
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> list[str]:
        """Time out every call past its version's timeout; the versions that hung now."""
        hung = []
        for v in self._versions:
            now = self._clock()
            call = v.watch.expire(now)
            if call is not None:
                self._give_up(v, call, now - call.started)
                hung.append(v.name)
        return hung

    def _give_up(self, v: ModelVersion, call: Call, running_s: float) -> None:
        rejection = v.watch.hung
        assert rejection is not None
        timeout = v.watch.timeout_s
        log.error(
            "inference timeout: %s/%s model call running %.2f s, over "
            "worker.inference_timeout_s (%g s)",
            self._model,
            v.name,
            running_s,
            timeout,
            extra={"version": v.name, "running_s": round(running_s, 3), "timeout_s": timeout},
        )
        v.breaker.hold_open()
        queued = v.lane.fail()
        log.error(
            "%s/%s circuit open for good: a hung model thread cannot be killed; its rows are "
            "dead-lettered (reason class timeout) until the worker restarts",
            self._model,
            v.name,
            extra={"version": v.name},
        )
        self._health.unhealthy(
            f"model {self._model}/{v.name} hung: a call has not returned after "
            f"worker.inference_timeout_s ({timeout:g} s); restart to score it again"
        )
        chunks = [c for c in call.chunks if call.primary and not c.shadow]
        chunks += [c for c in queued if not c.shadow]
        for c in chunks:
            self._dead_letters.rows(c, range(len(c)), rejection)
        in_progress = sum(len(c) for c in call.chunks) if call.primary else 0
        log.info(
            "%s/%s: dead-lettered %d in-progress and %d queued rows of the hung version",
            self._model,
            v.name,
            in_progress,
            sum(len(c) for c in queued if not c.shadow),
            extra={"version": v.name},
        )

    def start(self) -> None:
        """A small thread, ticking at a quarter of the shortest timeout (at most 0.5 s)."""
        timeouts = [v.watch.timeout_s for v in self._versions] or [2.0]
        tick = min(0.5, min(timeouts) / 4)
        self._thread = named_thread(self._run, "watchdog", args=(tick,))
        self._thread.start()

    def _run(self, tick: float) -> None:
        while not self._stop.wait(tick):
            try:
                self.check()
            except Exception:  # the watchdog must outlive a bad look
                log.exception("watchdog check failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
