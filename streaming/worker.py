"""The worker: consume, decode, preprocess, route, infer, publish, commit (DESIGN.md, data flow).

Three kinds of thread overlap the stages: the main thread polls, decodes, preprocesses and
routes a poll batch while each model version's inference thread scores earlier rows
(streaming.engine.scoring), and the delivery thread acknowledges what the broker has taken.
onnxruntime, torch and librdkafka release the GIL, so the stages truly run at once. Rejected
events of every stage go through streaming.engine.dead_letters; versions are loaded and checked by
streaming.engine.versions.

At-least-once: an input offset is committed only once every record it produced is acked
(see streaming.commit.ledger). Memory is bounded: above ``worker.max_in_flight`` the partitions are
paused, not buffered.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

import numpy as np
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streaming.commit.ledger import OffsetTracker, PartitionLedger
from streaming.config import PipelineConfig
from streaming.engine.dead_letters import DeadLetters
from streaming.engine.decode import STAGE_PREPROCESS, Decoder, Rejection
from streaming.engine.lane import Chunk
from streaming.engine.process_tuning import ProcessTuning
from streaming.engine.route import BUCKETS, Router
from streaming.engine.scoring import Scorer
from streaming.engine.versions import ModelVersion, load_version
from streaming.errors import FatalWorkerError, StartupError
from streaming.kafka import settings as kafka
from streaming.kafka.sink import Publisher
from streaming.observability import telemetry
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import WorkerStats
from streaming.pipeline import PipelineSpec, Preprocessor, load_pipeline
from streaming.rollout.control import ControlMessage, ControlReader, RoutingUpdate, describe

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
        self._versions: list[ModelVersion] = []
        self._router: Router | None = None
        self._shadows: list[tuple[ModelVersion, float]] = []
        self._control: ControlReader | None = None
        self._publisher: Publisher | None = None
        self._consumer: Consumer | None = None
        self._ready = threading.Event()
        self.assigned = threading.Event()
        """Set once the group gave this worker partitions (benchmarks wait for it)."""
        self.dead_letters = DeadLetters(
            config, self.worker_id, self.metrics, self.stats, self._delivery_failed
        )
        self._scorer = Scorer(
            config,
            self.worker_id,
            self.metrics,
            self.stats,
            self.dead_letters,
            self._delivery_failed,
            self._fail,
        )
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
        self._versions = [
            load_version(cfg, v, self.pipeline, self.metrics) for v in cfg.model.versions
        ]
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
        self._publisher = self.dead_letters.publisher = self._scorer.publisher = publisher
        telemetry.warm_up()
        # after loading and warm-up: what exists now lives as long as the process
        self._tuning.apply()
        publisher.start()
        for v in self._versions:
            v.thread = threading.Thread(
                target=self._scorer.run, args=(v,), name=f"infer-{v.config.version}", daemon=True
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
            assigned = consumer.assignment()
            consumer.resume(assigned)
            self._paused = False
            self.metrics.paused_partitions.labels(self.config.name).set(0)
            log.info("resumed %d partitions: %d events in flight", len(assigned), in_flight)

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
            self.dead_letters.message(good[i], ledgers[i], rejection)
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
        version: ModelVersion,
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
                    self.dead_letters.message(
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
                self.dead_letters.message(msgs[i], ledgers[i], _non_finite(pre, sub[j]))
            return [keep[j] for j in np.flatnonzero(finite)], sub[finite]
        if good_rows.all():
            return list(range(len(records))), features
        for i in np.flatnonzero(~good_rows):
            self.dead_letters.message(msgs[i], ledgers[i], _non_finite(pre, features[i]))
        ok = np.flatnonzero(good_rows)
        return ok.tolist(), np.ascontiguousarray(features[ok])

    def _fail(self, reason: str) -> None:
        """Stop the loop; nothing past what is durable gets committed."""
        self._fatal = reason

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


def _names(partitions: list[TopicPartition]) -> str:
    return json.dumps(sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions))
