"""The verdict of a benchmark's pairs (loadtests.pair_verdict): the median's interval holds the
true median as often as it says, and a target is called met or missed only when the whole
interval is on one side of it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from loadtests.pair_verdict import median_interval, target_line, verdict


def test_five_pairs_span_min_to_max_and_ten_drop_the_extremes() -> None:
    five = median_interval([1.3, 0.9, 1.1, 1.0, 1.2])
    assert (five.median, five.low, five.high) == (1.1, 0.9, 1.3)
    assert five.coverage == pytest.approx(1 - 2 / 32)
    ten = median_interval([float(v) for v in range(10, 0, -1)])
    assert (ten.low, ten.high) == (2.0, 9.0)
    assert ten.coverage == pytest.approx(1 - 2 * 11 / 1024)


def test_the_interval_holds_the_true_median_as_often_as_it_says() -> None:
    """Skewed noise (lognormal, true median 1.0): over many simulated benchmarks the interval
    holds 1.0 in the share of them that its coverage states."""
    rng = np.random.default_rng(17)
    for n in (5, 10, 15):
        trials = rng.lognormal(0.0, 0.3, size=(20_000, n))
        intervals = [median_interval(list(t)) for t in trials]
        held = np.mean([iv.low <= 1.0 <= iv.high for iv in intervals])
        coverage = intervals[0].coverage
        assert coverage >= 0.90
        assert held == pytest.approx(
            coverage, abs=4 * math.sqrt(coverage * (1 - coverage) / 20_000)
        )


def test_met_missed_and_undecided() -> None:
    iv = median_interval([0.91, 0.95, 0.97, 0.99, 0.98])
    assert verdict(iv, 1.00, higher_is_better=False) == "met"
    assert verdict(iv, 0.90, higher_is_better=True) == "met"
    assert verdict(iv, 0.90, higher_is_better=False) == "missed"
    assert verdict(iv, 0.96, higher_is_better=False) == "undecided"


def test_four_pairs_decide_nothing() -> None:
    """Four pairs cannot reach 90%: even four ratios all under the target decide nothing."""
    iv = median_interval([0.5, 0.6, 0.7, 0.8])
    assert iv.coverage < 0.90
    assert verdict(iv, 1.00, higher_is_better=False) == "undecided"


def test_the_line_names_the_target_the_interval_and_the_verdict() -> None:
    line = target_line("p99", [1.07, 0.77, 1.29, 1.10, 0.95, float("nan")], 1.00, False)
    assert line == (
        "p99 (target <= 1.00): median 1.07 (94% interval 0.77-1.29; min 0.77, max 1.29): "
        "undecided by 5 pairs"
    )
    assert "n/a" in target_line("drain", [float("nan")], 0.90, True)
    with pytest.raises(ValueError, match="no pairs"):
        median_interval([])
