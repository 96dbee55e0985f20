"""The telemetry record's score summary: exact where it is cheap, bounded where it is not."""

from __future__ import annotations

import json

import numpy as np

from streaming.observability.telemetry import ScoreSummary


def test_mean_and_flagged_share_count_every_finite_score() -> None:
    summary = ScoreSummary(threshold=0.5, cap=16)
    rng = np.random.default_rng(1)
    batches = [rng.random(n).astype(np.float32) for n in (1, 7, 250, 256, 3, 1000)]
    batches[2][:5] = np.nan  # a flaky model: dead-lettered, never summarised
    batches[3][0] = np.inf
    for b in batches:
        summary.add(b)
    every = np.concatenate(batches)
    finite = every[np.isfinite(every)]
    out = summary.summary()
    assert summary.count == finite.size
    assert out["mean"] == round(float(finite.astype(np.float64).mean()), 6)
    assert out["flagged_share"] == round(float((finite >= 0.5).mean()), 6)
    json.dumps(out, allow_nan=False)  # the record stays valid JSON


def test_quantiles_are_exact_below_the_cap_and_close_above_it() -> None:
    rng = np.random.default_rng(2)
    small = rng.random(500).astype(np.float32)
    exact = ScoreSummary(0.5, cap=4096)
    exact.add(small)
    q = np.quantile(small, [0.5, 0.9, 0.99])
    assert [exact.summary()[k] for k in ("p50", "p90", "p99")] == [round(float(v), 6) for v in q]

    big = rng.beta(0.5, 8.0, size=200_000).astype(np.float32)  # skewed, like fraud scores
    thinned = ScoreSummary(0.5)
    for i in range(0, big.size, 250):
        thinned.add(big[i : i + 250])
    assert thinned._n_kept <= 2 * thinned.cap
    out = thinned.summary()
    # judged by rank: the share of all 200,000 scores at or below each estimate
    for key, level, slack in (("p50", 0.50, 0.02), ("p90", 0.90, 0.01), ("p99", 0.99, 0.004)):
        rank = float((big <= out[key]).mean())
        assert abs(rank - level) <= slack, (key, out[key], rank)


def test_the_sample_is_every_stride_th_score_across_batches() -> None:
    summary = ScoreSummary(0.5, cap=8)
    stream = np.arange(1000, dtype=np.float32)
    for i in range(0, 1000, 37):  # batch edges that do not line up with the stride
        summary.add(stream[i : i + 37])
    kept = np.concatenate(summary._kept)
    stride = summary._stride
    assert stride > 1
    assert np.array_equal(kept, stream[::stride][: kept.size])
