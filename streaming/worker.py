"""The worker: consume, decode, preprocess, route, infer, publish, commit (DESIGN.md, data flow).

Three kinds of thread overlap the stages: the main thread polls, decodes, preprocesses and
routes a poll batch while each model version's inference thread scores earlier rows, and the
delivery thread acknowledges what the broker has taken. onnxruntime, torch and librdkafka
release the GIL, so the stages truly run at once.

At-least-once: an input offset is committed only once every record it produced is acked
(see streaming.offsets). Memory is bounded: above ``worker.max_in_flight`` the partitions are
paused, not buffered.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streaming import kafka
from streaming.batcher import Chunk, Lane
from streaming.batching import BatchPolicy
from streaming.breaker import CircuitBreaker
from streaming.config import PipelineConfig, VersionConfig
from streaming.control import ControlMessage, ControlReader, RoutingUpdate, describe
from streaming.decode import (
    STAGE_INFERENCE,
    STAGE_PREPROCESS,
    STAGE_TIMEOUT,
    Decoder,
    Rejection,
)
from streaming.delivery import ChunkDelivery
from streaming.drift import DriftBaseline, FeatureSketch
from streaming.latency import LatencyRecorder
from streaming.logs import LogBudget, trace_id
from streaming.metrics import WorkerMetrics
from streaming.offsets import OffsetTracker, PartitionLedger
from streaming.pipeline import PipelineSpec, Preprocessor, load_pipeline
from streaming.process_tuning import ProcessTuning
from streaming.records import dead_letter_headers, encode_json, encode_predictions
from streaming.route import BUCKETS, Router
from streaming.runtimes.base import ModelLoadError, Runtime
from streaming.runtimes.registry import create_runtime
from streaming.sink import Publisher

log = logging.getLogger("streaming.worker")

LOOP_STALL_S = 30.0
"""/healthz fails when the main loop has not turned for this long (it turns every poll)."""


class StartupError(RuntimeError):
    """The worker cannot start; the message names the fix. Nothing was committed."""


class FatalWorkerError(RuntimeError):
    """The worker must stop without committing past what is durable."""


def default_worker_id() -> str:
    return os.environ.get("STREAMING_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerStats:
    """Counts for the progress line and the summary; written by one thread at a time."""

    consumed: int = 0
    predictions: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    delivery_errors: int = 0
    batches: int = 0
    batch_rows: int = 0
    inference_s: float = 0.0
    """Model time summed over batches: rows / inference_s is the inference stage's rate."""
    transactions: int = 0
    """Exactly-once: transactions committed."""
    transaction_s: float = 0.0
    """Exactly-once: time spent in commit_transaction (the drain before it not included)."""
    first_consumed: float | None = None
    last_output: float | None = None
    end_to_end_ms: LatencyRecorder = field(default_factory=LatencyRecorder)
    steady_from_ms: int | None = None
    """Also record events with event time at or after this into ``steady_end_to_end_ms``
    (benchmarks leave out a phase's start transient this way)."""
    steady_end_to_end_ms: LatencyRecorder = field(default_factory=LatencyRecorder)

    @property
    def outputs(self) -> int:
        return self.predictions + sum(self.dead_letters.values())

    def rate(self) -> float:
        """Events/s from the first consumed event to the last acknowledged output."""
        if self.first_consumed is None or self.last_output is None:
            return 0.0
        span = self.last_output - self.first_consumed
        return self.outputs / span if span > 0 else 0.0


