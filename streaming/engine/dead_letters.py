"""Dead letters: a rejected event goes to the dead-letter topic with its original bytes and
headers plus the reason (README, Topics and records), and its input offset is acked only once
the broker has the dead letter, so a rejection loses nothing either.

A dead letter always fits its topic (streaming.engine.fitting): an original too large for it
is cut to a prefix, with its size and sha256 in the headers. A record the broker refuses at
delivery (too large for a limit the worker could not read, invalid for the topic) is sent
again by a thread of its own: the refused prediction as a dead letter of stage ``publish``, a
refused dead letter cut to its headers alone.

Called from the feeding thread (decode, preprocess, a hung version's refused rows), the
inference threads (inference), the watchdog (a hung call's rows and queue) and the delivery
thread (refusals, handed to the ``dead-letters`` thread through a queue, since the delivery
thread must never wait for room in the producer's queue that only it frees). What they share
(the log budget, the queue) is locked.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from confluent_kafka import Message

from streaming.commit.ledger import PartitionLedger
from streaming.config import PipelineConfig
from streaming.engine.fitting import fit_dead_letter
from streaming.engine.outcomes import Outcomes
from streaming.engine.outputs import dead_letter_headers
from streaming.engine.types import STAGE_PUBLISH, Chunk, Rejection, Sink
from streaming.kafka.limits import OutputLimits
from streaming.kafka.refusals import RECORD, classify
from streaming.observability.logs import LogBudget, trace_id
from streaming.observability.threads import named_thread
from streaming.tracing.stamps import UPSTREAM, TraceRow, with_traceparent, worker_traceparent

if TYPE_CHECKING:
    from streaming.tracing.tracer import Tracer

log = logging.getLogger("streaming.worker")


@dataclass(frozen=True, slots=True)
class _Pending:
    """A dead letter to send again (or a refused prediction to send as one)."""

    value: bytes | None
    key: bytes | None
    headers: Any
    ledger: PartitionLedger
    offset: int
    rejection: Rejection
    minimal: bool
    """Send our headers alone (the full dead letter was refused)."""
    trace: TraceRow | None = None


class DeadLetters:
    """Produces the dead letters of one engine."""

    def __init__(
        self,
        config: PipelineConfig,
        worker_id: str,
        sink: Sink,
        outcomes: Outcomes,
        limits: OutputLimits,
        tracer: Tracer | None = None,
    ) -> None:
        self.topic = config.topics.dead_letters
        self._tracer = tracer
        self.worker_id = worker_id
        self._sink = sink
        self._outcomes = outcomes
        self._limit = limits.for_topic(self.topic)
        self._log_budget = LogBudget(per_second=20)
        self._pending: queue.Queue[_Pending | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    def message(
        self,
        msg: Message,
        ledger: PartitionLedger,
        rejection: Rejection,
        trace: TraceRow | None = None,
    ) -> None:
        """Dead-letter a consumed message (decoding or preprocessing refused it)."""
        offset = msg.offset() or 0
        headers = msg.headers()
        if trace is not None and not trace.upstream:  # tracing: the dead letter names its trace
            headers = with_traceparent(headers, worker_traceparent(trace.event_id))
        self._send(msg.value(), msg.key(), headers, ledger, offset, rejection, trace=trace)

    def rows(self, chunk: Chunk, rows: Iterable[int], rejection: Rejection) -> None:
        """Dead-letter rows of a chunk with one rejection."""
        for i in rows:
            self.row(chunk, i, rejection)

    def row(self, chunk: Chunk, i: int, rejection: Rejection) -> None:
        """Dead-letter a row that got past decoding, with its original bytes unchanged."""
        self._send(
            chunk.values[i],
            chunk.keys[i],
            _headers(chunk, i),
            chunk.ledgers[i],
            chunk.offsets[i],
            rejection,
            trace=self._trace_row(chunk, i),
        )

    def _trace_row(self, chunk: Chunk, i: int) -> TraceRow | None:
        if self._tracer is None or chunk.times is None:
            return None
        flags = chunk.trace_flags
        return TraceRow(
            chunk.ts_ms[i] / 1000.0,
            chunk.times,
            chunk.batch,
            chunk.event_ids[i],
            flags is not None and bool(flags[i] & UPSTREAM),
        )

    def refused(self, chunk: Chunk, i: int, err: Any, topic: str) -> None:
        """The broker refused row ``i``'s output on ``topic`` (any thread, delivery included):
        dead-letter it, stage publish, with the broker's reason."""
        rejection = Rejection(
            STAGE_PUBLISH, f"{topic} refused the record: {err}"[:480], _reason_class(err)
        )
        self._later(
            _Pending(
                chunk.values[i],
                chunk.keys[i],
                _headers(chunk, i),
                chunk.ledgers[i],
                chunk.offsets[i],
                rejection,
                minimal=False,
                trace=self._trace_row(chunk, i),
            )
        )

    def _send(
        self,
        value: bytes | None,
        key: bytes | None,
        headers: Any,
        ledger: PartitionLedger,
        offset: int,
        rejection: Rejection,
        minimal: bool = False,
        trace: TraceRow | None = None,
    ) -> None:
        topic, partition = ledger.topic, ledger.partition
        self._log(rejection, headers, topic, partition, offset)
        ours = dead_letter_headers(None, rejection, topic, partition, offset, self.worker_id)
        limit = 0 if minimal else self._limit
        out_value, out_key, out_headers = fit_dead_letter(value, key, headers, ours, limit)
        pending = _Pending(
            value, key, headers, ledger, offset, rejection, minimal=True, trace=trace
        )
        rejected_s = time.time() if trace is not None else 0.0
        self._sink.produce(
            self.topic,
            out_value,
            out_key,
            out_headers,
            partial(self._delivered, pending, minimal, rejected_s),
        )

    def _delivered(
        self, pending: _Pending, minimal: bool, rejected_s: float, err: Any, _msg: Message
    ) -> None:
        ledger, offset = pending.ledger, pending.offset
        if err is not None:
            if not minimal and classify(err) == RECORD:
                log.warning("dead letter refused (%s): sending its headers alone", err)
                self._later(pending)
                return
            ledger.fail(offset)
            self._outcomes.failed(f"{ledger.topic}[{ledger.partition}]@{offset}", err, self.topic)
            return
        ledger.ack(offset)
        self._outcomes.dead_letter(pending.rejection)
        if pending.trace is not None and self._tracer is not None:
            self._tracer.dead_letter(
                pending.trace,
                pending.headers,
                pending.rejection,
                rejected_s,
                time.time(),
                {
                    "messaging.system": "kafka",
                    "messaging.source.name": ledger.topic,
                    "messaging.kafka.source.partition": ledger.partition,
                    "messaging.kafka.message.offset": offset,
                },
            )

    # ------------------------------------------------------------------ refusals, sent again

    def _later(self, pending: _Pending) -> None:
        with self._thread_lock:
            if self._thread is None:
                self._thread = named_thread(self._send_later, "dead-letters")
                self._thread.start()
        self._pending.put(pending)

    def _send_later(self) -> None:
        while True:
            p = self._pending.get()
            if p is None:
                return
            self._send(
                p.value,
                p.key,
                p.headers,
                p.ledger,
                p.offset,
                p.rejection,
                minimal=p.minimal,
                trace=p.trace,
            )

    def close(self) -> None:
        """Stop the refusals thread once what it holds is sent."""
        with self._thread_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._pending.put(None)
            thread.join(timeout=10)

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


def _reason_class(err: Any) -> str:
    name = err.name() if hasattr(err, "name") else "refused"
    return name.lstrip("_").lower()


def _headers(chunk: Chunk, i: int) -> Any:
    """Row ``i``'s input headers, plus the traceparent the worker started for it (tracing: a
    dead letter always says which trace is its own, even where predictions do not)."""
    made = chunk.new_traceparents
    if made is not None and made[i] is not None:
        return with_traceparent(chunk.headers[i], made[i])
    flags = chunk.trace_flags
    if chunk.times is None or (flags is not None and flags[i] & UPSTREAM):
        return chunk.headers[i]  # tracing off, or the event's own traceparent goes on
    return with_traceparent(chunk.headers[i], worker_traceparent(chunk.event_ids[i]))
