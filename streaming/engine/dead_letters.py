"""Dead letters: a rejected event goes to the dead-letter topic with its original bytes and
headers plus the reason (README, Topics and records), and its input offset is acked only once
the broker has the dead letter, so a rejection loses nothing either.

Called from the feeding thread (decode, preprocess, a hung version's refused rows), the
inference threads (inference) and the watchdog (a hung call's rows and queue); what it shares
between them (the log budget) takes a lock."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, Message

from streaming.commit.ledger import PartitionLedger
from streaming.config import PipelineConfig
from streaming.engine.outcomes import Outcomes
from streaming.engine.outputs import dead_letter_headers
from streaming.engine.types import Chunk, Rejection, Sink
from streaming.observability.logs import LogBudget, trace_id

log = logging.getLogger("streaming.worker")


class DeadLetters:
    """Produces the dead letters of one engine."""

    def __init__(
        self, config: PipelineConfig, worker_id: str, sink: Sink, outcomes: Outcomes
    ) -> None:
        self.topic = config.topics.dead_letters
        self.worker_id = worker_id
        self._sink = sink
        self._outcomes = outcomes
        self._log_budget = LogBudget(per_second=20)

    def message(self, msg: Message, ledger: PartitionLedger, rejection: Rejection) -> None:
        """Dead-letter a consumed message (decoding or preprocessing refused it)."""
        topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
        self._send(
            msg.value(), msg.key(), msg.headers(), ledger, topic, partition, offset, rejection
        )

    def rows(self, chunk: Chunk, rows: Iterable[int], rejection: Rejection) -> None:
        """Dead-letter rows of a chunk with one rejection."""
        for i in rows:
            self.row(chunk, i, rejection)

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
        self._log(rejection, headers, topic, partition, offset)
        out_headers = dead_letter_headers(
            headers, rejection, topic, partition, offset, self.worker_id
        )
        self._sink.produce(
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
        if not log.isEnabledFor(logging.INFO):
            return
        suppressed = self._log_budget.take()
        if suppressed is None:
            return
        extra: dict[str, Any] = {
            "stage": rejection.stage,
            "reason_class": rejection.reason_class,
            "source": f"{topic}[{partition}]@{offset}",
            "trace_id": trace_id(headers),
        }
        if suppressed:
            extra["suppressed_since_last"] = suppressed
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
            self._outcomes.failed(f"{ledger.topic}[{ledger.partition}]@{offset}", err)
            return
        ledger.ack(offset)
        self._outcomes.dead_letter(rejection)
