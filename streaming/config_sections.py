"""Sections of the pipeline config beside the scoring path: the monitor, the Schema Registry
and output formats, tracing, reason codes. Kept apart from streaming.config so each module
keeps one concern; streaming.config assembles them into PipelineConfig and re-exports them.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Strict(BaseModel):
    """Unknown keys fail (a typo names its path), and a loaded config is frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MonitorConfig(Strict):
    """``streaming monitor``: per-version windows, verdicts, drift, automatic rollback.

    A canary is judged against the baseline version in the same window, so that a change in
    the traffic itself (both versions move) is reported as drift, not blamed on the canary.
    """

    window_s: float = Field(default=60.0, ge=1, le=86_400)
    """Tumbling window length (by the prediction's scoring time)."""
    grace_s: float = Field(default=5.0, ge=0, le=3_600)
    """How long after a window's end late records are still counted before it is judged."""
    baseline: str | None = None
    """The version canaries are compared with; default: the highest weight in force."""
    min_events: int = Field(default=500, ge=1)
    """A version with fewer predictions in a window gets verdict ``insufficient``."""
    auto_rollback: bool = False
    """Set a failing canary's weight to 0 through the control topic (and say why in an alert)."""
    bad_windows: int = Field(default=2, ge=1, le=100)
    """Consecutive failing windows before a rollback: one noisy window is not enough."""
    max_score_psi: float = Field(default=0.25, gt=0)
    """PSI of a version's live scores against its training-time score histogram."""
    max_feature_psi: float = Field(default=0.25, gt=0)
    """PSI of the inputs against the training-time histograms: drift alerts only (the
    traffic changed; no version is to blame)."""
    max_flagged_delta: float = Field(default=0.05, gt=0, le=1)
    """Largest allowed difference between canary and baseline in the share of flagged events."""
    max_error_rate_delta: float = Field(default=0.01, gt=0, le=1)
    """Largest allowed excess of the canary's inference error rate over the baseline's."""
    max_p99_ratio: float = Field(default=2.0, gt=1)
    """Largest allowed canary/baseline ratio of p99 event-to-score latency ..."""
    min_p99_excess_ms: float = Field(default=20.0, ge=0)
    """... counted only when the canary's p99 is also this much above the baseline's."""
    group: str | None = None
    """Consumer group of the monitor; default ``<kafka.group>-monitor``."""
    labels: bool = False
    """Join the labels topic to the predictions and judge canaries on fraud caught too. Off
    by default: it costs a changelog write per prediction and per label (about 2,000 records/s
    of monitor on a shared 2-core machine), which slows the score-based windows too."""
    label_horizon_s: float = Field(default=90 * 86_400.0, gt=0)
    """How long a prediction waits for its label (and a label for its prediction); a window's
    quality is ``final`` once its end is this far in the past. Chargebacks take weeks."""
    min_labels: int = Field(default=30, ge=1)
    """Labelled frauds needed in both canary and baseline before recall is judged; fewer
    gives ``insufficient`` on labels, never ``ok``."""
    max_recall_drop: float = Field(default=0.10, gt=0, le=1)
    """Largest allowed drop of the canary's recall below the baseline's (absolute)."""
    recall_confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """Confidence of the one-sided two-proportion test that the drop exceeds the limit."""
    quality_interval_s: float = Field(default=5.0, gt=0)
    """How often changed windows are re-published on ``<telemetry>.quality``."""
    metrics_port: int | None = Field(default=None, ge=0, le=65_535)
    """Serve the monitor's Prometheus gauges (precision, recall, labelled share) here."""


class SchemaRegistryConfig(Strict):
    """The Confluent-compatible Schema Registry of the framed formats (streaming.formats)."""

    url: str = Field(min_length=1)
    """http(s)://host:port[,...]; ``STREAMING_SCHEMA_REGISTRY_URL`` overrides it. Credentials
    only from the file ``schema.registry.basic.auth.user.info`` in kafka.secrets_dir."""
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    """One request's timeout; a registry down mid-stream is retried with backoff, never
    answered with dead letters."""

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        for url in value.split(","):
            if not url.strip().startswith(("http://", "https://")):
                raise ValueError(
                    f"{url.strip()!r} is not an http(s) URL; write e.g. http://127.0.0.1:8081"
                )
        return value


class OutputsConfig(Strict):
    """How predictions are encoded."""

    format: Literal["json", "avro"] = "json"
    """``avro``: Confluent-framed Avro with a schema registered under
    ``<predictions topic>-value`` (needs ``schema_registry``)."""


