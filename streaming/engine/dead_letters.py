"""Dead letters: a rejected event goes to the dead-letter topic with its original bytes and
headers plus the reason (DESIGN.md), and its input offset is acked only once the broker has
the dead letter, so a rejection loses nothing either."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, Message

from streaming.commit.ledger import PartitionLedger
from streaming.config import PipelineConfig
from streaming.engine.decode import Rejection
from streaming.engine.lane import Chunk
from streaming.engine.outputs import dead_letter_headers
from streaming.kafka.sink import Publisher
from streaming.observability.logs import LogBudget, trace_id
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import WorkerStats

log = logging.getLogger("streaming.worker")

DeliveryFailed = Callable[[str, "KafkaError | None"], None]
"""Told what could not be delivered after librdkafka's retries (the worker then stops)."""


class DeadLetters:
    """Produces dead letters for one worker; ``publisher`` is set when its engine starts."""

    def __init__(
        self,
        config: PipelineConfig,
        worker_id: str,
        metrics: WorkerMetrics,
        stats: WorkerStats,
        failed: DeliveryFailed,
    ) -> None:
        self.topic = config.topics.dead_letters
        self.pipeline = config.name
        self.worker_id = worker_id
        self.metrics = metrics
        self.stats = stats
        self.publisher: Publisher | None = None
        self._failed = failed
        self._log_budget = LogBudget(per_second=20)

    def message(self, msg: Message, ledger: PartitionLedger, rejection: Rejection) -> None:
        """Dead-letter a consumed message (decoding or preprocessing refused it)."""
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        self._send(
            msg.value(), msg.key(), msg.headers(), ledger, topic, partition, offset, rejection
        )

    def row(self, chunk: Chunk, i: int, rejection: Rejection) -> None:
        """Dead-letter a row that got past decoding, with its original bytes unchanged."""
        ledger = chunk.ledgers[i]
        self._send(
            chunk.values[i],
            chunk.keys[i],
            chunk.headers[i],
            ledger,
            ledger.topic,
            ledger.partition,
            chunk.offsets[i],
            rejection,
        )

    def _send(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Any,
        ledger: PartitionLedger,
        topic: str,
        partition: int,
        offset: int,
        rejection: Rejection,
    ) -> None:
        assert self.publisher is not None, "the engine is not started"
        self._log(rejection, headers, topic, partition, offset)
        out_headers = dead_letter_headers(
            headers, rejection, topic, partition, offset, self.worker_id
        )
        self.publisher.produce(
            self.topic,
            value,
            key,
            out_headers,
            partial(self._delivered, ledger, offset, rejection),
        )

    def _log(
        self, rejection: Rejection, headers: Any, topic: str, partition: int, offset: int
    ) -> None:
        """One line per dead letter within a budget: where, which stage, the trace id. Never
        the value or the reason text (either may carry card data); both are in the record."""
        budget = self._log_budget
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

    def _delivered(
        self,
        ledger: PartitionLedger,
        offset: int,
        rejection: Rejection,
        err: KafkaError | None,
        _msg: Message,
    ) -> None:
        if err is not None:
            ledger.fail(offset)
            self._failed(f"{ledger.topic}[{ledger.partition}]@{offset}", err)
            return
        ledger.ack(offset)
        self.stats.dead_letters[rejection.stage] += 1
        self.stats.last_output = time.monotonic()
        self.metrics.dead_letters.labels(
            self.pipeline, rejection.stage, rejection.reason_class
        ).inc()
