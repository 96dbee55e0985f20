"""The worker: a source, an engine, a committer, and a loop that moves batches between them.

    source.poll -> engine.submit -> committer.maybe_commit -> source.backpressure

Threads, what each owns (its only writer), and what it hands to whom:

- main (this loop): the consumer and its rebalance callbacks (Source), registrations in the
  ledgers, ``WorkerStats.consumed``, routing (``Engine.apply_routing``), the committer.
  Hands chunks to each version's lane (blocking while the lane is full).
- ``infer-<version>``, one per version: that version's breaker, ``interval`` (telemetry
  counts) and ``totals``. Hands predictions, dead letters and telemetry to the sink.
- ``delivery`` (the Kafka sink's poller): every delivery callback, so the ledger acks,
  ``WorkerStats`` predictions, dead letters and latencies, and each version's
  ``end_to_end_ms``. Hands acked offsets to the ledgers, whose commit points the committer
  reads.
- ``watchdog`` (streaming.engine.watchdog): times out a hung model call, answers its rows and
  the hung version's queue with dead letters, and marks ``Health`` unhealthy.
- any thread: ``Faults``, the one error channel (first reason wins, under a lock), read by the
  loop and /healthz. ``Health`` holds what is not fatal but needs a new process (a hung model
  thread cannot be killed): /healthz fails on it while the loop goes on.

At-least-once: an input offset is committed only once every record it produced is acked
(streaming.commit). Memory is bounded: above ``worker.max_in_flight`` the partitions are
paused, not buffered. SIGTERM (``stop()``) drains: stop fetching, finish in-flight, commit.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from confluent_kafka import Message

from streaming.commit.committer import Committer, committer_for
from streaming.config import PipelineConfig
from streaming.engine.engine import Engine
from streaming.errors import FatalWorkerError, Faults, Health, StartupError
from streaming.kafka import settings as kafka
from streaming.kafka.limits import read_limits
from streaming.kafka.sink import KafkaSink
from streaming.kafka.source import Source
from streaming.kafka.topics import require_topics
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import WorkerStats
from streaming.pipeline import PipelineSpec, load_pipeline
from streaming.rollout.control import ControlFollower, ControlReader
from streaming.state.changelog import StateChangelog
from streaming.state.wiring import attach_state

__all__ = ["FatalWorkerError", "StartupError", "Worker", "WorkerStats", "default_worker_id"]

log = logging.getLogger("streaming.worker")

LOOP_STALL_S = 30.0
"""/healthz fails when the main loop has not turned for this long (it turns every poll)."""


def default_worker_id() -> str:
    return os.environ.get("STREAMING_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}"


class Worker:
    """One worker process's pipeline; ``run()`` blocks until stopped, drained and committed."""

    def __init__(
        self,
        config: PipelineConfig,
        *,
        max_events: int | None = None,
        idle_exit_s: float | None = None,
        worker_id: str | None = None,
        metrics: WorkerMetrics | None = None,
        pipeline: PipelineSpec | None = None,
    ) -> None:
        self.config = config
        self.worker_id = worker_id or default_worker_id()
        self.max_events = max_events
        self.idle_exit_s = idle_exit_s
        self.metrics = metrics or WorkerMetrics(config.name)
        self.faults = Faults()
        self.health = Health()
        self.pipeline = pipeline or load_pipeline(config.pipeline.module)
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.assigned = threading.Event()
        """Set once the group gave this worker partitions (benchmarks wait for it)."""
        self._turned_at = time.monotonic()
        self.engine: Engine | None = None
        self._sink: KafkaSink | None = None
        self._changelog: StateChangelog | None = None
        self._source: Source | None = None
        self._committer: Committer | None = None
        self._control: ControlFollower | None = None

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask the worker to stop fetching, drain, commit and return (signal-safe)."""
        self._stop.set()

    def _waiting_should_stop(self) -> bool:
        """Asked by a stage that waits out an outage (the schema registry) on this thread:
        the loop is alive and waiting by design, so /healthz must not call it stalled (a
        restart would not bring the registry back), and a stop ends the wait."""
        self._turned_at = time.monotonic()
        return self._stop.is_set()

    @property
    def ready(self) -> bool:
        """Models warmed up and the consumer subscribed."""
        return self._ready.is_set()

    def healthz(self) -> tuple[bool, dict[str, object]]:
        """Alive: the main loop turned recently (a stuck loop fails the liveness probe) and no
        model call hung (only a new process can score that version again)."""
        age = time.monotonic() - self._turned_at
        unhealthy = self.health.reasons
        ok = not self.faults and not unhealthy and (not self._ready.is_set() or age < LOOP_STALL_S)
        return ok, {
            "loop_age_s": round(age, 3),
            "fatal": self.faults.reason,
            "unhealthy": unhealthy or None,
        }

    def readyz(self) -> tuple[bool, dict[str, object]]:
        """Ready: models warmed, partitions assigned, broker answering polls."""
        source = self._source
        assigned = source is not None and source.active_at is not None
        polled_age = time.monotonic() - (source.polled_at if source else self._turned_at)
        ok = self._ready.is_set() and assigned and polled_age < LOOP_STALL_S
        return ok, {
            "models_warm": self._ready.is_set(),
            "assigned": assigned,
            "last_poll_age_s": round(polled_age, 3),
        }

    def run(self) -> WorkerStats:
        """Start, process until stopped / max events / idle, then drain and commit."""
        try:
            self._start()
            self._loop()
            self._drain()
        finally:
            self.close()
        if self.faults:
            raise self.faults.error()
        return self.stats

    def _start(self) -> None:
        cfg = self.config
        t = cfg.topics
        require_topics(cfg, (t.input, t.predictions, t.dead_letters, t.telemetry), StartupError)
        kind = committer_for(cfg)
        producer_settings = kind.producer_settings(cfg, self.worker_id)
        limits = read_limits(
            kafka.admin_settings(cfg.kafka), producer_settings, (t.predictions, t.dead_letters)
        )
        self._sink = KafkaSink(producer_settings)
        source = self._source = Source(
            kind.consumer_settings(cfg, self.worker_id),
            t.input,
            cfg.name,
            self.metrics,
            self.faults,
        )
        source.on_assigned.append(self.assigned.set)
        engine = self.engine = Engine(
            cfg,
            self._sink,
            worker_id=self.worker_id,
            pipeline=self.pipeline,
            metrics=self.metrics,
            faults=self.faults,
            stats=self.stats,
            limits=limits,
            health=self.health,
            should_stop=self._waiting_should_stop,
        )
        source.on_revoked.append(engine.revoked)
        changelog = self._changelog = (
            None
            if engine.state is None
            else attach_state(cfg, engine.state, self._sink, source, self.metrics, self.worker_id)
        )
        self._committer = kind(
            cfg,
            source.consumer,
            self._sink,
            engine.offsets,
            self.metrics,
            self.faults,
            self.stats,
            changelog,
        )
        engine.start()
        source.subscribe(self._committer)
        self._control = ControlFollower(
            ControlReader(cfg, self.worker_id),
            engine.apply_routing,
            self.metrics.control_refused.labels(cfg.name),
        )
        self._control.catch_up()
        self._ready.set()
        log.info("worker started", extra={"topic": t.input})

    # ------------------------------------------------------------------ main loop

    def _loop(self) -> None:
        cfg = self.config.worker
        source, engine, committer, control = (
            self._source,
            self.engine,
            self._committer,
            self._control,
        )
        assert source and engine and committer and control
        offsets = engine.offsets
        in_flight = self.metrics.in_flight.labels(self.config.name)
        busy_wait = cfg.poll_timeout_ms / 1000.0
        idle_wait = max(cfg.idle_poll_timeout_ms / 1000.0, busy_wait)
        while not self._stop.is_set() and not self.faults:
            source.backpressure(offsets.in_flight, cfg.max_in_flight)
            wait = busy_wait if offsets.in_flight or source.paused else idle_wait
            messages = source.poll(cfg.poll_batch, wait)
            now = self._turned_at = time.monotonic()
            control.turn(now)
            if messages:
                engine.submit(self._within_max_events(messages))
            elif self._idle(now):
                log.info("idle for %.1f s: stopping", self.idle_exit_s)
                break
            if committer.maybe_commit(now):
                source.update_lag()
            in_flight.set(offsets.in_flight)

    def _within_max_events(self, messages: list[Message]) -> list[Message]:
        """With ``max_events``, the rest of the batch is left uncommitted for the next run."""
        if self.max_events is None:
            return messages
        room = self.max_events - self.stats.consumed
        if len(messages) >= room:
            self._stop.set()
            return messages[: max(room, 0)]
        return messages

    def _idle(self, now: float) -> bool:
        """Nothing arrived for ``idle_exit_s`` and nothing is in flight. Paused partitions
        are not idle: nothing can arrive while the worker holds them back."""
        source = self._source
        if self.idle_exit_s is None or source is None or self.engine is None:
            return False
        active_at = source.active_at
        return (
            active_at is not None
            and not source.paused
            and now - active_at >= self.idle_exit_s
            and self.engine.offsets.in_flight == 0
        )

    # ------------------------------------------------------------------ shutdown

    def _drain(self) -> None:
        """Finish in-flight events and commit what is durable, within the drain deadline."""
        assert self.engine is not None and self._committer is not None
        if not self.faults:
            self.engine.offsets.wait_drained(self.config.worker.drain_timeout_s)
        self._committer.commit(asynchronous=False)

    def close(self) -> None:
        """Stop the threads, flush the producer, commit, leave the group."""
        if self.engine is not None:
            self.engine.stop_scoring()
        if self._committer is not None:
            self._committer.finish()
        if self._sink is not None:
            left = self._sink.close(timeout=5)
            if left:
                log.warning("%d records were not delivered at close", left)
            self._sink = None
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._source is not None:
            if self._committer is not None:
                self._committer.commit(asynchronous=False)
            self._source.close()
            self._source = None
        if self._changelog is not None:  # after the last commit, which may write to it
            self._changelog.close(timeout=5)
            self._changelog = None
        if self.engine is not None:
            self.engine.close()