class TracingConfig(Strict):
    """``tracing:``: OpenTelemetry spans, made after the fact for the events worth keeping.

    Off by default. The decision is taken when an event's outputs are acked (tail sampling):
    every dead-lettered event, every event slower than ``slow_ms``, every event whose incoming
    ``traceparent`` says sampled, and a ``ratio`` of the rest. The standard ``OTEL_*``
    variables (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``..._HEADERS``, ``OTEL_SERVICE_NAME``,
    ``OTEL_RESOURCE_ATTRIBUTES``) apply where a key here is left unset.
    """

    enabled: bool = False
    """Make and export spans; OpenTelemetry is imported only then."""
    endpoint: str | None = None
    """OTLP endpoint, e.g. ``http://otel-collector:4318`` (HTTP/protobuf; ``/v1/traces`` is
    added) or ``http://otel-collector:4317`` with ``protocol: grpc``. Unset: the ``OTEL_``
    variables, else the exporter's default (localhost)."""
    protocol: Literal["http/protobuf", "grpc"] | None = None
    """Unset: ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``, else
    ``http/protobuf``."""
    ratio: float = Field(default=0.001, ge=0, le=1)
    """Share of ordinary events (fast, delivered, not sampled upstream) kept."""
    slow_ms: float | Literal["auto"] = "auto"
    """Events slower than this (event time to acked output) are kept; ``auto``: the current
    p99 of the worker's end-to-end latency (so about 1% are kept as slow)."""
    service_name: str | None = None
    """The ``service.name`` resource attribute; unset: ``OTEL_SERVICE_NAME``, else
    ``streaming-<pipeline name>``."""
    new_trace_header: bool | Literal["traced"] = "traced"
    """Which predictions of events that came without a ``traceparent`` carry the one the
    worker starts (dead letters always do). ``traced``: those of the events picked as they
    are queued, by ``ratio`` or for being slower than the threshold already, flagged sampled
    (about ``max_per_s`` a second at most); an event found slow only at the ack has none.
    ``true``: every prediction (flags 00: sampled later). ``false``: none. Whatever the
    header, the prediction's ``event_id`` names the trace: its trace id is the MD5 of the
    event id. A header on every prediction costs librdkafka and the broker ~2-3 us of CPU per
    record here (measured: 4.2 -> 7.4 us per produced record), which alone put tracing's
    drain cost past 5% (README, Traces)."""
    max_per_s: float = Field(default=100.0, gt=0)
    """Slow and ratio-sampled events traced per second at most (dead letters and events
    sampled upstream are always traced). A backlog makes every event slower than the last
    p99; this bounds what tracing costs (~0.1 ms of CPU per traced event here)."""
    queue_spans: int = Field(default=20_000, ge=1, le=10_000_000)
    """Spans waiting for export at most; more are dropped and counted, never waited for."""
    export_timeout_s: float = Field(default=5.0, gt=0, le=300)
    """Longest one export request may take; a collector that is down costs dropped spans."""

    @field_validator("slow_ms")
    @classmethod
    def _slow_positive(cls, value: float | str) -> float | str:
        if value != "auto" and float(value) <= 0:
            raise ValueError("slow_ms must be > 0 ms, or 'auto' (the current p99)")
        return value


class ReasonCodeConfig(Strict):
    """One reason code: what an analyst reads, and the model features that form it."""

    text: str = Field(min_length=1)
    """Human-readable reason, e.g. "amount far above this card's 30-day average"."""
    features: tuple[str, ...] = Field(min_length=1)
    """Feature names of the model (its metadata's ``feature_names``), or patterns with ``*``
    (``category=*``); several features form one code, their attributions summed. Checked at
    start against the model: a name that matches no feature fails with its path."""


class UnmappedReasonConfig(Strict):
    """The code that gathers the attributions of every feature in no other code."""

    code: str = Field(min_length=1, max_length=64, pattern=r"^[A-Z][A-Z0-9_]*$")
    text: str = Field(min_length=1)


class ReasonsConfig(Strict):
    """Reason codes of explained predictions (streaming.explain).

    Each explained row's attributions (in logit space, from the training mean) are summed per
    code; the codes that push towards a positive score, largest first, are its reasons.
    """

    codes: dict[str, ReasonCodeConfig] = Field(min_length=1)
    """Code (upper case, e.g. ``AMOUNT_ABOVE_USUAL``) -> its text and features."""
    unmapped: UnmappedReasonConfig | None = None
    """Where features in no code go: None (the default) drops them, so that every reason
    names something an analyst can act on; or a code of their own (e.g. ``OTHER``)."""
    method: Literal["auto", "exact-linear", "integrated-gradients", "grad-x-input"] = "auto"
    """``auto``: exact for a linear model (coefficient x (x - mean)), integrated gradients
    for others. ``grad-x-input`` is cheaper and not complete (its sum is not the logit)."""
    tolerance: float = Field(default=1e-3, gt=0, le=1)
    """Integrated gradients: a row's grid is refined until |sum(attributions) - (logit f(x) -
    logit f(mean))| is at most this (or ``max_steps`` is reached)."""
    steps: int = Field(default=16, ge=1, le=4_096)
    """Integrated gradients: intervals of the first grid (each row costs steps + 1 model
    rows forward and backward)."""
    max_steps: int = Field(default=512, ge=1, le=65_536)
    """Integrated gradients: the finest grid a row is refined to (doubling from ``steps``)."""
    when: Literal["auto", "in-batch", "deferred"] = "auto"
    """When rows are explained. ``in-batch``: in their own batch, before it is published (one
    publish, nothing held). ``deferred``: after it, the rows to explain and the later rows of
    their keys held back until one explainer call serves several batches. ``auto``: in-batch
    where the explainer is cheap (exact-linear, and integrated gradients of a two-hidden-layer
    ReLU network in C: tens of microseconds a batch), deferred otherwise."""

    @field_validator("codes")
    @classmethod
    def _code_names(cls, value: dict[str, ReasonCodeConfig]) -> dict[str, ReasonCodeConfig]:
        bad = sorted(c for c in value if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", c))
        if bad:
            raise ValueError(
                f"codes {', '.join(bad)}: a code is upper case letters, digits and _, "
                "starting with a letter (e.g. AMOUNT_ABOVE_USUAL)"
            )
        return value

    @model_validator(mode="after")
    def _grid(self) -> ReasonsConfig:
        if self.max_steps < self.steps:
            raise ValueError(f"max_steps ({self.max_steps}) must be >= steps ({self.steps})")
        if self.unmapped is not None and self.unmapped.code in self.codes:
            raise ValueError(f"unmapped.code {self.unmapped.code} is also one of codes")
        return self
