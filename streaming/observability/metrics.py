"""Prometheus metrics of a worker (names and labels are a contract: README, Operating).

Labels are bounded: pipeline, model, version, topic, partition, stage, reason class.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from streaming.observability.latency import LatencyRecorder

# Batches are 1..max_batch_size rows; powers of two show how full they run.
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
# Fraud decisions are wanted within tens of milliseconds: resolve 0.5 ms .. 10 s.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.035,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
FAST_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)


class WorkerMetrics:
    """All metrics of one worker process, in their own registry.

    In a pool (streaming/pool) the children run prometheus' multiprocess mode: counters and
    histograms are summed over the children by the supervisor; each gauge says how
    (``multiprocess_mode``; ignored by a single process). In-flight events and paused
    partitions add up over the children; lag per partition and routing weights do not (one
    child owns a partition; every child applies the same weights), so they take the max.
    """

    def __init__(self, pipeline: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.pipeline = pipeline
        r = self.registry
        v = ("pipeline", "model", "version")
        self.events_consumed = Counter(
            "streaming_events_consumed_total",
            "Input events taken from Kafka.",
            ("pipeline", "topic"),
            registry=r,
        )
        self.predictions = Counter(
            "streaming_predictions_total", "Predictions acknowledged by the broker.", v, registry=r
        )
        self.decisions = Counter(
            "streaming_decisions_total",
            "Predictions published by decision (approve, review, decline): counted when the "
            "prediction is handed to the producer, before the broker acknowledges it.",
            ("pipeline", "model", "decision"),
            registry=r,
        )
        self.dead_letters = Counter(
            "streaming_dead_letters_total",
            "Dead letters acknowledged by the broker.",
            ("pipeline", "stage", "reason"),
            registry=r,
        )
        self.delivery_errors = Counter(
            "streaming_delivery_errors_total",
            "Outputs the producer failed to deliver.",
            ("pipeline", "topic"),
            registry=r,
        )
        self.batch_size = Histogram(
            "streaming_batch_size",
            "Rows per inference batch.",
            v,
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.queue_delay = Histogram(
            "streaming_queue_delay_seconds",
            "Time a batch's oldest row waited for the model.",
            v,
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self.inference_time = Histogram(
            "streaming_inference_seconds",
            "Model time per batch.",
            v,
            buckets=FAST_BUCKETS,
            registry=r,
        )
        self._end_to_end: dict[tuple[str, str], LatencyRecorder] = {}
        r.register(_EndToEndCollector(self))
        self.in_flight = Gauge(
            "streaming_in_flight_events",
            "Events consumed whose outputs are not yet durable.",
            ("pipeline",),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.paused_partitions = Gauge(
            "streaming_paused_partitions",
            "Partitions paused for backpressure.",
            ("pipeline",),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.consumer_lag = Gauge(
            "streaming_consumer_lag",
            "High watermark minus position, per assigned partition.",
            ("pipeline", "topic", "partition"),
            registry=r,
            multiprocess_mode="livemax",
        )
        self.routing_weight = Gauge(
            "streaming_routing_weight",
            "Routing weight in force per model version.",
            v,
            registry=r,
            multiprocess_mode="livemax",
        )
        self.control_refused = Counter(
            "streaming_control_refused_total",
            "Control records refused (the weights stayed).",
            ("pipeline",),
            registry=r,
        )
        self.shadow_shed = Counter(
            "streaming_shadow_shed_total",
            "Shadow rows dropped because the shadow was behind.",
            v,
            registry=r,
        )
        self.headers_dropped = Counter(
            "streaming_output_headers_dropped_total",
            "Input headers left off outputs because they were over the header budget.",
            ("pipeline", "topic"),
            registry=r,
        )
        self.state_restore = Histogram(
            "streaming_state_restore_seconds",
            "Time to restore one assigned partition's state stage from its changelog.",
            ("pipeline",),
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.state_changelog_records = Counter(
            "streaming_state_changelog_records_total",
            "Records written to the state changelog (changed keys, tombstones, partition "
            "records), at each commit.",
            ("pipeline",),
            registry=r,
        )
        self.commits = Counter(
            "streaming_offset_commits_total", "Offset commits sent.", ("pipeline",), registry=r
        )
        self.traces = Counter(
            "streaming_traces_total",
            "Events traced after their outputs were acked, by why (slow, sampled upstream, "
            "ratio, dead_letter), and events that qualified but were over tracing.max_per_s "
            "(over_budget).",
            ("pipeline", "kept"),
            registry=r,
        )
        self.trace_spans_sent = Counter(
            "streaming_trace_spans_sent_total",
            "Spans the OTLP endpoint accepted (tracing.enabled).",
            ("pipeline",),
            registry=r,
        )
        self.trace_spans_dropped = Counter(
            "streaming_trace_spans_dropped_total",
            "Spans dropped: queue_full (the exporter was behind) or export_failed (the "
            "collector was down, slow or refused them). Export never waits for room.",
            ("pipeline", "reason"),
            registry=r,
        )

    def track_end_to_end(self, model: str, version: str, recorder: LatencyRecorder) -> None:
        """Export ``recorder`` as streaming_end_to_end_seconds{model, version}.

        The delivery path records latencies vectorised per chunk; a Prometheus histogram
        observed per event would cost more than producing the prediction.
        """
        self._end_to_end[(model, version)] = recorder

    def end_to_end_snapshot(self) -> list[list[object]]:
        """[model, version, cumulative counts at LATENCY_BUCKETS, count, sum in s] per
        version: what a pool child hands its supervisor, which sums them over the children
        (the recorders live in the child's memory, outside prometheus' multiprocess files)."""
        bounds_ms = [b * 1000.0 for b in LATENCY_BUCKETS]
        return [
            [model, version, rec.cumulative_at(bounds_ms), rec.count, rec.sum_ms / 1000.0]
            for (model, version), rec in list(self._end_to_end.items())
        ]


class _EndToEndCollector(Collector):
    """streaming_end_to_end_seconds from the workers' latency recorders, at scrape time."""

    def __init__(self, metrics: WorkerMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[HistogramMetricFamily]:
        return [self._family()]

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(
            "streaming_end_to_end_seconds",
            "Event timestamp to acknowledged prediction.",
            labels=("pipeline", "model", "version"),
        )

    def collect(self) -> list[HistogramMetricFamily]:
        family = self._family()
        bounds_ms = [b * 1000.0 for b in LATENCY_BUCKETS]
        for (model, version), rec in list(self._metrics._end_to_end.items()):
            cumulative = rec.cumulative_at(bounds_ms)
            total = rec.count
            buckets = [(_fmt(b), c) for b, c in zip(LATENCY_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", total))
            family.add_metric(
                [self._metrics.pipeline, model, version], buckets, rec.sum_ms / 1000.0
            )
        return [family]


def _fmt(bound: float) -> str:
    return repr(float(bound))
