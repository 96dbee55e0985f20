"""Bounded-memory latency percentiles: log-spaced buckets, about 2% relative error.

One writer thread records (the delivery thread); readers (progress line, summary, the
Prometheus collector) copy the counts, so recording takes no lock.

A chunk's latencies are bucketed once (:class:`Samples`) and added to every recorder that
wants them (the worker's and the version's): at low rates a chunk holds a handful of rows, and
numpy's fixed cost per call (a 996-bin bincount, seven ufuncs) was most of the delivery
thread's work per chunk, so small chunks are bucketed in plain Python instead. At a low rate
each chunk also finds the caches cold (the thread slept since the last one), which costs numpy
calls more than plain Python, so a small chunk's latencies are not even put in an array
(:meth:`Samples.since`).
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
_SMALL = 64
"""Up to this many samples are bucketed in Python. Back to back numpy is the cheaper from about
16 samples on, but chunks this small come at low rates, after the thread slept, where Python
is (bucketing one chunk into two recorders, median CPU with a 10 ms sleep before each: 16
samples 103 against 187 us, 64 samples 170 against 194)."""


def _bucket(ms: float) -> int:
    if ms <= _LOW_MS:
        return 0
    return min(math.ceil(math.log(ms / _LOW_MS) / _LOG_RATIO), _BUCKETS - 1)


class Samples:
    """Latencies (ms) bucketed once, to be added to several recorders."""

    __slots__ = ("bins", "count", "max_ms", "sum_ms")

    def __init__(self, ms: np.ndarray) -> None:
        n = int(ms.size)
        self.bins: dict[int, int] | np.ndarray
        """Samples per bucket: a dict of the buckets used (a few samples), or every bucket's
        count (many)."""
        if n <= _SMALL:
            self._bucket_few(ms.tolist())
            return
        self.count = n
        clipped = np.maximum(ms, _LOW_MS)
        idx = np.minimum(np.ceil(np.log(clipped / _LOW_MS) / _LOG_RATIO), _BUCKETS - 1)
        self.bins = np.bincount(idx.astype(np.int64), minlength=_BUCKETS)
        self.sum_ms = float(ms.sum())
        self.max_ms = float(ms.max())

    @classmethod
    def since(cls, now_ms: float, ts_ms: list[int]) -> Samples:
        """The latencies from each event time in ``ts_ms`` to ``now_ms``."""
        if len(ts_ms) <= _SMALL:
            samples = cls.__new__(cls)
            samples._bucket_few([now_ms - t for t in ts_ms])
            return samples
        return cls(now_ms - np.asarray(ts_ms, dtype=np.float64))

    def _bucket_few(self, values: list[float]) -> None:
        self.count = len(values)
        bins: dict[int, int] = {}
        for v in values:
            b = _bucket(v)
            bins[b] = bins.get(b, 0) + 1
        self.bins = bins
        self.sum_ms = math.fsum(values) if values else 0.0
        self.max_ms = max(values, default=0.0)


class LatencyRecorder:
    """Millisecond samples in log buckets; percentiles and Prometheus buckets from them."""

    def __init__(self) -> None:
        self._counts = np.zeros(_BUCKETS, dtype=np.int64)
        self.count = 0
        self.sum_ms = 0.0
        self.max_ms = 0.0

    def record(self, ms: float) -> None:
        self._counts[_bucket(ms)] += 1
        self.count += 1
        self.sum_ms += ms
        if ms > self.max_ms:
            self.max_ms = ms

    def record_many(self, ms: np.ndarray) -> None:
        """A whole batch at once."""
        self.add(Samples(ms))

    def add(self, samples: Samples) -> None:
        """Samples bucketed already (the same chunk goes to several recorders)."""
        if not samples.count:
            return
        bins = samples.bins
        if isinstance(bins, dict):
            counts = self._counts
            for b, n in bins.items():
                counts[b] += n
        else:
            self._counts += bins
        self.count += samples.count
        self.sum_ms += samples.sum_ms
        if samples.max_ms > self.max_ms:
            self.max_ms = samples.max_ms

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
