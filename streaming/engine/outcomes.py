"""What the sink's delivery reports mean to the worker: counts and latencies when outputs are
durable, a fatal fault when one could not be delivered.

Runs only inside delivery callbacks, which every sink runs one at a time (on the Kafka sink's
delivery thread), so the counts it writes in WorkerStats and on each version have one writer.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from streaming.commit.delivery import ChunkDelivery
from streaming.config import PipelineConfig
from streaming.engine.types import Rejection
from streaming.engine.versions import ModelVersion
from streaming.errors import Faults
from streaming.kafka.refusals import SETUP, classify, setup_fix
from streaming.observability.latency import Samples
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import WorkerStats

log = logging.getLogger("streaming.worker")


class Outcomes:
    def __init__(
        self, cfg: PipelineConfig, stats: WorkerStats, metrics: WorkerMetrics, faults: Faults
    ) -> None:
        pipeline = self._pipeline = cfg.name
        self._predictions_topic = cfg.topics.predictions
        self._stats = stats
        self._metrics = metrics
        self._faults = faults
        self._dead_letters = metrics.dead_letters
        self._delivery_errors = metrics.delivery_errors.labels(pipeline, "?")

    def predictions(
        self, version: ModelVersion, delivery: ChunkDelivery, acked_ms: float | None
    ) -> None:
        """All predictions of a chunk are durable (their offsets are acked already), the last
        at ``acked_ms`` (epoch ms; None: a delivery failed)."""
        if acked_ms is None:
            self.failed(delivery.describe(), delivery.error, self._predictions_topic)
            return
        stats = self._stats
        stats.predictions += delivery.size
        stats.last_output = time.monotonic()
        ts_ms = delivery.ts_ms
        samples = Samples.since(acked_ms, ts_ms)
        stats.end_to_end_ms.add(samples)
        steady_from = stats.steady_from_ms
        if steady_from is not None:  # the demo's: only events after its warm-up
            steady = [t for t in ts_ms if t >= steady_from]
            same = len(steady) == len(ts_ms)
            stats.steady_end_to_end_ms.add(samples if same else Samples.since(acked_ms, steady))
        version.end_to_end_ms.add(samples)
        version.predictions_metric.inc(delivery.size)

    def dead_letter(self, rejection: Rejection) -> None:
        """A dead letter is durable."""
        stats = self._stats
        stats.dead_letters[rejection.stage] += 1
        stats.last_output = time.monotonic()
        self._dead_letters.labels(self._pipeline, rejection.stage, rejection.reason_class).inc()

    def failed(self, what: str, err: Any, topic: str) -> None:
        """After librdkafka's own retries. The ledger already holds the commit point back.
        A setup no retry fixes (topic gone, not authorized) stops the worker with exit 2 and
        the fix; anything else with exit 1, so that a restart reprocesses from the commit."""
        self._stats.delivery_errors += 1
        self._delivery_errors.inc()
        if classify(err) == SETUP:
            reason = f"cannot write to topic {topic}: {err}; {setup_fix(err)}"
            self._faults.report(reason, exit_code=2)
        else:
            self._faults.report(f"delivery failed for {what} on {topic}: {err}")
        log.error("delivery failed for %s on %s: %s", what, topic, err)
