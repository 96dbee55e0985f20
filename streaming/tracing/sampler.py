"""Tail sampling: which acked events get a trace, decided from timings already recorded.

Kept: events slower than ``slow_ms`` (or the current p99 when ``auto``), events whose incoming
traceparent says sampled, and a ``ratio`` of the rest. Dead letters are always kept (the
tracer does not ask). Vectorised per chunk: a comparison and about one random draw per chunk,
not a Python call (nor a random number) per row.

Two deciders share one budget. ``QueuePicks`` (the feeding thread, as a chunk is queued) picks
the ratio's events and those already slower than the threshold, so that their predictions can
carry the trace's header (``tracing.new_trace_header: traced``); ``TailSampler`` (the delivery
thread, at the ack) keeps those, the events sampled upstream, and the events that turned slow
after they were queued. Each owns its own state; the ``Budget`` locks its own.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable

import numpy as np

from streaming.tracing.stamps import PICKED, PICKED_SLOW, SAMPLED

AUTO_REFRESH_S = 1.0
"""How often ``auto`` re-reads the p99 (reading it sums the histogram)."""
AUTO_MIN_SAMPLES = 1_000
"""Below this many latencies a p99 means little: nothing is kept as slow until then."""
_NONE = np.zeros(0, dtype=np.intp)


class TailSampler:
    """``keep(latencies_ms, flags)`` -> positions of the rows to trace."""

    def __init__(
        self,
        ratio: float,
        slow_ms: float | str,
        p99: Callable[[], tuple[int, float]] | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_per_s: float = math.inf,
    ) -> None:
        self.ratio = ratio
        self.budget = Budget(max_per_s, clock)
        """Shared with ``QueuePicks`` where the ratio is picked as chunks are queued."""
        self._fixed = None if slow_ms == "auto" else float(slow_ms)
        self._p99 = p99
        """(samples so far, current p99 in ms): the worker's end-to-end recorder."""
        self._random = random.Random(seed).random
        self._clock = clock
        self._threshold = self._fixed if self._fixed is not None else math.inf
        self._refreshed = -math.inf

    @property
    def slow_ms(self) -> float:
        """The threshold in force (inf while ``auto`` has too few samples)."""
        if self._fixed is None:
            self._refresh()
        return self._threshold

    @property
    def published_slow_ms(self) -> float:
        """The threshold as this sampler last found it, without refreshing it: what another
        thread may read (a float written whole by the delivery thread)."""
        return self._threshold

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._refreshed < AUTO_REFRESH_S or self._p99 is None:
            return
        self._refreshed = now
        count, p99 = self._p99()
        self._threshold = p99 if count >= AUTO_MIN_SAMPLES and not math.isnan(p99) else math.inf

    def keep(
        self, latencies_ms: np.ndarray, flags: np.ndarray | None, picked: bool = False
    ) -> list[tuple[str, np.ndarray, bool]]:
        """(why, positions, budgeted) of the rows kept, disjoint: ``slow``, ``sampled``
        (upstream), ``ratio``; ``budgeted`` says the budget was taken for them already.

        ``picked``: the ratio was drawn as the chunk was queued (``QueuePicks``), and its
        picks are in ``flags`` (``PICKED``, ``PICKED_SLOW``): they are kept as they were
        picked, and only the rows not picked can still be found slow here. Else the ratio's
        rows are found here, by geometric gaps between picks, the same law as a coin per row:
        at the default 0.001 a chunk draws one number, not one per row."""
        slow_rows = latencies_ms > self.slow_ms
        if picked:
            if flags is None:
                return [("slow", np.flatnonzero(slow_rows), False)]
            chosen = (flags & PICKED) != 0
            early = chosen & ((flags & PICKED_SLOW) != 0)
            return [
                ("slow", np.flatnonzero(early), True),
                ("slow", np.flatnonzero(slow_rows & ~chosen), False),
                ("sampled", np.flatnonzero(~chosen & ~slow_rows & ((flags & SAMPLED) != 0)), True),
                ("ratio", np.flatnonzero(chosen & ~early), True),
            ]
        taken = slow_rows
        upstream = _NONE
        if flags is not None:
            wanted = ~slow_rows & ((flags & SAMPLED) != 0)
            if wanted.any():
                upstream = np.flatnonzero(wanted)
                taken = slow_rows | wanted
        slow = np.flatnonzero(slow_rows)
        picks = coins(self._random, self.ratio, latencies_ms.shape[0] - slow.size - upstream.size)
        lucky = np.flatnonzero(~taken)[picks] if picks else _NONE
        return [("slow", slow, False), ("sampled", upstream, True), ("ratio", lucky, False)]

    def spent(self) -> bool:
        """The budget has nothing left now: no slow or ratio row can be traced (a drain)."""
        return self.budget.available() < 1

    def qualifying(self, latencies_ms: np.ndarray, picked: bool = False) -> int:
        """How many rows are slow, or picked by the ratio here (not ``picked`` when queued):
        what a spent budget skips."""
        slow = int(np.count_nonzero(latencies_ms > self.slow_ms))
        if picked:
            return slow
        return slow + len(coins(self._random, self.ratio, latencies_ms.shape[0] - slow))

    def within_budget(self, picked: np.ndarray) -> np.ndarray:
        """The first of ``picked`` the per-second budget still allows (the rest are skipped)."""
        if picked.size == 0:
            return picked
        return picked[: self.budget.take(picked.size)]


