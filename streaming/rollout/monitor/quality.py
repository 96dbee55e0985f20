"""Quality of one version in one window from its labelled predictions, and the recall test.

Pure functions over numpy arrays, so that the monitor and an offline join compute the very
same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np

from streaming.rollout.monitor.labeljoin import QualityWindow


def average_precision(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Area under the precision-recall curve as average precision (the step-wise sum that
    scikit-learn's ``average_precision_score`` computes; no interpolation, which would
    overstate it); None without a positive label."""
    positives = int(labels.sum())
    if positives == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    # One threshold per distinct score: tied scores enter the curve together.
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / positives
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def window_quality(w: QualityWindow, threshold: float, *, final: bool) -> dict[str, Any]:
    """The quality record of one version and window (the contract on ``<telemetry>.quality``)."""
    n = len(w.events)
    scores = np.fromiter((s for s, _ in w.events.values()), np.float64, n)
    raw = [y for _, y in w.events.values()]
    known = np.fromiter((y is not None for y in raw), bool, n)
    y = np.fromiter((y or 0 for y in raw), np.int64, n)[known]
    flagged = scores[known] >= threshold
    tp = int(np.count_nonzero(flagged & (y == 1)))
    fp = int(np.count_nonzero(flagged & (y == 0)))
    fn = int(np.count_nonzero(~flagged & (y == 1)))
    tn = int(np.count_nonzero(~flagged & (y == 0)))
    ap = average_precision(scores[known], y)
    return {
        "version": w.version,
        "window_start_ms": w.start_ms,
        "window_end_ms": w.end_ms,
        "predictions": n,
        "flagged": int(np.count_nonzero(scores >= threshold)),
        "labelled": int(known.sum()),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": round(tp / (tp + fp), 5) if tp + fp else None,
        "recall": round(tp / (tp + fn), 5) if tp + fn else None,
        "pr_auc": round(ap, 5) if ap is not None else None,
        "final": final,
    }


@dataclass(frozen=True)
class RecallTest:
    """One-sided two-proportion z-test: is the canary's recall lower than the baseline's by
    more than ``max_drop``?

    Recall is a proportion among labelled frauds, and the two versions score disjoint
    traffic, so their frauds are two independent binomial samples. H0: drop <= max_drop;
    H1: drop > max_drop. Under H0 the proportions differ, so the variance is not pooled
    (the pooled form assumes equal proportions). A window fails only when z exceeds the
    ``confidence`` quantile: a canary is not rolled back on a drop chance explains, and at
    least ``min_labels`` frauds on each side keep the normal approximation honest.
    """

    max_drop: float
    confidence: float
    min_labels: int

    def judge(self, canary: dict[str, Any], baseline: dict[str, Any]) -> tuple[str, str]:
        """("fail" | "ok" | "insufficient", why) for two quality records of one window."""
        nc, nb = canary["tp"] + canary["fn"], baseline["tp"] + baseline["fn"]
        if nc < self.min_labels or nb < self.min_labels:
            return "insufficient", (
                f"{nc} labelled frauds (baseline {nb}) < monitor.min_labels ({self.min_labels})"
            )
        rc, rb = canary["tp"] / nc, baseline["tp"] / nb
        se = (rc * (1 - rc) / nc + rb * (1 - rb) / nb) ** 0.5
        drop = rb - rc
        z_crit = NormalDist().inv_cdf(self.confidence)
        z = (drop - self.max_drop) / se if se > 0 else (np.inf if drop > self.max_drop else 0.0)
        text = (
            f"recall {rc:.1%} of {nc} labelled frauds vs the baseline's {rb:.1%} of {nb}: "
            f"drop {drop:.1%}, z {z:.2f} against {z_crit:.2f} "
            f"(max drop {self.max_drop:.0%}, confidence {self.confidence:.0%})"
        )
        return ("fail" if z > z_crit else "ok"), text
