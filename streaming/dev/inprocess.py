"""The engine without a broker: in-memory messages and a sink that acknowledges at once.

For the engine benchmark and the engine fuzz tests, which drive ``Engine.submit`` as the worker
does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from streaming.engine.types import DeliveryCallback, Headers, Sink


@dataclass
class InMemoryMessage:
    """The part of a Kafka message the engine reads."""

    _value: bytes | None
    _key: bytes | None
    _offset: int
    _topic: str = "in-memory"
    _partition: int = 0

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def error(self) -> None:
        return None


class InstantSink(Sink):
    """Acknowledges every record as it is produced; notes when, and keeps them if asked.

    Delivery callbacks run under its lock, one at a time, as the Sink contract asks (the
    producing threads here are the feeding thread and the inference threads)."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.records: list[tuple[str, bytes | None, dict[str, bytes]]] = []
        self.acked_at: dict[str, dict[bytes, float]] = {}
        """Per topic, per key: when it was acknowledged. Bytes keys and float values are not
        tracked by the collector, so a long benchmark adds no collections of its own to the
        latencies it measures (tuple keys did: 10-14 ms young collections)."""
        self.lock = threading.Lock()

    def start(self) -> None:
        return None

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        on_delivery: DeliveryCallback | None,
    ) -> None:
        with self.lock:
            if key is not None:
                acked = self.acked_at.get(topic)
                if acked is None:
                    acked = self.acked_at[topic] = {}
                acked[key] = time.perf_counter()
            if self.keep:
                self.records.append((topic, value, dict(headers or [])))
            if on_delivery is not None:
                on_delivery(None, None)

    def close(self, timeout: float) -> int:
        return 0