class QueuePicks:
    """The events to trace that are known as a chunk is queued (feeding thread, which owns
    this): a ``ratio`` of them, and those already slower than the threshold the delivery
    thread's sampler last found (time in the topic and decoding are most of a slow event's
    time), within the shared budget. Their predictions can then carry the trace's header,
    flagged sampled; the ack keeps them (``TailSampler.keep(picked=True)``)."""

    def __init__(
        self,
        sampler: TailSampler,
        over_budget: Callable[[int], None] = lambda n: None,
        seed: int | None = None,
    ) -> None:
        self._sampler = sampler
        self._random = random.Random(seed).random
        self._over_budget = over_budget
        """Told how many rows were picked while the budget was spent (so not traced)."""

    def pick(self, ts_ms: list[int], flags: np.ndarray | None, now_ms: float) -> np.ndarray | None:
        """``flags`` with ``PICKED`` (and ``PICKED_SLOW``) set on the rows picked; a new array
        where some row is picked and ``flags`` was None, else ``flags`` as given. Rows sampled
        upstream are kept anyway and are not picked."""
        n = len(ts_ms)
        threshold = self._sampler.published_slow_ms
        slow = (
            (now_ms - np.asarray(ts_ms, dtype=np.float64)) > threshold
            if math.isfinite(threshold) and now_ms - min(ts_ms) > threshold
            else None
        )
        lucky = coins(self._random, self._sampler.ratio, n)
        if slow is None and not lucky:
            return flags
        free = np.ones(n, dtype=bool) if flags is None else (flags & SAMPLED) == 0
        chosen = np.zeros(n, dtype=bool)
        if lucky:
            chosen[lucky] = True
        if slow is not None:
            chosen |= slow
        chosen &= free
        rows = np.flatnonzero(chosen)
        if not rows.size:
            return flags
        granted = self._sampler.budget.take(rows.size)
        if granted < rows.size:
            self._over_budget(rows.size - granted)
            if not granted:
                return flags
            # the slow rows first (the oldest are the most worth a trace), then the ratio's
            order = np.argsort(~slow[rows], kind="stable") if slow is not None else None
            rows = np.sort(rows[order][:granted] if order is not None else rows[:granted])
        out = np.zeros(n, dtype=np.uint8) if flags is None else flags.copy()
        out[rows] |= PICKED
        if slow is not None:
            out[rows[slow[rows]]] |= PICKED_SLOW
        return out


def coins(draw: Callable[[], float], ratio: float, n: int) -> list[int]:
    """Which of ``n`` rows a coin of ``ratio`` picks: the gaps between successes of a
    Bernoulli process are geometric, so one draw per pick (and one more) suffices."""
    if n <= 0 or ratio <= 0:
        return []
    if ratio >= 1:
        return list(range(n))
    log_q = math.log1p(-ratio)
    out: list[int] = []
    at = -1
    while True:
        at += 1 + int(math.log(1.0 - draw()) / log_q)  # 1 - draw() is in (0, 1]
        if at >= n:
            return out
        out.append(at)


class Budget:
    """A token bucket: at most ``per_s`` a second on average, bursts up to one second's worth.

    A backlog makes every event slower than the last p99 (each waited longer than the one
    before), so without it a drain would trace a third of its events; it bounds what traces
    can cost, whatever the traffic does. Shared by the feeding thread (``QueuePicks``) and the
    delivery thread (``TailSampler``): its lock is its own."""

    __slots__ = ("_clock", "_last", "_lock", "_per_s", "_tokens")

    def __init__(self, per_s: float, clock: Callable[[], float]) -> None:
        self._per_s = per_s
        self._clock = clock
        self._tokens = per_s
        self._last = clock()
        self._lock = threading.Lock()

    def available(self) -> float:
        """Tokens in the bucket now (refilled for the time since the last look)."""
        if math.isinf(self._per_s):
            return math.inf
        with self._lock:
            return self._refill()

    def _refill(self) -> float:
        now = self._clock()
        self._tokens = min(self._per_s, self._tokens + (now - self._last) * self._per_s)
        self._last = now
        return self._tokens

    def take(self, n: int) -> int:
        """How many of ``n`` may go now (taken from the bucket)."""
        if math.isinf(self._per_s):
            return n
        with self._lock:
            granted = min(n, int(self._refill()))
            self._tokens -= granted
            return granted
