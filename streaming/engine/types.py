"""Types the stages share, kept apart so that stages never import each other for them.

Stages (the dead-letter header ``dead_letter.stage``), a rejection, the part of a Kafka message
the engine reads, a chunk of rows on its way to a model, and the sink every output goes to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from streaming.commit.ledger import PartitionLedger
    from streaming.tracing.stamps import BatchStamp, ChunkTimes

STAGE_DECODE = "decode"
STAGE_VALIDATE = "validate"
STAGE_PREPROCESS = "preprocess"
STAGE_INFERENCE = "inference"
STAGE_TIMEOUT = "timeout"
STAGE_PUBLISH = "publish"
"""The broker refused the record's output (too large for it, invalid for the topic)."""
STAGES = (
    STAGE_DECODE,
    STAGE_VALIDATE,
    STAGE_PREPROCESS,
    STAGE_INFERENCE,
    STAGE_TIMEOUT,
    STAGE_PUBLISH,
)

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event cannot be scored. ``reason_class`` is a bounded label for metrics."""

    stage: str
    reason: str
    reason_class: str
    version: str | None = None
    """The model version that failed it (stage inference), for per-version error rates."""


class SourceMessage(Protocol):
    """The part of confluent_kafka.Message the engine reads."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def headers(self) -> Headers | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


DeliveryCallback = Callable[[Any, Any], None]
"""Called with (error or None, message) once the sink has the record durable, or gave up."""


class Sink(Protocol):
    """Where every output goes: the Kafka producer (streaming.kafka.sink) or, for benchmarks
    and fuzz tests, a sink that acknowledges at once (streaming.dev.inprocess).

    Contract: ``produce`` never drops a record (it waits when full); delivery callbacks never
    run two at a time (each sink serialises them), so what they write has one writer."""

    def start(self) -> None: ...

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Headers | None,
        on_delivery: DeliveryCallback | None,
    ) -> None: ...

    def produce_rows(
        self,
        topic: str,
        rows: Iterable[int],
        values: Sequence[bytes],
        keys: Sequence[bytes | None],
        headers: Sequence[Headers | None],
        on_delivery: DeliveryCallback | None,
    ) -> None:
        """``produce`` of ``values[i]`` (``keys[i]``, ``headers[i]``) for each i of ``rows``,
        in order. A sink subclassing this protocol gets this loop; the Kafka sink does it in
        one Python frame."""
        for i in rows:
            self.produce(topic, values[i], keys[i], headers[i], on_delivery)

    def close(self, timeout: float) -> int:
        """Flush; return how many records were still not delivered."""
        ...


@dataclass(slots=True)
class Chunk:
    """Rows of one poll routed to one version, with what their outputs need."""

    features: np.ndarray
    event_ids: list[str]
    ts_ms: list[int]
    keys: list[bytes | None]
    values: list[bytes]
    """The original bytes, kept for dead letters after decoding (a reference, not a copy)."""
    headers: list[Headers | None]
    ledgers: list[PartitionLedger]
    offsets: list[int]
    enqueued: float
    shadow: bool = False
    """A shadow copy: published to the shadow topic, never acknowledged in the ledger."""
    times: ChunkTimes | None = None
    """Stage times for traces (tracing.enabled only; streaming.tracing.stamps)."""
    trace_flags: np.ndarray | None = None
    """Per row: came with a traceparent, and was it sampled (tracing.enabled, and only where
    some row came with one; ``times`` says whether tracing is on)."""
    new_traceparents: list[bytes | None] | None = None
    """Per row: the traceparent the worker starts for an event that came without one, added
    to its outputs (tracing.enabled only)."""
    batch: BatchStamp | None = None
    """The model call that scored these rows (tracing.enabled only)."""
    columns: dict[str, np.ndarray] | None = None
    """Record fields the decision graph's rules read, one array each (streaming.decision):
    made on the feeding thread so that the inference thread never reads a record."""

    def __len__(self) -> int:
        return len(self.event_ids)

    def split(self, n: int) -> tuple[Chunk, Chunk]:
        """The first n rows, and the rest (which keeps its original enqueue time)."""

        def part(s: slice) -> Chunk:
            return Chunk(
                self.features[s],
                self.event_ids[s],
                self.ts_ms[s],
                self.keys[s],
                self.values[s],
                self.headers[s],
                self.ledgers[s],
                self.offsets[s],
                self.enqueued,
                self.shadow,
                self.times,
                self.trace_flags[s] if self.trace_flags is not None else None,
                self.new_traceparents[s] if self.new_traceparents is not None else None,
                None,
                None if self.columns is None else {k: v[s] for k, v in self.columns.items()},
            )

        return part(slice(0, n)), part(slice(n, None))
