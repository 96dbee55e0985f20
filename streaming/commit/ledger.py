"""Which input offsets may be committed: only those whose every output the broker acknowledged.

Offsets are consumed in order per partition but acknowledged in any order (predictions and
dead letters travel different paths). A partition's commit point is its lowest offset still
waiting for an output; everything below it is durable downstream.

Each assignment of a partition gets a fresh :class:`PartitionLedger`; a delivery report for
a revoked assignment lands on the old ledger and cannot move the new one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any


class PartitionLedger:
    """Outstanding outputs of one assigned partition, and its commit point."""

    __slots__ = (
        "_counter",
        "_failed",
        "_lock",
        "_order",
        "_outstanding",
        "committed",
        "next_commit",
        "partition",
        "topic",
    )

    def __init__(self, topic: str, partition: int, tracker: OffsetTracker) -> None:
        self.topic = topic
        self.partition = partition
        self._counter: InFlight = tracker.counter
        self._lock = threading.Lock()
        self._order: deque[int] = deque()
        self._outstanding: dict[int, int] = {}
        self._failed: set[int] = set()
        self.next_commit: int | None = None
        """Offset of the next message to read once everything before it is durable."""
        self.committed: int | None = None
        """The last commit point sent to the group coordinator."""

    def register(self, offset: int, outputs: int = 1) -> None:
        """A consumed message that will produce ``outputs`` records before it may be committed."""
        with self._lock:
            if self._order and offset <= self._order[-1]:
                raise ValueError(
                    f"{self.topic}[{self.partition}]: offset {offset} registered after "
                    f"{self._order[-1]}; offsets must arrive in order"
                )
            self._order.append(offset)
            self._outstanding[offset] = outputs
            counter = self._counter
        counter.add(1)

    def ack(self, offset: int) -> None:
        """One output of ``offset`` is durable downstream."""
        with self._lock:
            left = self._outstanding.get(offset)
            if left is None:
                return
            if left > 1:
                self._outstanding[offset] = left - 1
                return
            del self._outstanding[offset]
            # Read under the lock: detach() swaps it under the same lock, so this offset is
            # counted down exactly once, either here or by detach().
            counter = self._counter
        counter.add(-1)

    def ack_many(self, offsets: list[int]) -> None:
        """One output of each offset is durable (one lock for a whole chunk)."""
        finished = 0
        with self._lock:
            outstanding = self._outstanding
            for offset in offsets:
                left = outstanding.get(offset)
                if left is None:
                    continue
                if left > 1:
                    outstanding[offset] = left - 1
                else:
                    del outstanding[offset]
                    finished += 1
            counter = self._counter
        if finished:
            counter.add(-finished)

    def register_many(self, offsets: list[int]) -> None:
        """Consumed messages of this partition, in order, one output each."""
        with self._lock:
            if self._order and offsets and offsets[0] <= self._order[-1]:
                raise ValueError(
                    f"{self.topic}[{self.partition}]: offset {offsets[0]} registered after "
                    f"{self._order[-1]}; offsets must arrive in order"
                )
            self._order.extend(offsets)
            self._outstanding.update(dict.fromkeys(offsets, 1))
            counter = self._counter
        counter.add(len(offsets))

    def fail(self, offset: int) -> None:
        """An output of ``offset`` could not be delivered: never commit at or past it."""
        with self._lock:
            self._failed.add(offset)

    def advance(self) -> int | None:
        """Move the commit point over durable offsets; return it if it moved since last commit."""
        with self._lock:
            order, outstanding = self._order, self._outstanding
            while order and order[0] not in outstanding and order[0] not in self._failed:
                self.next_commit = order.popleft() + 1
            if self.next_commit is not None and self.next_commit != self.committed:
                return self.next_commit
            return None

    @property
    def in_flight(self) -> int:
        with self._lock:
            return len(self._outstanding)

    def detach(self) -> int:
        """Stop counting into the worker's in-flight total; return what was still out."""
        with self._lock:
            self._counter = _DISCARD
            return len(self._outstanding)

    @property
    def blocked(self) -> bool:
        """True when a failed delivery holds the commit point back."""
        with self._lock:
            return bool(self._failed)


