"""Latency recorders: a chunk bucketed once (in Python when small, numpy when large) lands in
the same buckets as one sample at a time."""

from __future__ import annotations

import numpy as np

from streaming.observability.latency import LatencyRecorder, Samples


def test_chunks_of_any_size_bucket_as_single_samples_do() -> None:
    rng = np.random.default_rng(7)
    ms = np.concatenate([rng.lognormal(3, 2, 5000), [0.0, 0.01, 1e-9, 4e6, 1e12]])
    one_by_one = LatencyRecorder()
    for v in ms:
        one_by_one.record(float(v))
    for size in (1, 5, 16, 17, 64, 65, 300, ms.size):
        a, b = LatencyRecorder(), LatencyRecorder()
        for i in range(0, ms.size, size):
            samples = Samples(ms[i : i + size])
            a.add(samples)  # one chunk, two recorders (the worker's and the version's)
            b.add(samples)
        for rec in (a, b):
            assert rec.count == one_by_one.count == ms.size
            assert np.array_equal(rec._counts, one_by_one._counts), size
            assert rec.max_ms == one_by_one.max_ms
            assert abs(rec.sum_ms - one_by_one.sum_ms) <= 1e-9 * one_by_one.sum_ms
        assert a.percentile(99) == one_by_one.percentile(99)


def test_an_empty_chunk_changes_nothing() -> None:
    rec = LatencyRecorder()
    rec.record_many(np.empty(0))
    rec.add(Samples(np.empty(0)))
    assert rec.count == 0 and rec.max_ms == 0.0 and np.isnan(rec.percentile(50))


def test_latencies_since_event_times_bucket_as_the_array_of_them_does() -> None:
    rng = np.random.default_rng(11)
    now_ms = 1_764_000_000_000.0
    for size in (0, 1, 21, 64, 65, 2000):
        ts_ms = (now_ms - rng.lognormal(3, 1.5, size)).astype(np.int64).tolist()
        a, b = LatencyRecorder(), LatencyRecorder()
        a.add(Samples.since(now_ms, ts_ms))
        b.add(Samples(now_ms - np.asarray(ts_ms, dtype=np.float64)))
        assert np.array_equal(a._counts, b._counts), size
        assert (a.count, a.max_ms) == (b.count, b.max_ms) == (size, b.max_ms)
        assert abs(a.sum_ms - b.sum_ms) <= 1e-9 * max(b.sum_ms, 1.0)