@dataclass
class _Version:
    config: VersionConfig
    runtime: Runtime
    preprocessor: Preprocessor
    lane: Lane
    predictions_metric: Any
    end_to_end_ms: LatencyRecorder = field(default_factory=LatencyRecorder)
    thread: threading.Thread | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    breaker: CircuitBreaker | None = None
    sketch: FeatureSketch | None = None
    """Live input histograms in the model's drift-baseline bins (for the monitor)."""


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
        self.pipeline = pipeline or load_pipeline(config.pipeline.module)
        self.metrics = metrics or WorkerMetrics(config.name)
        self.stats = WorkerStats()
        self.tracker = OffsetTracker()
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._paused = False
        self._closing = False
        self._active_at: float | None = None
        self._turned_at = self._polled_at = time.monotonic()
        """Last message or assignment: idle time counts from here, never during a (re)join."""
        self._versions: list[_Version] = []
        self._router: Router | None = None
        self._shadows: list[tuple[_Version, float]] = []
        self._control: ControlReader | None = None
        self._publisher: Publisher | None = None
        self._consumer: Consumer | None = None
        self._ready = threading.Event()
        self.assigned = threading.Event()
        """Set once the group gave this worker partitions (benchmarks wait for it)."""
        self._dead_letter_log = LogBudget(per_second=20)
        self._tuning = ProcessTuning(
            config.worker.gil_switch_interval_ms, config.worker.gc_young_threshold
        )

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Ask the worker to stop fetching, drain, commit and return (signal-safe)."""
        self._stop.set()

    @property
    def ready(self) -> bool:
        """Models warmed up and the consumer subscribed."""
        return self._ready.is_set()

    def healthz(self) -> tuple[bool, dict[str, object]]:
        """Alive: the main loop turned recently (a stuck loop fails the liveness probe)."""
        age = time.monotonic() - self._turned_at
        ok = self._fatal is None and (not self._ready.is_set() or age < LOOP_STALL_S)
        return ok, {"loop_age_s": round(age, 3), "fatal": self._fatal}

    def readyz(self) -> tuple[bool, dict[str, object]]:
        """Ready: models warmed, partitions assigned, broker answering polls."""
        assigned = bool(self._consumer is not None and self._active_at is not None)
        polled_age = time.monotonic() - self._polled_at
        ok = self._ready.is_set() and assigned and polled_age < LOOP_STALL_S
        return ok, {
            "models_warm": self._ready.is_set(),
            "assigned": assigned,
            "last_poll_age_s": round(polled_age, 3),
        }

    def run(self) -> WorkerStats:
        """Start, process until stopped / max events / idle, then drain and commit."""
        self._start()
        try:
            self._loop()
            self._drain()
        finally:
            self.close()
        if self._fatal:
            raise FatalWorkerError(self._fatal)
        return self.stats

    def _start(self) -> None:
        self._preflight()
        settings = kafka.producer_settings(self.config.kafka, self.worker_id)
        consumer_settings = kafka.consumer_settings(self.config.kafka, self.worker_id)
        if self.exactly_once:
            settings |= kafka.transactional_settings(
                self.config.kafka, self.worker_id, self.config.worker.drain_timeout_s
            )
            consumer_settings["isolation.level"] = "read_committed"
        publisher = Publisher(settings)
        if self.exactly_once:
            try:
                publisher.init_transactions()
            except KafkaException as exc:
                raise StartupError(
                    f"exactly-once: the broker refused transactions ({exc}); it needs "
                    "transaction support (Kafka >= 2.5), or use delivery: at-least-once"
                ) from None
        self.start_engine(publisher)
        self._consumer = Consumer(
            consumer_settings, logger=logging.getLogger("streaming.librdkafka")
        )
        self._consumer.subscribe(
            [self.config.topics.input],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._control = ControlReader(self.config, self.worker_id)
        for message in self._control.catch_up():
            self._on_control(message)
        self._ready.set()
        log.info("worker started", extra={"topic": self.config.topics.input})

    def start_engine(self, publisher: Publisher) -> None:
        """Load and warm the models and start the inference and delivery threads.

        Everything between the consumer and the producer; the engine benchmark drives it
        in-process through ``handle()`` with a publisher that acknowledges at once.
        """
        cfg = self.config
        self._versions = [self._load_version(v) for v in cfg.model.versions]
        self._init_metric_series()
        self.apply_routing(
            RoutingUpdate(
                weights={v.version: v.weight for v in cfg.model.versions},
                shadows={
                    v.version: v.shadow_share for v in cfg.model.versions if v.shadow_share > 0
                },
            ),
            source="config",
        )
        self._decoder = Decoder(self.pipeline.schema, cfg.pipeline.max_event_bytes)
        self._publisher = publisher
        # after loading and warm-up: what exists now lives as long as the process
        self._tuning.apply()
        publisher.start()
        for v in self._versions:
            v.thread = threading.Thread(
                target=self._infer_loop, args=(v,), name=f"infer-{v.config.version}", daemon=True
            )
            v.thread.start()

    def _init_metric_series(self) -> None:
        """Counters that only move on trouble exist at 0 from the start, so that rate() and
        the alerts on them see an increase from the first one (not from the second)."""
        cfg, m = self.config, self.metrics
        m.control_refused.labels(cfg.name)
        m.delivery_errors.labels(cfg.name, "?")
        for v in cfg.model.versions:
            m.shadow_shed.labels(cfg.name, cfg.model.name, v.version)
            m.batch_size.labels(cfg.name, cfg.model.name, v.version)

    def _preflight(self) -> None:
        """Fail before joining the group if the cluster or the topics are not there."""
        cfg = self.config
        meta = kafka.cluster_metadata(cfg.kafka, StartupError)
        t = cfg.topics
        missing = [
            n
            for n in (t.input, t.predictions, t.dead_letters, t.telemetry)
            if n not in meta.topics or meta.topics[n].error is not None
        ]
        if missing:
            raise StartupError(
                f"topics missing on {cfg.kafka.bootstrap}: {', '.join(missing)}; create them "
                f"with: streaming topics create -c CONFIG"
            )

    def _load_version(self, vc: VersionConfig) -> _Version:
        cfg = self.config
        directory = cfg.version_dir(vc)
        try:
            options = (
                {"half": vc.half, "cuda_graphs": vc.cuda_graphs} if vc.runtime == "torch" else {}
            )
            runtime = create_runtime(vc.runtime, directory, vc.device, vc.threads, **options)
            runtime.load()
        except ModelLoadError as exc:
            raise StartupError(f"model {cfg.model.name}/{vc.version}: {exc}") from None
        meta = runtime.metadata
        pre = self.pipeline.make_preprocessor(meta.preprocessing)
        if tuple(pre.feature_names) != tuple(meta.feature_names) or meta.input_dim != len(
            pre.feature_names
        ):
            raise StartupError(
                f"model {cfg.model.name}/{vc.version} expects {meta.input_dim} inputs "
                f"({', '.join(meta.feature_names[:4])}…) but the pipeline's preprocessing makes "
                f"{len(pre.feature_names)}; rebuild the model (make models) for this pipeline"
            )
        runtime.warm_up(cfg.batching.warmup_sizes())
        b = cfg.batching
        policy = BatchPolicy(
            max_batch_size=b.max_batch_size,
            max_delay_s=b.max_delay_ms / 1000.0,
            preferred_sizes=b.preferred_batch_sizes,
            deadline_s=b.deadline_ms / 1000.0 if b.deadline_ms is not None else None,
        )
        version = _Version(
            vc,
            runtime,
            pre,
            Lane(policy, b.max_queued_events),
            self.metrics.predictions.labels(cfg.name, cfg.model.name, vc.version),
        )
        try:
            baseline = DriftBaseline.from_metadata(meta.raw.get("drift_baseline"))
        except (KeyError, TypeError, ValueError) as exc:
            raise StartupError(
                f"model {cfg.model.name}/{vc.version}: bad drift_baseline in its metadata "
                f"({exc}); rebuild the model (make models)"
            ) from None
        if baseline is not None and baseline.features:
            version.sketch = FeatureSketch(baseline)
        version.breaker = CircuitBreaker(
            cfg.worker.breaker_failures, cfg.worker.breaker_cooldown_s
        )
        self.metrics.track_end_to_end(cfg.model.name, vc.version, version.end_to_end_ms)
        return version

    # ------------------------------------------------------------------ main loop

    def _loop(self) -> None:
        cfg = self.config.worker
        consumer = self._consumer
        assert consumer is not None
        commit_every = cfg.commit_interval_ms / 1000.0
        next_commit = time.monotonic() + commit_every
        next_control = 0.0
        poll_timeout = cfg.poll_timeout_ms / 1000.0
        while not self._stop.is_set():
            if self._fatal:
                break
            self._backpressure()
            messages = self._poll(consumer, cfg.poll_batch, poll_timeout)
            now = time.monotonic()
            self._turned_at = self._polled_at = now
            if now >= next_control and self._control is not None:
                for message in self._control.poll():
                    self._on_control(message)
                next_control = now + 0.05
            if messages:
                self._active_at = now
                self.handle(messages)
            elif (
                self.idle_exit_s is not None
                and self._active_at is not None
                and now - self._active_at >= self.idle_exit_s
                and self.tracker.in_flight == 0
            ):
                log.info("idle for %.1f s: stopping", self.idle_exit_s)
                break
            if now >= next_commit:
                self._commit(asynchronous=True)
                self._update_lag()
                next_commit = now + commit_every
            self.metrics.in_flight.labels(self.config.name).set(self.tracker.in_flight)

    @staticmethod
    def _poll(consumer: Consumer, batch: int, timeout: float) -> list[Message]:
        """What is there now, up to ``batch``; block only until the first message arrives.

        consume(n, timeout) waits for n messages or the whole timeout: at low rates that is
        the timeout added to every event's latency.
        """
        messages = consumer.consume(num_messages=batch, timeout=0)
        if messages:
            return messages
        first = consumer.poll(timeout)
        if first is None:
            return []
        return [first, *consumer.consume(num_messages=batch - 1, timeout=0)]

    def apply_routing(self, update: RoutingUpdate, source: str) -> None:
        """Route by new weights and shadows from the next poll on (main thread only)."""
        cfg = self.config
        names = [v.version for v in cfg.model.versions]
        router = Router(names, update.weights)
        by_name = {v.config.version: v for v in self._versions}
        self._router = router
        self._shadows = [(by_name[n], share) for n, share in update.shadows.items() if share > 0]
        total = sum(router.weights.values())
        for name in names:
            self.metrics.routing_weight.labels(cfg.name, cfg.model.name, name).set(
                router.weights[name] / total
            )
        log.info(
            "routing applied from %s: %s",
            source,
            describe(update),
            extra={"weights": update.weights, "shadows": update.shadows},
        )

    def _on_control(self, message: ControlMessage) -> None:
        if message.update is None:
            self.metrics.control_refused.labels(self.config.name).inc()
            log.warning("control record refused, the weights in force stay: %s", message.error)
            return
        self.apply_routing(message.update, source="control topic")
        lag_ms = time.time() * 1000 - message.produced_ms
        log.info(
            "control record applied %.0f ms after it was written",
            lag_ms,
            extra={"control_lag_ms": round(lag_ms)},
        )

    def _backpressure(self) -> None:
        """Pause every assigned partition above the in-flight limit; resume below half of it."""
        limit = self.config.worker.max_in_flight
        in_flight = self.tracker.in_flight
        consumer = self._consumer
        assert consumer is not None
        if not self._paused and in_flight >= limit:
            assigned = consumer.assignment()
            consumer.pause(assigned)
            self._paused = True
            self.metrics.paused_partitions.labels(self.config.name).set(len(assigned))
            log.info("paused %d partitions: %d events in flight", len(assigned), in_flight)
        elif self._paused and in_flight <= limit // 2:
            consumer.resume(consumer.assignment())
            self._paused = False
            self.metrics.paused_partitions.labels(self.config.name).set(0)

    def handle(self, messages: list[Message]) -> None:
        """One poll batch: register, decode, route, preprocess, queue for inference."""
        good: list[Message] = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.fatal():
                self._fatal = f"consumer error: {err}"
            else:
                log.warning("consumer error: %s", err)
        if self.max_events is not None:
            room = self.max_events - self.stats.consumed
            if len(good) >= room:
                # The rest is left uncommitted for the next run to read.
                good = good[:room]
                self._stop.set()
        if not good:
            return
        stats = self.stats
        if stats.first_consumed is None:
            stats.first_consumed = time.monotonic()
        stats.consumed += len(good)
        self.metrics.events_consumed.labels(self.config.name, self.config.topics.input).inc(
            len(good)
        )

        ledgers = self._register(good)
        idx, records, rejected = self._decoder.decode(good)
        for i, rejection in rejected:
            self._dead_letter(good[i], ledgers[i], rejection)
        if not records:
            return
        msgs = [good[i] for i in idx]
        led = [ledgers[i] for i in idx]
        assert self._router is not None
        routes = self._router.route([m.key() for m in msgs])
        now = time.monotonic()
        for vi, version in enumerate(self._versions):
            rows = np.flatnonzero(routes == vi) if len(self._versions) > 1 else None
            if rows is not None and rows.size == 0:
                continue
            sel_msgs = msgs if rows is None else [msgs[r] for r in rows]
            sel_recs = records if rows is None else [records[r] for r in rows]
            sel_led = led if rows is None else [led[r] for r in rows]
            self._preprocess_and_queue(version, sel_msgs, sel_recs, sel_led, now)
        if self._shadows:
            self._queue_shadows(msgs, records, led, now)

    def _queue_shadows(
        self, msgs: list[Message], records: list[Any], ledgers: list[PartitionLedger], now: float
    ) -> None:
        """Copy a share of the events (sticky by key) to each shadow version, if it keeps up.

        A shadow never holds the primary path: its rows are not in the ledger, a full shadow
        queue sheds them (with a metric), and its errors reach telemetry only.
        """
        assert self._router is not None
        buckets = self._router.buckets([m.key() for m in msgs])
        for version, share in self._shadows:
            rows = np.flatnonzero(buckets < share * BUCKETS)
            if rows.size == 0:
                continue
            sel = [records[r] for r in rows]
            try:
                features = version.preprocessor.transform(sel)
            except Exception as exc:  # noqa: BLE001 - the primary path dead-letters the culprit
                log.debug("shadow %s: preprocessing failed: %s", version.config.version, exc)
                continue
            finite = np.isfinite(features).all(axis=1)
            keep = rows[finite]
            chunk = self._make_chunk(
                features[finite],
                [msgs[r] for r in keep],
                [records[r] for r in keep],
                [ledgers[r] for r in keep],
                now,
            )
            chunk.shadow = True
            if not version.lane.put(chunk, timeout=0):
                self.metrics.shadow_shed.labels(
                    self.config.name, self.config.model.name, version.config.version
                ).inc(len(chunk))

    def _register(self, messages: list[Message]) -> list[PartitionLedger]:
        """Enter every message in its partition's ledger before any output can be acked."""
        tracker = self.tracker
        out: list[PartitionLedger] = []
        groups: dict[tuple[str, int], tuple[PartitionLedger, list[int]]] = {}
        for msg in messages:
            key = (msg.topic(), msg.partition())
            group = groups.get(key)
            if group is None:
                group = groups[key] = (tracker.ledger(*key), [])  # type: ignore[arg-type]
            group[1].append(msg.offset())  # type: ignore[arg-type]
            out.append(group[0])
        for ledger, offsets in groups.values():
            ledger.register_many(offsets)
        return out

    def _preprocess_and_queue(
        self,
        version: _Version,
        msgs: list[Message],
        records: list[Any],
        ledgers: list[PartitionLedger],
        enqueued: float,
    ) -> None:
        ok, features = self._preprocess(version.preprocessor, msgs, records, ledgers)
        if not ok:
            return
        sel = [(msgs[i], records[i], ledgers[i]) for i in ok] if len(ok) != len(msgs) else None
        if sel is not None:
            msgs = [s[0] for s in sel]
            records = [s[1] for s in sel]
            ledgers = [s[2] for s in sel]
        if version.sketch is not None:
            version.sketch.add(records)
        version.lane.put(self._make_chunk(features, msgs, records, ledgers, enqueued))

    def _make_chunk(
        self,
        features: np.ndarray,
        msgs: list[Message],
        records: list[Any],
        ledgers: list[PartitionLedger],
        enqueued: float,
    ) -> Chunk:
        spec = self.pipeline
        id_field, ts_field = spec.id_field, spec.ts_field
        return Chunk(
            features=features,
            event_ids=[getattr(r, id_field) for r in records],
            ts_ms=[getattr(r, ts_field) for r in records],
            keys=[m.key() for m in msgs],
            values=[m.value() for m in msgs],  # type: ignore[misc]
            headers=[m.headers() for m in msgs],
            ledgers=ledgers,
            offsets=[m.offset() for m in msgs],  # type: ignore[misc]
            enqueued=enqueued,
        )

    def _preprocess(
        self,
        pre: Preprocessor,
        msgs: list[Message],
        records: list[Any],
        ledgers: list[PartitionLedger],
    ) -> tuple[list[int], np.ndarray]:
        """Vectorised over the batch; a failing batch is retried row by row to find the culprit."""
        try:
            features = pre.transform(records)
            good_rows = np.isfinite(features).all(axis=1)
        except Exception:  # noqa: BLE001 - isolate the rows that break the pipeline's code
            rows, keep = [], []
            for i, rec in enumerate(records):
                try:
                    rows.append(pre.transform([rec])[0])
                    keep.append(i)
                except Exception as exc:  # noqa: BLE001
                    self._dead_letter(
                        msgs[i],
                        ledgers[i],
                        Rejection(
                            STAGE_PREPROCESS,
                            f"{type(exc).__name__}: {exc}"[:480],
                            type(exc).__name__,
                        ),
                    )
            if not rows:
                return [], np.empty((0, len(pre.feature_names)), np.float32)
            sub = np.ascontiguousarray(np.stack(rows), dtype=np.float32)
            finite = np.isfinite(sub).all(axis=1)
            for j in np.flatnonzero(~finite):
                i = keep[j]
                self._dead_letter(msgs[i], ledgers[i], _non_finite(pre, sub[j]))
            return [keep[j] for j in np.flatnonzero(finite)], sub[finite]
        if good_rows.all():
            return list(range(len(records))), features
        for i in np.flatnonzero(~good_rows):
            self._dead_letter(msgs[i], ledgers[i], _non_finite(pre, features[i]))
        ok = np.flatnonzero(good_rows)
        return ok.tolist(), np.ascontiguousarray(features[ok])

    # ------------------------------------------------------------------ inference

    def _infer_loop(self, version: _Version) -> None:
        lane = version.lane
        while True:
            chunks = lane.take(timeout=0.1)
            if chunks is None:
                return
            if chunks:
                try:
                    self._score(version, chunks)
                except Exception as exc:
                    log.exception("inference thread failed")
                    self._fatal = f"inference thread for {version.config.version} failed: {exc!r}"
                    return
            self._maybe_telemetry(version)

    def _expire(self, chunks: list[Chunk]) -> list[Chunk]:
        """With ``deadline_policy: dead_letter``, rows that waited too long are dead-lettered."""
        b = self.config.batching
        if b.deadline_ms is None or b.deadline_policy != "dead_letter":
            return chunks
        now = time.monotonic()
        limit = b.deadline_ms / 1000.0
        keep = []
        for c in chunks:
            waited = now - c.enqueued
            if waited < limit:
                keep.append(c)
                continue
            rejection = Rejection(
                STAGE_TIMEOUT,
                f"waited {waited * 1000:.1f} ms in the batch queue, over "
                f"batching.deadline_ms ({b.deadline_ms:g})",
                "deadline",
            )
            for i in range(len(c)):
                self._dead_letter_row(c, i, rejection)
        return keep

    def _score(self, version: _Version, chunks: list[Chunk]) -> None:
        cfg = self.config
        vc = version.config
        shadows = [c for c in chunks if c.shadow]
        if shadows:
            # a version can be a canary and a shadow at once: its lane carries both
            self._score_shadow(version, shadows)
            chunks = [c for c in chunks if not c.shadow]
        chunks = self._expire(chunks)
        if not chunks:
            return
        features = (
            chunks[0].features if len(chunks) == 1 else np.concatenate([c.features for c in chunks])
        )
        n = features.shape[0]
        started = time.monotonic()
        queue_delay = started - chunks[0].enqueued
        breaker = version.breaker
        if breaker is not None and not breaker.allow():
            rejection = Rejection(
                STAGE_INFERENCE,
                f"{vc.version}: circuit open after {breaker.failures} failing batches in a "
                f"row; retried in at most {breaker.cooldown_s:g} s",
                "circuit_open",
                vc.version,
            )
            for c in chunks:
                for i in range(len(c)):
                    self._dead_letter_row(c, i, rejection)
            return
        try:
            scores = version.runtime.predict(features)
            error = None
        except Exception as exc:  # noqa: BLE001 - a model error dead-letters its batch only
            scores, error = None, exc
        took = time.monotonic() - started
        if breaker is not None and breaker.record(error is None):
            log.error(
                "%s/%s failed %d batches in a row (last: %s): circuit open for %g s",
                cfg.model.name,
                vc.version,
                breaker.failures,
                error,
                breaker.cooldown_s,
            )
        labels = (cfg.name, cfg.model.name, vc.version)
        m = self.metrics
        m.batch_size.labels(*labels).observe(n)
        m.queue_delay.labels(*labels).observe(queue_delay)
        m.inference_time.labels(*labels).observe(took)
        self.stats.batches += 1
        self.stats.batch_rows += n
        self.stats.inference_s += took
        tele = version.telemetry
        tele["batches"] = tele.get("batches", 0) + 1
        tele["events"] = tele.get("events", 0) + n
        tele["max_batch"] = max(tele.get("max_batch", 0), n)
        tele["inference_s"] = tele.get("inference_s", 0.0) + took
        tele["queue_delay_max_s"] = max(tele.get("queue_delay_max_s", 0.0), queue_delay)

        if error is not None:
            tele["errors"] = tele.get("errors", 0) + n
            rejection = Rejection(
                STAGE_INFERENCE,
                f"{vc.version}: {type(error).__name__}: {error}"[:480],
                type(error).__name__,
                vc.version,
            )
            for c in chunks:
                for i in range(len(c)):
                    self._dead_letter_row(c, i, rejection)
            return
        assert scores is not None
        tele.setdefault("scores", []).append(scores)
        finite = np.isfinite(scores)
        all_finite = bool(finite.all())
        start = 0
        scored_ms = int(time.time() * 1000)
        for c in chunks:
            part = scores[start : start + len(c)]
            part_finite = finite[start : start + len(c)]
            start += len(c)
            rows = range(len(c)) if all_finite else np.flatnonzero(part_finite).tolist()
            if not all_finite:
                for i in np.flatnonzero(~part_finite):
                    self._dead_letter_row(
                        c,
                        int(i),
                        Rejection(
                            STAGE_INFERENCE,
                            f"{vc.version}: non-finite score {part[i]!r}",
                            "non_finite_score",
                            vc.version,
                        ),
                    )
                if not rows:
                    continue
            payloads = encode_predictions(
                c.event_ids,
                c.ts_ms,
                np.where(part_finite, part, 0.0),
                model=cfg.model.name,
                version=vc.version,
                threshold=cfg.model.threshold,
                scored_ms=scored_ms,
                worker=self.worker_id,
            )
            self._publish_chunk(version, c, rows, payloads)

    def _score_shadow(self, version: _Version, chunks: list[Chunk]) -> None:
        """Score shadow rows; publish to the shadow topic, best effort, nothing acknowledged."""
        cfg = self.config
        tele = version.telemetry
        features = (
            np.concatenate([c.features for c in chunks])
            if len(chunks) > 1
            else (chunks[0].features)
        )
        started = time.monotonic()
        try:
            scores = version.runtime.predict(features)
        except Exception:  # noqa: BLE001 - a failing shadow shows in telemetry only
            tele["errors"] = tele.get("errors", 0) + features.shape[0]
            return
        tele["shadow_events"] = tele.get("shadow_events", 0) + features.shape[0]
        tele["shadow_inference_s"] = tele.get("shadow_inference_s", 0.0) + (
            time.monotonic() - started
        )
        tele.setdefault("scores", []).append(scores)
        publisher = self._publisher
        assert publisher is not None
        topic = cfg.topics.shadow_topic
        start = 0
        scored_ms = int(time.time() * 1000)
        for c in chunks:
            part = scores[start : start + len(c)]
            start += len(c)
            finite = np.isfinite(part)
            payloads = encode_predictions(
                c.event_ids,
                c.ts_ms,
                np.where(finite, part, 0.0),
                model=cfg.model.name,
                version=version.config.version,
                threshold=cfg.model.threshold,
                scored_ms=scored_ms,
                worker=self.worker_id,
            )
            for i in np.flatnonzero(finite).tolist():
                publisher.produce(topic, payloads[i], c.keys[i], c.headers[i], None)

    def _publish_chunk(
        self, version: _Version, c: Chunk, rows: range | list[int], payloads: list[bytes]
    ) -> None:
        """Produce a chunk's predictions with one delivery counter for the whole chunk."""
        if isinstance(rows, range):
            ledgers, offsets, ts = c.ledgers, c.offsets, c.ts_ms
        else:
            ledgers = [c.ledgers[i] for i in rows]
            offsets = [c.offsets[i] for i in rows]
            ts = [c.ts_ms[i] for i in rows]
        delivery = ChunkDelivery(ledgers, offsets, ts, partial(self._chunk_delivered, version))
        publisher = self._publisher
        assert publisher is not None
        produce = publisher.produce
        topic, keys, headers = self.config.topics.predictions, c.keys, c.headers
        for i in rows:
            produce(topic, payloads[i], keys[i], headers[i], delivery)

    def _chunk_delivered(
        self, version: _Version, delivery: ChunkDelivery, latencies_ms: np.ndarray | None
    ) -> None:
        """All predictions of a chunk are acknowledged (their offsets are already acked)."""
        if latencies_ms is None:
            self._delivery_failed(delivery.describe(), delivery.error)
            return
        stats = self.stats
        stats.predictions += delivery.size
        stats.last_output = time.monotonic()
        stats.end_to_end_ms.record_many(latencies_ms)
        if stats.steady_from_ms is not None:
            steady = latencies_ms[np.asarray(delivery.ts_ms) >= stats.steady_from_ms]
            stats.steady_end_to_end_ms.record_many(steady)
        version.end_to_end_ms.record_many(latencies_ms)
        version.predictions_metric.inc(delivery.size)

    def _maybe_telemetry(self, version: _Version) -> None:
        """One record per version per interval: batch sizes, delays, model time, scores."""
        tele = version.telemetry
        now = time.monotonic()
        started = tele.setdefault("_since", now)
        if now - started < self.config.worker.telemetry_interval_s or not (
            tele.get("batches") or tele.get("shadow_events") or tele.get("errors")
        ):
            return
        scores = np.concatenate(tele.pop("scores", [np.empty(0, np.float32)]))
        record = {
            "worker": self.worker_id,
            "pipeline": self.config.name,
            "model": self.config.model.name,
            "version": version.config.version,
            "interval_s": round(now - started, 3),
            "ts_ms": int(time.time() * 1000),
            "batches": tele.get("batches", 0),
            "events": tele.get("events", 0),
            "batch_size_mean": round(tele.get("events", 0) / max(tele.get("batches", 0), 1), 2),
            "batch_size_max": tele.get("max_batch", 0),
            "queue_delay_max_ms": round(tele.get("queue_delay_max_s", 0.0) * 1000, 3),
            "inference_ms_mean": round(
                tele.get("inference_s", 0.0) / max(tele.get("batches", 0), 1) * 1000, 4
            ),
            "shadow_events": tele.get("shadow_events", 0),
            "errors": tele.get("errors", 0),
            "score": _score_summary(scores, self.config.model.threshold),
        }
        if version.sketch is not None:
            record["feature_counts"] = version.sketch.take()
        version.telemetry = {"_since": now}
        assert self._publisher is not None
        # Telemetry is best effort: it holds no input offset back.
        self._publisher.produce(
            self.config.topics.telemetry,
            encode_json(record),
            self.config.model.name.encode(),
            None,
            None,
        )

    # ------------------------------------------------------------------ outputs

    def _log_dead_letter(
        self, rejection: Rejection, headers: Any, topic: str, partition: int, offset: int
    ) -> None:
        """One line per dead letter within a budget: where, which stage, the trace id. Never
        the value or the reason text (either may carry card data); both are in the record."""
        budget = self._dead_letter_log
        if not log.isEnabledFor(logging.INFO) or not budget.take():
            return
        extra = {
            "stage": rejection.stage,
            "reason_class": rejection.reason_class,
            "source": f"{topic}[{partition}]@{offset}",
            "trace_id": trace_id(headers),
        }
        if budget.suppressed:
            extra["suppressed_since_last"] = budget.suppressed
            budget.suppressed = 0
        log.info("dead letter", extra=extra)

    def _dead_letter(self, msg: Message, ledger: PartitionLedger, rejection: Rejection) -> None:
        assert self._publisher is not None
        self._log_dead_letter(
            rejection, msg.headers(), msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        )
        headers = dead_letter_headers(
            msg.headers(),
            rejection,
            msg.topic() or "",
            msg.partition() or 0,
            msg.offset() or 0,
            self.worker_id,
        )
        self._publisher.produce(
            self.config.topics.dead_letters,
            msg.value(),
            msg.key(),
            headers,
            partial(self._on_dead_letter, ledger, msg.offset(), rejection),
        )

    def _dead_letter_row(self, chunk: Chunk, i: int, rejection: Rejection) -> None:
        """Dead-letter a row that got past decoding, with its original bytes unchanged."""
        assert self._publisher is not None
        self._log_dead_letter(
            rejection,
            chunk.headers[i],
            chunk.ledgers[i].topic,
            chunk.ledgers[i].partition,
            chunk.offsets[i],
        )
        ledger = chunk.ledgers[i]
        headers = dead_letter_headers(
            chunk.headers[i],
            rejection,
            ledger.topic,
            ledger.partition,
            chunk.offsets[i],
            self.worker_id,
        )
        self._publisher.produce(
            self.config.topics.dead_letters,
            chunk.values[i],
            chunk.keys[i],
            headers,
            partial(self._on_dead_letter, ledger, chunk.offsets[i], rejection),
        )

    def _on_dead_letter(
        self,
        ledger: PartitionLedger,
        offset: int,
        rejection: Rejection,
        err: KafkaError | None,
        _msg: Message,
    ) -> None:
        if err is not None:
            ledger.fail(offset)
            self._delivery_failed(f"{ledger.topic}[{ledger.partition}]@{offset}", err)
            return
        ledger.ack(offset)
        self.stats.dead_letters[rejection.stage] += 1
        self.stats.last_output = time.monotonic()
        self.metrics.dead_letters.labels(
            self.config.name, rejection.stage, rejection.reason_class
        ).inc()

    def _delivery_failed(self, what: str, err: KafkaError | None) -> None:
        # After librdkafka's own retries; the ledger already holds the commit point back.
        # Stop, so that a restart reprocesses from there.
        self.stats.delivery_errors += 1
        self.metrics.delivery_errors.labels(self.config.name, "?").inc()
        if self._fatal is None:
            self._fatal = f"delivery failed for {what}: {err}"
        log.error("delivery failed for %s: %s", what, err)

    # ------------------------------------------------------------------ commits & rebalance

    @property
    def exactly_once(self) -> bool:
        return self.config.delivery == "exactly-once"

    def _commit_transaction(self, begin_next: bool = True) -> None:
        """Exactly-once: drain, then commit every output so far with the input offsets.

        The transaction must hold the outputs of exactly the events whose offsets it commits,
        so the main loop (the only poller) stops feeding until everything in flight is
        delivered into the transaction; that pause is exactly-once's cost.
        """
        consumer, publisher = self._consumer, self._publisher
        if consumer is None or publisher is None or self._fatal:
            return
        if not self.tracker.wait_drained(self.config.worker.drain_timeout_s):
            self._fatal = (
                "exactly-once: in-flight events not delivered within worker.drain_timeout_s; "
                "the open transaction is aborted"
            )
            self._abort()
            return
        points = self.tracker.commit_points()
        offsets = [TopicPartition(t, p, o) for t, p, o in points]
        started = time.monotonic()
        try:
            publisher.commit_transaction(
                offsets, consumer.consumer_group_metadata(), 30.0, begin_next=begin_next
            )
        except KafkaException as exc:
            self._fatal = f"exactly-once: transaction commit failed: {exc}"
            self._abort()
            return
        self.stats.transactions += 1
        self.stats.transaction_s += time.monotonic() - started
        for t, p, o in points:
            self.tracker.ledger(t, p).committed = o
        if points:
            self.metrics.commits.labels(self.config.name).inc()

    def _abort(self) -> None:
        """Nothing of the open transaction becomes visible; a restart reprocesses from the
        last committed offsets, so nothing is lost either."""
        log.error("%s", self._fatal)
        if self._publisher is not None:
            try:
                self._publisher.abort_transaction()
            except KafkaException as exc:
                log.error("abort failed (the broker aborts it at its timeout): %s", exc)

    def _commit(self, asynchronous: bool, only: set[tuple[str, int]] | None = None) -> None:
        if self.exactly_once:
            # A transaction covers every partition; `only` (a revoke) is included.
            if not self._closing:
                self._commit_transaction()
            return
        consumer = self._consumer
        if consumer is None:
            return
        points = [p for p in self.tracker.commit_points() if only is None or p[:2] in only]
        if not points:
            return
        offsets = [TopicPartition(t, p, o) for t, p, o in points]
        try:
            consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
                return
            log.warning("offset commit failed (retried at the next commit): %s", exc)
            return
        for t, p, o in points:
            ledger = self.tracker.ledger(t, p)
            ledger.committed = o
        self.metrics.commits.labels(self.config.name).inc()

    def _update_lag(self) -> None:
        """Consumer lag per assigned partition from librdkafka's cached high watermarks (no
        broker round trip). The embedded broker's watermark lags its log, so there lag reads
        low; real Kafka's does not."""
        consumer = self._consumer
        if consumer is None:
            return
        gauge = self.metrics.consumer_lag
        try:
            positions = consumer.position(consumer.assignment())
        except KafkaException:
            return
        for tp in positions:
            if tp.offset < 0:
                continue
            try:
                _low, high = consumer.get_watermark_offsets(tp, cached=True)
            except KafkaException:
                continue
            if high >= 0:
                gauge.labels(self.config.name, tp.topic, str(tp.partition)).set(
                    max(0, high - tp.offset)
                )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Backpressure is re-decided on the next turn for the new assignment (Arroyo PR 299:
        # state carried across a rebalance double-submits).
        self._paused = False
        self._active_at = time.monotonic()
        self.assigned.set()
        self.metrics.paused_partitions.labels(self.config.name).set(0)
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit revoked partitions only up to what is delivered, then forget them."""
        keys = {(tp.topic, tp.partition) for tp in partitions}
        # At close the drain has already run and the producer is gone: nothing more will ack.
        wait = 0.0 if self._closing else self.config.worker.drain_timeout_s
        drained = self.tracker.wait_drained(wait, keys)
        if not drained and not self._closing:
            log.warning(
                "revoke: in-flight events of %s not all delivered in time; the next "
                "owner will reprocess them",
                _names(partitions),
            )
        self._commit(asynchronous=False, only=keys)
        self.tracker.detach(keys)
        # No idle exit in the middle of a rebalance: leaving then stalls the other members'
        # join until the coordinator gives up on this one.
        self._active_at = None
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Lost partitions are someone else's already: commit nothing, forget them."""
        self.tracker.detach({(tp.topic, tp.partition) for tp in partitions})
        self._active_at = None
        log.warning("lost %s", _names(partitions))

    # ------------------------------------------------------------------ shutdown

    def _drain(self) -> None:
        """Finish in-flight events and commit what is durable, within the drain deadline."""
        deadline = time.monotonic() + self.config.worker.drain_timeout_s
        if not self._fatal:
            self.tracker.wait_drained(max(0.0, deadline - time.monotonic()))
        self._commit(asynchronous=False)

    def close(self) -> None:
        """Stop the threads, flush the producer, commit, leave the group."""
        for v in self._versions:
            v.lane.close()
        for v in self._versions:
            if v.thread is not None:
                v.thread.join(timeout=10)
        if self.exactly_once and self._publisher is not None and not self._fatal:
            self._commit_transaction(begin_next=False)
            self._closing = True  # nothing more to commit: the producer's work is done
        if self._publisher is not None:
            left = self._publisher.close(timeout=5)
            if left:
                log.warning("%d records were not delivered at close", left)
        if self._control is not None:
            self._control.close()
            self._control = None
        if self._consumer is not None:
            self._commit(asynchronous=False)
            self._closing = True
            self._consumer.close()
            self._consumer = None
        self._tuning.restore()


def _non_finite(pre: Preprocessor, row: np.ndarray) -> Rejection:
    names = [pre.feature_names[j] for j in np.flatnonzero(~np.isfinite(row))][:5]
    return Rejection(
        STAGE_PREPROCESS, f"non-finite feature(s): {', '.join(names)}", "non_finite_feature"
    )


def _score_summary(scores: np.ndarray, threshold: float) -> dict[str, float]:
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


def _names(partitions: list[TopicPartition]) -> str:
    return json.dumps(sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions))