class InFlight:
    """The worker-wide count of consumed messages whose outputs are not all durable yet.

    Ledgers add to it from any thread (the feeding thread registers, the delivery thread
    acks); waiters block until it falls to zero."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.value = 0

    def add(self, delta: int) -> None:
        with self._cond:
            self.value += delta
            if delta <= 0:
                self._cond.notify_all()

    def wait_for(self, done: Callable[[], bool], timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(done, timeout)


class _Discard(InFlight):
    """Where a detached ledger counts: its offsets no longer belong to the worker."""

    def add(self, delta: int) -> None:
        return None


_DISCARD = _Discard()


class OffsetTracker:
    """All ledgers of the current assignment, and the worker-wide in-flight count."""

    def __init__(self) -> None:
        self._ledgers: dict[tuple[str, int], PartitionLedger] = {}
        self._lock = threading.Lock()
        self.counter = InFlight()

    def ledger(self, topic: str, partition: int) -> PartitionLedger:
        """The ledger of the current assignment of a partition (created on first use)."""
        key = (topic, partition)
        ledger = self._ledgers.get(key)
        if ledger is None:
            with self._lock:
                ledger = self._ledgers.setdefault(key, PartitionLedger(topic, partition, self))
        return ledger

    def register(self, messages: Sequence[Any]) -> list[PartitionLedger]:
        """Enter every message (a confluent_kafka.Message or alike) in its partition's ledger
        before any output can be acked; return each message's ledger, in order. One
        register_many per partition of the poll batch, not one call per message."""
        out: list[PartitionLedger] = []
        groups: dict[tuple[str, int], tuple[PartitionLedger, list[int]]] = {}
        for msg in messages:
            key = (msg.topic(), msg.partition())
            group = groups.get(key)
            if group is None:
                group = groups[key] = (self.ledger(*key), [])
            group[1].append(msg.offset())
            out.append(group[0])
        for ledger, offs in groups.values():
            ledger.register_many(offs)
        return out

    def detach(self, partitions: Iterable[tuple[str, int]]) -> list[PartitionLedger]:
        """Forget revoked partitions; late acks go to the detached ledgers and change nothing."""
        out = []
        for key in partitions:
            with self._lock:
                ledger = self._ledgers.pop(key, None)
            if ledger is None:
                continue
            self.counter.add(-ledger.detach())
            out.append(ledger)
        return out

    def ledgers(self) -> list[PartitionLedger]:
        with self._lock:
            return list(self._ledgers.values())

    def commit_points(self) -> list[tuple[str, int, int]]:
        """(topic, partition, offset) for every partition whose commit point moved."""
        points = []
        for ledger in self.ledgers():
            offset = ledger.advance()
            if offset is not None:
                points.append((ledger.topic, ledger.partition, offset))
        return points

    def mark_committed(self, points: Iterable[tuple[str, int, int]]) -> None:
        """The group coordinator (or a transaction) has these commit points."""
        for topic, partition, offset in points:
            self.ledger(topic, partition).committed = offset

    @property
    def in_flight(self) -> int:
        """Messages consumed whose outputs are not all durable yet."""
        return self.counter.value

    def wait_drained(self, timeout: float, partitions: set[tuple[str, int]] | None = None) -> bool:
        """Block until nothing (of ``partitions``, or at all) is in flight, or the timeout."""

        def done() -> bool:
            if partitions is None:
                return self.counter.value <= 0
            with self._lock:
                ledgers = [self._ledgers[k] for k in partitions if k in self._ledgers]
            return all(ledger.in_flight == 0 for ledger in ledgers)

        return self.counter.wait_for(done, timeout)
