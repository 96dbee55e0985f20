"""Where a version's scores go: the primary output or a shadow. Scoring has one path; the two
variants differ only in the topic, in what a refused row becomes, and in what is counted.

- primary: predictions topic; each row's input offset waits for its prediction (one delivery
  counter per chunk); a refused row is dead-lettered; counted in metrics and totals.
- shadow: shadow topic, best effort; nothing in the ledger; a refused row is only counted as an
  error in telemetry, never a dead letter (the primary path answers for the event).

Both are called on the version's inference thread, which owns what they count.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from streaming.commit.delivery import ChunkDelivery
from streaming.config import PipelineConfig
from streaming.engine.dead_letters import DeadLetters
from streaming.engine.fitting import OutputFit
from streaming.engine.outcomes import Outcomes
from streaming.engine.types import STAGE_PUBLISH, Chunk, Rejection, Sink
from streaming.engine.versions import ModelVersion
from streaming.kafka.limits import OutputLimits
from streaming.observability.metrics import WorkerMetrics
from streaming.tracing.stamps import TRACEPARENT

if TYPE_CHECKING:
    from streaming.tracing.tracer import Tracer


class PrimaryOutput:
    def __init__(
        self,
        cfg: PipelineConfig,
        sink: Sink,
        dead_letters: DeadLetters,
        outcomes: Outcomes,
        metrics: WorkerMetrics,
        limits: OutputLimits,
        tracer: Tracer | None = None,
    ) -> None:
        self.topic = cfg.topics.predictions
        self._tracer = tracer
        self._pipeline, self._model = cfg.name, cfg.model.name
        self._sink = sink
        self._dead_letters = dead_letters
        self._outcomes = outcomes
        self._metrics = metrics
        self._fit = output_fit(cfg, limits, self.topic)
        self._dropped = metrics.headers_dropped.labels(cfg.name, self.topic)
        self._series: dict[str, tuple[Any, Any, Any]] = {}
        """Per version: its batch size, queue delay and inference time series (a labels()
        lookup takes a lock and a dict per call; three a batch showed in low-rate profiles)."""

    def account(
        self, version: ModelVersion, rows: int, took: float, queue_delay: float, failed: bool
    ) -> None:
        series = self._series.get(version.name)
        if series is None:
            labels = (self._pipeline, self._model, version.name)
            m = self._metrics
            series = self._series[version.name] = (
                m.batch_size.labels(*labels),
                m.queue_delay.labels(*labels),
                m.inference_time.labels(*labels),
            )
        batch_size, delay, inference = series
        batch_size.observe(rows)
        delay.observe(queue_delay)
        inference.observe(took)
        totals = version.totals
        totals.batches += 1
        totals.rows += rows
        totals.inference_s += took
        version.interval.add_batch(rows, took, queue_delay)
        if failed:
            version.interval.errors += rows

    def reject(
        self, version: ModelVersion, chunk: Chunk, rows: Sequence[int], rejection: Rejection
    ) -> None:
        self._dead_letters.rows(chunk, rows, rejection)

    def publish(
        self, version: ModelVersion, c: Chunk, rows: range | list[int], payloads: list[bytes]
    ) -> None:
        """Produce a chunk's predictions with one delivery counter for the whole chunk."""
        keys, headers = c.keys, c.headers
        fitted = self._fit.fit(rows, payloads, keys, headers)
        if fitted.dropped:
            self._dropped.inc(fitted.dropped)
        for i in fitted.too_large:
            self._dead_letters.row(c, i, self._too_large(payloads[i], keys[i]))
        rows = fitted.rows
        if not rows:
            return
        if isinstance(rows, range):
            ledgers, offsets, ts, sent = c.ledgers, c.offsets, c.ts_ms, payloads
        else:
            ledgers = [c.ledgers[i] for i in rows]
            offsets = [c.offsets[i] for i in rows]
            ts = [c.ts_ms[i] for i in rows]
            sent = [payloads[i] for i in rows]
        delivery = ChunkDelivery(
            ledgers,
            offsets,
            ts,
            partial(self._outcomes.predictions, version)
            if self._tracer is None
            else partial(self._acked, version, c, rows),
            partial(self._refused, c, rows),
            sent,
        )
        report = delivery.report
        produce = self._sink.produce
        topic = self.topic
        made = c.new_traceparents
        if made is not None:  # tracing: events that came without a trace get the worker's
            changed = fitted.changed
            for i in rows:
                h = changed.get(i, headers[i]) if changed else headers[i]
                tp = made[i]
                if tp is not None:  # inline: this runs for every prediction while tracing
                    h = [*h, (TRACEPARENT, tp)] if h else [(TRACEPARENT, tp)]
                produce(topic, payloads[i], keys[i], h, report)
        elif fitted.changed:
            for i in rows:
                produce(topic, payloads[i], keys[i], fitted.headers(headers, i), report)
        else:
            self._sink.produce_rows(topic, rows, payloads, keys, headers, report)

    def _acked(
        self,
        version: ModelVersion,
        c: Chunk,
        rows: range | list[int],
        delivery: ChunkDelivery,
        acked_ms: float | None,
    ) -> None:
        """Delivery thread, tracing on: account as usual, then let the tracer pick rows."""
        self._outcomes.predictions(version, delivery, acked_ms)
        if acked_ms is not None and self._tracer is not None:
            latencies_ms = acked_ms - np.asarray(delivery.ts_ms, dtype=np.float64)
            self._tracer.predictions(c, rows, latencies_ms)

    def _too_large(self, payload: bytes, key: bytes | None) -> Rejection:
        return Rejection(
            STAGE_PUBLISH,
            f"the prediction ({len(payload)} bytes, key {len(key or b'')} bytes) is larger "
            f"than {self.topic} takes ({self._fit.limit} bytes: the smaller of the producer's "
            "message.max.bytes and the topic's max.message.bytes, less framing)",
            "too_large",
        )

    def _refused(
        self, c: Chunk, rows: range | list[int], positions: list[int], errors: list
    ) -> None:
        """Delivery thread: the broker refused these predictions; dead letters take over."""
        for j, err in zip(positions, errors, strict=True):
            self._dead_letters.refused(c, rows[j], err, self.topic)


class ShadowOutput:
    def __init__(self, cfg: PipelineConfig, sink: Sink, limits: OutputLimits) -> None:
        self.topic = cfg.topics.shadow_topic
        self._sink = sink
        self._fit = output_fit(cfg, limits, self.topic)

    def account(
        self, version: ModelVersion, rows: int, took: float, queue_delay: float, failed: bool
    ) -> None:
        if not failed:
            version.interval.shadow_events += rows
            version.interval.shadow_inference_s += took

    def reject(
        self, version: ModelVersion, chunk: Chunk, rows: Sequence[int], rejection: Rejection
    ) -> None:
        version.interval.errors += len(rows)

    def publish(
        self, version: ModelVersion, c: Chunk, rows: range | list[int], payloads: list[bytes]
    ) -> None:
        keys, headers = c.keys, c.headers
        fitted = self._fit.fit(rows, payloads, keys, headers)
        version.interval.errors += len(fitted.too_large)
        produce = self._sink.produce
        for i in fitted.rows:
            produce(self.topic, payloads[i], keys[i], fitted.headers(headers, i), None)


def output_fit(cfg: PipelineConfig, limits: OutputLimits, topic: str) -> OutputFit:
    """A prediction's payload is its event id (bounded by the input's size) and ~300 bytes."""
    return OutputFit(
        limits.for_topic(topic), cfg.worker.output_header_bytes, cfg.pipeline.max_event_bytes + 512
    )
