"""Whether a benchmark's pairs meet a target, or are too few to say.

A median of alternating pairs moves with the host's noise: on this machine single pairs of
the same two commands ranged 0.77-1.29, so "median 1.07 against a target of 1.00" alone does
not say whether the target is missed. The order statistics of the pairs bound the true median
with no assumption about the noise's shape (the sign test's interval): with n pairs, the k-th
smallest and k-th largest ratio enclose it with probability 1 - 2 P(Binomial(n, 1/2) < k).
A target is met when the whole interval is on its right side, missed when the whole interval
is on the wrong side, and undecided otherwise, which says that more pairs are needed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

CONFIDENCE = 0.90
"""The least coverage asked of the interval."""


@dataclass(frozen=True)
class MedianInterval:
    median: float
    low: float
    high: float
    coverage: float
    """The probability that the interval holds the true median (at least CONFIDENCE when
    there are enough pairs; below it, the widest interval there is: min to max)."""


def median_interval(values: list[float], confidence: float = CONFIDENCE) -> MedianInterval:
    """The median of ``values`` and the narrowest order-statistic interval around it whose
    coverage is at least ``confidence`` (min to max when even that falls short)."""
    if not values:
        raise ValueError("no values: a benchmark with no pairs has no median")
    ordered = sorted(values)
    n = len(ordered)
    k = 1
    while k + 1 <= (n + 1) // 2 and _coverage(n, k + 1) >= confidence:
        k += 1
    return MedianInterval(
        statistics.median(ordered), ordered[k - 1], ordered[n - k], _coverage(n, k)
    )


def _coverage(n: int, k: int) -> float:
    """P(the k-th smallest <= true median <= the k-th largest) for n values."""
    below = sum(math.comb(n, i) for i in range(k)) / 2**n
    return max(0.0, 1.0 - 2.0 * below)


def verdict(
    interval: MedianInterval,
    target: float,
    higher_is_better: bool,
    confidence: float = CONFIDENCE,
) -> str:
    """``met``, ``missed`` or ``undecided`` for a target the median should reach
    (``higher_is_better``: at least ``target``, else at most ``target``). Too few pairs for
    the confidence (4 or fewer at 90%) decide nothing."""
    if interval.coverage < confidence:
        return "undecided"
    good = (lambda v: v >= target) if higher_is_better else (lambda v: v <= target)
    if good(interval.low) and good(interval.high):
        return "met"
    if not good(interval.low) and not good(interval.high):
        return "missed"
    return "undecided"


def target_line(
    name: str, values: list[float], target: float | None, higher_is_better: bool
) -> str:
    """One line: the median, its interval and coverage, min and max, and the verdict against
    ``target`` (None: no target, no verdict). NaN values (runs too short) are left out."""
    ok = [v for v in values if v == v]
    head = (
        name
        if target is None
        else f"{name} (target {'>=' if higher_is_better else '<='} {target:.2f})"
    )
    if not ok:
        return f"{head}: n/a (runs too short to measure)"
    iv = median_interval(ok)
    line = (
        f"{head}: median {iv.median:.2f} ({iv.coverage:.0%} interval {iv.low:.2f}-"
        f"{iv.high:.2f}; min {min(ok):.2f}, max {max(ok):.2f})"
    )
    if target is None:
        return f"{line} over {len(ok)} pairs"
    decided = verdict(iv, target, higher_is_better)
    if decided == "undecided":
        decided = f"undecided by {len(ok)} pair{'' if len(ok) == 1 else 's'}"
    return f"{line}: {decided}"
