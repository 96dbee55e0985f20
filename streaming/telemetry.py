"""A version's telemetry record (DESIGN.md, telemetry topic): what its inference thread did
over the last interval, for dashboards and the rollout monitor."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from streaming.config import PipelineConfig
from streaming.versions import ModelVersion


def take_record(
    version: ModelVersion, cfg: PipelineConfig, worker_id: str
) -> dict[str, Any] | None:
    """The record for the interval now ended and a fresh count, or None before the interval
    is up or when the version did nothing in it."""
    tele = version.telemetry
    now = time.monotonic()
    started = tele.setdefault("_since", now)
    if now - started < cfg.worker.telemetry_interval_s or not (
        tele.get("batches") or tele.get("shadow_events") or tele.get("errors")
    ):
        return None
    scores = np.concatenate(tele.pop("scores", [np.empty(0, np.float32)]))
    batches = tele.get("batches", 0)
    record: dict[str, Any] = {
        "worker": worker_id,
        "pipeline": cfg.name,
        "model": cfg.model.name,
        "version": version.config.version,
        "interval_s": round(now - started, 3),
        "ts_ms": int(time.time() * 1000),
        "batches": batches,
        "events": tele.get("events", 0),
        "batch_size_mean": round(tele.get("events", 0) / max(batches, 1), 2),
        "batch_size_max": tele.get("max_batch", 0),
        "queue_delay_max_ms": round(tele.get("queue_delay_max_s", 0.0) * 1000, 3),
        "inference_ms_mean": round(tele.get("inference_s", 0.0) / max(batches, 1) * 1000, 4),
        "shadow_events": tele.get("shadow_events", 0),
        "errors": tele.get("errors", 0),
        "score": score_summary(scores, cfg.model.threshold),
    }
    if version.sketch is not None:
        record["feature_counts"] = version.sketch.take()
    version.telemetry = {"_since": now}
    return record


def score_summary(scores: np.ndarray, threshold: float) -> dict[str, float]:
    if scores.size == 0:
        return {}
    q = np.quantile(scores, [0.5, 0.9, 0.99])
    return {
        "mean": round(float(scores.mean()), 6),
        "p50": round(float(q[0]), 6),
        "p90": round(float(q[1]), 6),
        "p99": round(float(q[2]), 6),
        "flagged_share": round(float((scores >= threshold).mean()), 6),
    }
