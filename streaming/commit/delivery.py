"""Delivery accounting per chunk, not per message: the hot path's cheapest correct form.

librdkafka reports every message; a Python callback per message that locks a ledger, updates
metrics and records a latency costs more than producing the message. Here each message's
report only counts down; when a chunk's last prediction is acknowledged, its input offsets are
acked in bulk (one lock per partition), its latencies recorded in one go and the metrics
updated once. An input offset is still committed only after its own prediction is
durable: a chunk's offsets are acked only once all of its predictions are.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, Message

from streaming.kafka.refusals import RECORD, classify

if TYPE_CHECKING:
    from streaming.commit.ledger import PartitionLedger


class ChunkDelivery:
    """Counts down the delivery reports of one chunk's predictions."""

    __slots__ = (
        "_done",
        "_ledgers",
        "_offsets",
        "_payloads",
        "_refuse",
        "_refused",
        "_ts_ms",
        "error",
        "left",
    )

    def __init__(
        self,
        ledgers: list[PartitionLedger],
        offsets: list[int],
        ts_ms: list[int],
        done: Callable[[ChunkDelivery, float | None], None],
        refuse: Callable[[list[int], list[KafkaError]], None] | None = None,
        payloads: list[bytes] | None = None,
    ) -> None:
        self.left = len(offsets)
        self._ledgers = ledgers
        self._offsets = offsets
        self._ts_ms = ts_ms
        self._done = done
        """Called once with the time the last report came (epoch ms; the rows' latencies run
        from their ``ts_ms`` to it), or None when a delivery failed."""
        self._refuse = refuse
        """Told which rows (positions in this delivery) the broker refused for what they are;
        their offsets are left for the dead letters that take their place to ack."""
        self._payloads = payloads
        self._refused: list[tuple[bytes | None, KafkaError]] | None = None
        self.error: KafkaError | None = None

    def report(self, err: KafkaError | None, msg: Message) -> None:
        """One message's delivery report. The producer is handed this bound method, not the
        object: a bound method is called without looking ``__call__`` up on the type (20
        calls: 2.6 us against 6.4 back to back, 30 against 39 after a 10 ms sleep)."""
        if err is not None:
            if self._refuse is not None and classify(err) == RECORD:
                if self._refused is None:
                    self._refused = []
                self._refused.append((msg.value() if msg is not None else None, err))
            elif self.error is None:
                self.error = err
        self.left -= 1
        if self.left == 0:
            self._finish()

    def _finish(self) -> None:
        if self.error is not None:
            for ledger, offset in zip(self._ledgers, self._offsets, strict=True):
                ledger.fail(offset)
            self._done(self, None)
            return
        if self._refused and not self._hand_over_refused():
            return
        by_ledger: dict[int, tuple[PartitionLedger, list[int]]] = {}
        for ledger, offset in zip(self._ledgers, self._offsets, strict=True):
            entry = by_ledger.get(id(ledger))
            if entry is None:
                by_ledger[id(ledger)] = (ledger, [offset])
            else:
                entry[1].append(offset)
        for ledger, offsets in by_ledger.values():
            ledger.ack_many(offsets)
        self._done(self, time.time() * 1000.0)

    def _hand_over_refused(self) -> bool:
        """Refused rows go to the dead letters; the rest is acked as usual. False when a
        refused row cannot be told apart (the chunk is then failed as a whole)."""
        assert self._refuse is not None and self._refused is not None
        where = {p: j for j, p in enumerate(self._payloads or [])}
        positions = [where.get(value, -1) for value, _err in self._refused]
        if -1 in positions:  # cannot tell which row: hold the whole chunk back
            self.error = self._refused[0][1]
            self._finish()
            return False
        self._refuse(positions, [err for _value, err in self._refused])
        gone = set(positions)
        keep = [j for j in range(len(self._offsets)) if j not in gone]
        self._ledgers = [self._ledgers[j] for j in keep]
        self._offsets = [self._offsets[j] for j in keep]
        self._ts_ms = [self._ts_ms[j] for j in keep]
        return True

    @property
    def ts_ms(self) -> list[int]:
        """Event times of the chunk's rows, in order."""
        return self._ts_ms

    @property
    def size(self) -> int:
        return len(self._offsets)

    def describe(self) -> str:
        first = self._ledgers[0]
        return f"{first.topic}[{first.partition}]@{self._offsets[0]} (+{len(self._offsets) - 1})"
