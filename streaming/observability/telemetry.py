"""A version's telemetry record (README, Topics and records): what its inference thread did
over the last interval, for dashboards and the rollout monitor."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streaming.config import PipelineConfig
from streaming.observability.drift import FeatureSketch


@dataclass(slots=True)
class IntervalCounts:
    """What a version's inference thread did since its last telemetry record. Written and
    replaced only by that thread (the record is built there too), so it takes no lock."""

    since: float = field(default_factory=time.monotonic)
    batches: int = 0
    events: int = 0
    max_batch: int = 0
    inference_s: float = 0.0
    queue_delay_max_s: float = 0.0
    errors: int = 0
    shadow_events: int = 0
    shadow_inference_s: float = 0.0
    scores: ScoreSummary | None = None

    def add_batch(self, rows: int, inference_s: float, queue_delay_s: float) -> None:
        self.batches += 1
        self.events += rows
        self.max_batch = max(self.max_batch, rows)
        self.inference_s += inference_s
        self.queue_delay_max_s = max(self.queue_delay_max_s, queue_delay_s)

    def add_scores(self, scores: np.ndarray, threshold: float, finite_mask: np.ndarray) -> None:
        """Count a batch's scores into the interval's summary."""
        if self.scores is None:
            self.scores = ScoreSummary(threshold)
        self.scores.add(scores, finite_mask)

    def due(self, now: float, interval_s: float) -> bool:
        """The interval is up and something happened in it."""
        return now - self.since >= interval_s and bool(
            self.batches or self.shadow_events or self.errors
        )


def build_record(
    counts: IntervalCounts,
    version: str,
    sketch: FeatureSketch | None,
    cfg: PipelineConfig,
    worker_id: str,
    now: float,
) -> dict[str, Any]:
    """The telemetry record of an interval that ended at ``now`` (monotonic)."""
    batches = counts.batches
    record: dict[str, Any] = {
        "worker": worker_id,
        "pipeline": cfg.name,
        "model": cfg.model.name,
        "version": version,
        "interval_s": round(now - counts.since, 3),
        "ts_ms": int(time.time() * 1000),
        "batches": batches,
        "events": counts.events,
        "batch_size_mean": round(counts.events / max(batches, 1), 2),
        "batch_size_max": counts.max_batch,
        "queue_delay_max_ms": round(counts.queue_delay_max_s * 1000, 3),
        "inference_ms_mean": round(counts.inference_s / max(batches, 1) * 1000, 4),
        "shadow_events": counts.shadow_events,
        "errors": counts.errors,
        "score": counts.scores.summary() if counts.scores is not None else {},
    }
    if sketch is not None:
        record["feature_counts"] = sketch.take()
    return record


class ScoreSummary:
    """The scores of one interval: mean and flagged share over every finite score, quantiles
    over an evenly thinned sample of at most ``2 * cap`` of them.

    The inference thread builds the record between batches, so its cost is latency for the
    next batch: quantiles over every score of a busy second (35,000 of them) took 3-5 ms there,
    a sample costs the same at any rate. Non-finite scores (dead-lettered) are left out, so the
    record stays valid JSON.
    """

    def __init__(self, threshold: float, cap: int = 4096) -> None:
        self.threshold = threshold
        self.cap = cap
        self.count = 0
        self.total = 0.0
        self.flagged = 0
        self._stride = 1
        self._kept: list[np.ndarray] = []
        self._n_kept = 0

    def add(self, scores: np.ndarray, finite_mask: np.ndarray | None = None) -> None:
        """``finite_mask``: ``np.isfinite(scores)`` if the caller has it already."""
        mask = np.isfinite(scores) if finite_mask is None else finite_mask
        finite = scores if mask.all() else scores[mask]
        if finite.size == 0:
            return
        # every stride-th score of the interval: positions that are multiples of the stride
        first = -self.count % self._stride
        self.count += finite.size
        self.total += float(finite.sum(dtype=np.float64))
        self.flagged += int(np.count_nonzero(finite >= self.threshold))
        part = finite[first :: self._stride]
        self._kept.append(part)
        self._n_kept += part.size
        if self._n_kept > 2 * self.cap:
            kept = np.concatenate(self._kept)[::2]  # starts at position 0: stays aligned
            self._kept, self._n_kept = [kept], kept.size
            self._stride *= 2

    def summary(self) -> dict[str, float]:
        if self.count == 0:
            return {}
        q = np.quantile(np.concatenate(self._kept), [0.5, 0.9, 0.99])
        return {
            "mean": round(self.total / self.count, 6),
            "p50": round(float(q[0]), 6),
            "p90": round(float(q[1]), 6),
            "p99": round(float(q[2]), 6),
            "flagged_share": round(self.flagged / self.count, 6),
        }


def warm_up() -> None:
    """numpy's quantile pays ~10 ms on its first call: pay it at start, not in the first
    record (that was a 29 ms stall of the first inference thread)."""
    summary = ScoreSummary(0.5)
    summary.add(np.linspace(0.0, 1.0, 64, dtype=np.float32))
    summary.summary()
