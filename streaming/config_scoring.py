"""Sections of the pipeline config for the worker's own loop: the dynamic batcher of each
model version and the worker (polling, in-flight bounds, commits, drain, pools). Kept apart
from streaming.config, which assembles them into PipelineConfig and re-exports them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from streaming.config_sections import Strict


class BatchingConfig(Strict):
    """The dynamic batcher of each model version (policy: streaming/engine/batching.py)."""

    max_batch_size: int = Field(default=256, ge=1, le=65_536)
    max_delay_ms: float = Field(default=2.0, ge=0, le=10_000)
    """The longest an event waits for company; an idle model with a short queue waits less."""
    preferred_batch_sizes: tuple[int, ...] = (8, 32, 128)
    """Sizes formed when the queue allows; runtimes are warmed up (and cuda graphs captured)
    at each of them, at 1 and at max_batch_size."""
    max_queued_events: int = Field(default=2_048, ge=1)
    """Rows waiting per version; when full, the source waits (and then pauses partitions)."""
    deadline_ms: float | None = Field(default=None, gt=0)
    """An event that waited longer than this in the queue is handled by ``deadline_policy``."""
    deadline_policy: Literal["score", "dead_letter"] = "score"
    """``score`` it anyway (late), or send it to the dead letters with stage ``timeout``."""

    @model_validator(mode="after")
    def _preferred_within_max(self) -> BatchingConfig:
        bad = [p for p in self.preferred_batch_sizes if not 1 <= p <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred_batch_sizes {bad} must lie in 1..max_batch_size ({self.max_batch_size})"
            )
        return self

    def warmup_sizes(self) -> tuple[int, ...]:
        return tuple(sorted({1, self.max_batch_size, *self.preferred_batch_sizes}))


class WorkerConfig(Strict):
    poll_batch: int = Field(default=2_000, ge=1, le=100_000)
    """Messages taken from the consumer per poll."""
    poll_timeout_ms: int = Field(default=50, ge=1, le=10_000)
    idle_poll_timeout_ms: int = Field(default=200, ge=1, le=10_000)
    """The poll's wait while nothing is in flight and no partition is paused, instead of
    ``poll_timeout_ms`` (a poll returns at the first event either way): an idle worker's
    feeding thread wakes 5 times a second instead of 20. A stop, a control command and the
    commit of the last events are noticed up to this much later while idle."""
    max_in_flight: int = Field(default=50_000, ge=1)
    """Events consumed but not yet acknowledged downstream; above it partitions are paused."""
    commit_interval_ms: int = Field(default=500, ge=10)
    drain_timeout_s: float = Field(default=20.0, gt=0)
    """On SIGTERM, idle exit or revoke: how long to wait for in-flight outputs to be acked."""
    telemetry_interval_s: float = Field(default=1.0, gt=0)
    gil_switch_interval_ms: float | None = Field(default=2.0, gt=0, le=100)
    """The process's GIL switch interval (Python's default is 5 ms). onnxruntime and torch
    release the GIL while a batch runs; to return, the inference thread needs it back from
    the decoding thread, and waits up to this long; every forced hand-over costs both threads
    a context switch. 0.2 ms was the default while every chunk went through the inference
    thread; since small chunks are scored on the feeding thread (inline_max_rows), 2 ms
    measured 3-15% less worker CPU per event (drain, 2,000/s and 10,000/s) with drain rate
    and p99 no worse. On cuda each batch returns to Python two to five times: a shorter
    interval may serve it better (not measured). None leaves Python's default."""
    inline_max_rows: int = Field(default=64, ge=0, le=100_000)
    """A chunk of at most this many rows is scored on the feeding thread itself when its
    version's lane is empty and its inference thread between batches: at low rates each poll
    brings a few events, and handing them to the inference thread (a wake and a GIL transfer
    per chunk, on each side) cost more CPU than scoring them. Larger chunks, and any chunk
    while the inference thread is busy, go through the lane as before, so a drain keeps its
    pipelining. Only with one inference thread (one version, or a decision graph), no shadow
    share and no GPU (engine.inline_scoring_allowed); 0 turns it off. A model call that hangs
    on the feeding thread stops the worker's consumption (its rows are dead-lettered by the
    watchdog and /healthz fails, as for any hung call), where on its own thread the worker
    would go on dead-lettering every later event until restarted."""
    gc_young_threshold: int | None = Field(default=50_000, ge=700, le=10_000_000)
    """The garbage collector's young-generation threshold once the worker has started (Python's
    default is 700), with the start-up heap frozen out of collections: records in flight then
    die by reference count before a collection sees them. Measured +13% and +16% drain
    throughput (medians of two runs of 8 side-by-side triplets). Memory grows by at most this
    many young objects before a collection. None leaves Python's defaults."""
    breaker_failures: int = Field(default=5, ge=1, le=10_000)
    """Batches in a row a version may fail before its circuit breaker opens (its rows then
    go to the dead letters without calling the model)."""
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    """How long an open breaker stays open before one trial batch is let through."""
    output_header_bytes: int = Field(default=16_384, ge=0, le=1_048_576)
    """Budget for the input's headers carried to a prediction (``traceparent`` first); the
    rest are left off and ``streaming.headers_dropped`` says how many."""
    inference_timeout_s: float = Field(default=10.0, gt=0)
    """Longest a model call may run. Past it the version counts as hung: a thread stuck in a
    model cannot be killed, so its breaker opens for good, its in-progress, queued and later
    rows are dead-lettered (stage inference, reason class timeout) and /healthz fails so that
    the pod is restarted. 10 s is ~1000x a fraud batch on cpu and leaves room for a slow
    first cuda call; it must stay well above the slowest healthy batch."""
    metrics_port: int = Field(default=0, ge=0, le=65_535)
    """Prometheus /metrics port; 0 = off. ``--metrics-port`` overrides."""
    processes: int | Literal["auto"] = 1
    """Worker processes in this pod, each a member of the consumer group (Python's GIL keeps
    one process to about one core). ``auto``: the cores the cgroup allows. Above 1 a
    supervisor starts, restarts and drains them (streaming/pool). ``--processes`` overrides."""
    restart_budget: int = Field(default=5, ge=0, le=1_000)
    """Child restarts allowed within ``restart_window_s``; past it the pool stops (exit 1)
    and the pod's restart policy takes over: a child that keeps dying needs a person."""
    restart_window_s: float = Field(default=300.0, gt=0)
    restart_backoff_s: float = Field(default=1.0, gt=0, le=600)
    """Wait before the first restart of a slot; doubles on each restart within the window,
    up to 30 s (or this, if larger)."""

    @field_validator("processes")
    @classmethod
    def _processes(cls, value: int | str) -> int | str:
        if value != "auto" and not 1 <= int(value) <= 256:
            raise ValueError("expected 1..256 or 'auto' (the cores the cgroup allows)")
        return value

    @property
    def longest_transaction_ms(self) -> int:
        """How long a healthy exactly-once transaction can stay open: a commit interval of
        outputs, then the drain before its commit (past ``drain_timeout_s`` the worker aborts
        the transaction itself). ``transaction.timeout.ms`` must be above it."""
        return self.commit_interval_ms + int(self.drain_timeout_s * 1000)
