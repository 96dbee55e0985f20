"""The source: the worker's consumer. Poll batches, pause and resume for backpressure, the
rebalance callbacks, and consumer lag.

Everything here runs on the main thread: librdkafka calls the rebalance callbacks from inside
``poll``/``consume``/``close`` on the thread that calls them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from typing import Any, Protocol

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from streaming.errors import Faults
from streaming.observability.metrics import WorkerMetrics

log = logging.getLogger("streaming.worker")

Partitions = set[tuple[str, int]]


class RebalanceListener(Protocol):
    """What a rebalance means to offsets: the committer's half of the callbacks."""

    def revoked(self, partitions: Partitions) -> None: ...
    def lost(self, partitions: Partitions) -> None: ...


class Source:
    """A consumer in the group on the input topic."""

    def __init__(
        self,
        settings: dict[str, Any],
        topic: str,
        pipeline: str,
        metrics: WorkerMetrics,
        faults: Faults,
    ) -> None:
        self.consumer = Consumer(settings, logger=logging.getLogger("streaming.librdkafka"))
        self._topic = topic
        self._pipeline = pipeline
        self._metrics = metrics
        self._faults = faults
        self._paused = False
        self._listener: RebalanceListener | None = None
        self.active_at: float | None = None
        """Last message or assignment; None during a rebalance (no idle exit then)."""
        self.polled_at = time.monotonic()
        self.on_assigned: list[Any] = []
        """Called with no arguments after each assignment (benchmarks wait for it)."""
        self.on_assigning: list[Any] = []
        """Called with the assigned (topic, partition) set before any of their events is
        returned (the state stage restores them); an exception stops the worker."""
        self.on_revoked: list[Any] = []
        """Called with the partitions revoked or lost, after the listener (the state stage
        forgets them)."""

    def subscribe(self, listener: RebalanceListener) -> None:
        self._listener = listener
        self.consumer.subscribe(
            [self._topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )

    def poll(self, batch: int, timeout: float) -> list[Message]:
        """What is there now, up to ``batch``; block only until the first message arrives.

        consume(n, timeout) waits for n messages or the whole timeout: at low rates that is
        the timeout added to every event's latency. Consumer errors are logged (a fatal one
        is reported) and left out.
        """
        consumer = self.consumer
        messages = consumer.consume(num_messages=batch, timeout=0)
        if not messages:
            first = consumer.poll(timeout)
            messages = [] if first is None else [first, *consumer.consume(batch - 1, timeout=0)]
        self.polled_at = now = time.monotonic()
        if not messages:
            return messages
        self.active_at = now
        if all(m.error() is None for m in messages):
            return messages
        good = []
        for msg in messages:
            err = msg.error()
            if err is None:
                good.append(msg)
            elif err.fatal():
                self._faults.report(f"consumer error: {err}")
            else:
                log.warning("consumer error: %s", err)
        return good

    def backpressure(self, in_flight: int, limit: int) -> None:
        """Pause every assigned partition above the in-flight limit; resume below half of it."""
        consumer = self.consumer
        if not self._paused and in_flight >= limit:
            assigned = consumer.assignment()
            consumer.pause(assigned)
            self._paused = True
            self._metrics.paused_partitions.labels(self._pipeline).set(len(assigned))
            log.info("paused %d partitions: %d events in flight", len(assigned), in_flight)
        elif self._paused and in_flight <= limit // 2:
            assigned = consumer.assignment()
            consumer.resume(assigned)
            self._paused = False
            self.active_at = time.monotonic()  # the idle clock starts again from here
            self._metrics.paused_partitions.labels(self._pipeline).set(0)
            log.info("resumed %d partitions: %d events in flight", len(assigned), in_flight)

    @property
    def paused(self) -> bool:
        """Partitions paused for backpressure: no message can arrive, so the idle clock stops."""
        return self._paused

    def update_lag(self) -> None:
        """Consumer lag per assigned partition from librdkafka's cached high watermarks (no
        broker round trip). The embedded broker's watermark lags its log, so there lag reads
        low; real Kafka's does not."""
        consumer = self.consumer
        gauge = self._metrics.consumer_lag
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
                gauge.labels(self._pipeline, tp.topic, str(tp.partition)).set(
                    max(0, high - tp.offset)
                )

    def _forget_lag(self, gone: Partitions) -> None:
        """Drop the lag series of partitions this worker no longer reads: their last value
        would stay on /metrics (and, in a pool, win the max over children) while the new owner
        reports the real one. Set to 0 first: in a pool's multiprocess mode the value lives in
        this child's file, which ``remove`` does not touch."""
        gauge = self._metrics.consumer_lag
        for topic, partition in gone:
            labels = (self._pipeline, topic, str(partition))
            gauge.labels(*labels).set(0)
            with contextlib.suppress(KeyError):
                gauge.remove(*labels)

    def close(self) -> None:
        """Leave the group (the revoke callback commits what is delivered)."""
        self.consumer.close()

    # ------------------------------------------------------------------ rebalance callbacks

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Backpressure is re-decided on the next turn for the new assignment (Arroyo PR 299:
        # state carried across a rebalance double-submits).
        self._paused = False
        self.active_at = time.monotonic()
        self._metrics.paused_partitions.labels(self._pipeline).set(0)
        log.info("assigned %s", _names(partitions))
        got = {(tp.topic, tp.partition) for tp in partitions}
        for hook in self.on_assigning:
            hook(got)
        for hook in self.on_assigned:
            hook()

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._listener is not None
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._listener.revoked(gone)
        for hook in self.on_revoked:
            hook(gone)
        self._forget_lag(gone)
        # No idle exit in the middle of a rebalance: leaving then stalls the other members'
        # join until the coordinator gives up on this one.
        self.active_at = None
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._listener is not None
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._listener.lost(gone)
        for hook in self.on_revoked:
            hook(gone)
        self._forget_lag(gone)
        self.active_at = None
        log.warning("lost %s", _names(partitions))


def _names(partitions: list[TopicPartition]) -> str:
    return json.dumps(sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions))
