"""Tail sampling: which acked events get a trace, decided from timings already recorded.

Kept: events slower than ``slow_ms`` (or the current p99 when ``auto``), events whose incoming
traceparent says sampled, and a ``ratio`` of the rest. Dead letters are always kept (the
tracer does not ask). Vectorised per chunk: a comparison and about one random draw per chunk,
not a Python call (nor a random number) per row. Used on the delivery thread only, which owns
its state.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import numpy as np

from streaming.tracing.stamps import SAMPLED

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
        self._budget = Budget(max_per_s, clock)
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

    def _refresh(self) -> None:
        now = self._clock()
        if now - self._refreshed < AUTO_REFRESH_S or self._p99 is None:
            return
        self._refreshed = now
        count, p99 = self._p99()
        self._threshold = p99 if count >= AUTO_MIN_SAMPLES and not math.isnan(p99) else math.inf

    def keep(self, latencies_ms: np.ndarray, flags: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Positions kept, as (slow, upstream-sampled, by ratio) disjoint in that order.

        The ratio's rows are found by geometric gaps between picks, the same law as a coin
        per row: at the default 0.001 a chunk draws one number, not one per row."""
        slow_rows = latencies_ms > self.slow_ms
        taken = slow_rows
        upstream = _NONE
        if flags is not None:
            wanted = ~slow_rows & ((flags & SAMPLED) != 0)
            if wanted.any():
                upstream = np.flatnonzero(wanted)
                taken = slow_rows | wanted
        slow = np.flatnonzero(slow_rows)
        picks = self._coins(latencies_ms.shape[0] - slow.size - upstream.size)
        lucky = np.flatnonzero(~taken)[picks] if picks else _NONE
        return slow, upstream, lucky

    def _coins(self, n: int) -> list[int]:
        """Which of ``n`` rows a coin of ``ratio`` picks: the gaps between successes of a
        Bernoulli process are geometric, so one draw per pick (and one more) suffices."""
        ratio = self.ratio
        if n <= 0 or ratio <= 0:
            return []
        if ratio >= 1:
            return list(range(n))
        log_q = math.log1p(-ratio)
        draw = self._random
        out: list[int] = []
        at = -1
        while True:
            at += 1 + int(math.log(1.0 - draw()) / log_q)  # 1 - draw() is in (0, 1]
            if at >= n:
                return out
            out.append(at)

    def spent(self) -> bool:
        """The budget has nothing left now: no slow or ratio row can be traced (a drain)."""
        return self._budget.available() < 1

    def qualifying(self, latencies_ms: np.ndarray) -> int:
        """How many rows are slow, or picked by the ratio: what a spent budget skips."""
        slow = int(np.count_nonzero(latencies_ms > self.slow_ms))
        return slow + len(self._coins(latencies_ms.shape[0] - slow))

    def within_budget(self, picked: np.ndarray) -> np.ndarray:
        """The first of ``picked`` the per-second budget still allows (the rest are skipped)."""
        if picked.size == 0:
            return picked
        return picked[: self._budget.take(picked.size)]


class Budget:
    """A token bucket: at most ``per_s`` a second on average, bursts up to one second's worth.

    A backlog makes every event slower than the last p99 (each waited longer than the one
    before), so without it a drain would trace a third of its events; it bounds what traces
    can cost, whatever the traffic does."""

    __slots__ = ("_clock", "_last", "_per_s", "_tokens")

    def __init__(self, per_s: float, clock: Callable[[], float]) -> None:
        self._per_s = per_s
        self._clock = clock
        self._tokens = per_s
        self._last = clock()

    def available(self) -> float:
        """Tokens in the bucket now (refilled for the time since the last look)."""
        if math.isinf(self._per_s):
            return math.inf
        now = self._clock()
        self._tokens = min(self._per_s, self._tokens + (now - self._last) * self._per_s)
        self._last = now
        return self._tokens

    def take(self, n: int) -> int:
        """How many of ``n`` may go now (taken from the bucket)."""
        available = self.available()
        if math.isinf(available):
            return n
        granted = min(n, int(available))
        self._tokens -= granted
        return granted
