"""Bounded-memory latency percentiles: log-spaced buckets, about 2% relative error."""

from __future__ import annotations

import math
import threading

import numpy as np

_LOW_MS = 0.01
_RATIO = 1.02
_BUCKETS = int(math.log(3_600_000 / _LOW_MS) / math.log(_RATIO)) + 2
_LOG_RATIO = math.log(_RATIO)


class LatencyRecorder:
    """Records millisecond samples from any thread; answers percentiles without keeping them."""

    def __init__(self) -> None:
        self._counts = np.zeros(_BUCKETS, dtype=np.int64)
        self._lock = threading.Lock()
        self.count = 0
        self.max_ms = 0.0

    def record(self, ms: float) -> None:
        idx = (
            0 if ms <= _LOW_MS else min(int(math.log(ms / _LOW_MS) / _LOG_RATIO) + 1, _BUCKETS - 1)
        )
        with self._lock:
            self._counts[idx] += 1
            self.count += 1
            if ms > self.max_ms:
                self.max_ms = ms

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) in ms, or NaN with no samples."""
        with self._lock:
            counts = self._counts.copy()
            total = self.count
        if total == 0:
            return float("nan")
        rank = max(1, math.ceil(total * q / 100.0))
        idx = int(np.searchsorted(np.cumsum(counts), rank))
        if idx == 0:
            return _LOW_MS
        # The bucket's geometric midpoint.
        return _LOW_MS * _RATIO ** (idx - 0.5)

    def merge(self, other: LatencyRecorder) -> None:
        with other._lock:
            counts, n, mx = other._counts.copy(), other.count, other.max_ms
        with self._lock:
            self._counts += counts
            self.count += n
            self.max_ms = max(self.max_ms, mx)
