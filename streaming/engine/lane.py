"""Hands preprocessed rows from the source to one model version's inference thread."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from streaming.engine.batching import ArrivalRate, BatchPolicy, decide
from streaming.engine.types import Chunk


class Lane:
    """A FIFO of chunks for one model version, batched by :mod:`streaming.engine.batching`'s policy.

    FIFO, so per-key order is kept. ``put`` blocks while ``max_queued`` rows wait, so a slow
    model pushes back on the source instead of growing the queue.

    A lane whose model hung is failed (``fail``): its queued chunks are handed to the caller
    and every later ``put``, a waiting one included, is refused, under the one lock, so that
    no chunk lands in a queue nobody takes from.

    The version's scoring has one turn, which ``take`` hands to the inference thread with
    each return until it calls ``release``; ``claim`` gives it to the feeding thread instead,
    to score a small chunk itself (inline), only while nothing is queued and the inference
    thread is between batches. So chunks are scored in the order they came, and the
    version's scoring state (its interval counts, totals and held rows) has one writer at a
    time.
    """

    def __init__(
        self,
        policy: BatchPolicy,
        max_queued: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.max_batch_size = policy.max_batch_size
        self.max_queued = max_queued
        self._clock = clock
        self._chunks: deque[Chunk] = deque()
        self._rows = 0
        self._cond = threading.Condition()
        self._closed = False
        self._failed = False
        self._arrivals = ArrivalRate()
        self._taken = False
        """The inference thread holds the version's scoring turn: from a take's return to its
        release (or its next take)."""
        self._claimed = False
        """The feeding thread holds it: from a claim to its release."""
        self._turn_wanted = False
        """A take is waiting for the feeding thread's release (which then wakes it)."""
        self._poked = False
        """A waiting take returns [] (``poke``)."""

    def put(self, chunk: Chunk, timeout: float | None = None) -> bool:
        """Queue a chunk; False if the queue stayed full for ``timeout`` seconds or the lane
        has failed (the caller answers the chunk)."""
        limit = self.max_queued

        def room() -> bool:
            return self._failed or self._rows == 0 or self._rows + len(chunk) <= limit  # type: ignore[operator]

        with self._cond:
            if limit is not None and not self._cond.wait_for(room, timeout):
                return False
            if self._failed:
                return False
            self._chunks.append(chunk)
            self._rows += len(chunk)
            self._arrivals.observe(len(chunk), self._clock())
            self._cond.notify_all()
            return True

    def close(self) -> None:
        """No more puts; take() hands out what is left without waiting, then None."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def fail(self) -> list[Chunk]:
        """Refuse every later put and hand out what is queued (its model hung)."""
        with self._cond:
            self._failed = True
            out = list(self._chunks)
            self._chunks.clear()
            self._rows = 0
            self._cond.notify_all()
            return out

    @property
    def failed(self) -> bool:
        return self._failed

    @property
    def queued_rows(self) -> int:
        return self._rows

    def claim(self) -> bool:
        """The scoring turn for the feeding thread, if nothing is queued and the inference
        thread is between batches; the caller scores and then calls ``release``."""
        with self._cond:
            if self._chunks or self._taken or self._claimed or self._failed or self._closed:
                return False
            self._claimed = True
            return True

    def release(self) -> None:
        """Give the scoring turn back (after a take's batch, or a claim's chunk)."""
        with self._cond:
            self._taken = self._claimed = False  # only one of them is ever set
            if self._turn_wanted:
                self._turn_wanted = False
                self._cond.notify_all()

    def poke(self) -> None:
        """Have a waiting take return [] now, so that its thread looks again at what it has
        to report (and how long it may sleep)."""
        with self._cond:
            self._poked = True
            self._cond.notify_all()

    def take(self, timeout: float = 0.1) -> list[Chunk] | None:
        """The next batch by the policy; [] on timeout; None once closed and empty. Every
        return hands the caller the scoring turn, until it calls ``release``."""
        clock = self._clock
        deadline = clock() + timeout
        with self._cond:
            self._wait_unclaimed()
            while True:
                now = clock()
                if not self._chunks:
                    if self._closed:
                        return None
                    if now >= deadline or self._poked:
                        self._poked = False
                        return []
                    self._taken = False  # claimable while this waits for chunks
                    self._cond.wait(deadline - now)
                    self._wait_unclaimed()
                    continue
                if self._closed:
                    return self._pop(min(self._rows, self.max_batch_size))
                decision = decide(
                    self.policy,
                    self._rows,
                    self._chunks[0].enqueued,
                    now,
                    self._arrivals.current(now),
                )
                if decision.take:
                    return self._pop(decision.take)
                wake = min(decision.wait_until or deadline, deadline)
                if now >= deadline:
                    return []
                self._cond.wait(max(0.0, wake - now))  # chunks queued: no claim meanwhile

    def _wait_unclaimed(self) -> None:
        """(Under the lock) until the feeding thread's chunk is scored; then the turn is the
        inference thread's."""
        while self._claimed:
            self._turn_wanted = True
            self._cond.wait()
        self._taken = True

    def _pop(self, n: int) -> list[Chunk]:
        out: list[Chunk] = []
        room = n
        while self._chunks and room > 0:
            head = self._chunks[0]
            if len(head) <= room:
                out.append(self._chunks.popleft())
                room -= len(head)
            else:
                first, rest = head.split(room)
                self._chunks[0] = rest
                out.append(first)
                room = 0
        self._rows -= n - room
        self._cond.notify_all()
        return out
