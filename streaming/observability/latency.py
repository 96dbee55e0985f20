"""Bounded-memory latency percentiles: log-spaced buckets, about 2% relative error.

One writer thread records (the delivery thread); readers (progress line, summary, the
Prometheus collector) copy the counts, so recording takes no lock.
"""

from __future__ import annotations

import math

import numpy as np

_LOW_MS = 0.01
_RATIO = 1.02
_BUCKETS = int(math.log(3_600_000 / _LOW_MS) / math.log(_RATIO)) + 2
_LOG_RATIO = math.log(_RATIO)
# upper edge of each bucket, in ms: bucket i holds (edge[i-1], edge[i]]
UPPER_EDGES_MS = _LOW_MS * _RATIO ** np.arange(_BUCKETS, dtype=np.float64)


class LatencyRecorder:
    """Millisecond samples in log buckets; percentiles and Prometheus buckets from them."""

    def __init__(self) -> None:
        self._counts = np.zeros(_BUCKETS, dtype=np.int64)
        self.count = 0
        self.sum_ms = 0.0
        self.max_ms = 0.0

    def record(self, ms: float) -> None:
        idx = (
            0
            if ms <= _LOW_MS
            else min(math.ceil(math.log(ms / _LOW_MS) / _LOG_RATIO), _BUCKETS - 1)
        )
        self._counts[idx] += 1
        self.count += 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def record_many(self, ms: np.ndarray) -> None:
        """A whole batch at once (vectorised: what the delivery path uses)."""
        if ms.size == 0:
            return
        clipped = np.maximum(ms, _LOW_MS)
        idx = np.minimum(np.ceil(np.log(clipped / _LOW_MS) / _LOG_RATIO), _BUCKETS - 1)
        self._counts += np.bincount(idx.astype(np.int64), minlength=_BUCKETS)
        self.count += int(ms.size)
        self.sum_ms += float(ms.sum())
        self.max_ms = max(self.max_ms, float(ms.max()))

    def percentile(self, q: float) -> float:
        """The q-th percentile (0..100) in ms, or NaN with no samples."""
        counts = self._counts.copy()
        total = int(counts.sum())
        if total == 0:
            return float("nan")
        rank = max(1, math.ceil(total * q / 100.0))
        idx = int(np.searchsorted(np.cumsum(counts), rank))
        if idx == 0:
            return _LOW_MS
        # The bucket's geometric midpoint.
        return float(_LOW_MS * _RATIO ** (idx - 0.5))

    def cumulative_at(self, bounds_ms: list[float]) -> list[int]:
        """Samples at or below each bound (to within a bucket): Prometheus-style buckets."""
        cum = np.cumsum(self._counts)
        return [
            int(cum[np.searchsorted(UPPER_EDGES_MS, b, side="right") - 1]) if b >= _LOW_MS else 0
            for b in bounds_ms
        ]

    def merge(self, other: LatencyRecorder) -> None:
        self._counts += other._counts
        self.count += other.count
        self.sum_ms += other.sum_ms
        self.max_ms = max(self.max_ms, other.max_ms)
