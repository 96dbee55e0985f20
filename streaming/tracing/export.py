"""Sends finished spans to an OTLP endpoint on a thread of its own, never making anyone wait.

The delivery thread hands spans over with ``offer``, which never blocks: past ``queue_spans``
waiting, spans are dropped and counted (``queue_full``). The ``otlp-export`` thread takes them
in batches (up to ``EXPORT_BATCH`` spans or ``EXPORT_DELAY_S`` of waiting) and hands each
batch, as one OTLP request, to its sender (streaming.tracing.senders); a batch it could not
send (collector down, slow past ``export_timeout_s``, refusing) is counted as dropped
(``export_failed``). So a
collector that is down costs spans, never latency. (The SDK's BatchSpanProcessor also drops
when full, but does not say how many; we count both ways spans are lost.)

Threads: ``offer`` on the delivery thread; the queue is the hand-over; the counters each have
one writer (queue_full: the offering thread; sent, export_failed: the export thread).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from streaming.config import TracingConfig
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.threads import named_thread
from streaming.tracing.otlp import request

if TYPE_CHECKING:
    from streaming.tracing.senders import Sender

log = logging.getLogger("streaming.tracing")

EXPORT_BATCH = 512
"""Spans per OTLP request at most."""
EXPORT_DELAY_S = 1.0
"""Spans wait at most this long for others to share their request (unless a batch fills). A
request per traced event, as they came, cost about as much CPU as the rest of tracing."""


class SpanExport:
    """A bounded queue of spans and the thread that exports them."""

    def __init__(
        self,
        sender: Sender,
        cfg: TracingConfig,
        metrics: WorkerMetrics,
        pipeline: str,
        resource: bytes,
        scope: bytes,
    ) -> None:
        self.sender = sender
        self._resource, self._scope = resource, scope
        self._limit = cfg.queue_spans
        self._timeout_s = cfg.export_timeout_s
        self._queue: queue.SimpleQueue[Sequence[bytes] | None] = queue.SimpleQueue()
        self._waiting = 0
        self._lock = threading.Lock()
        self._sent = metrics.trace_spans_sent.labels(pipeline)
        self._full = metrics.trace_spans_dropped.labels(pipeline, "queue_full")
        self._failed = metrics.trace_spans_dropped.labels(pipeline, "export_failed")
        self.sent = 0
        self.dropped_full = 0
        """Spans refused because too many waited (written by the offering thread)."""
        self.dropped_failed = 0
        """Spans in requests that failed (written by the export thread)."""
        self._thread = named_thread(self._run, "otlp-export")
        self._thread.start()

    def offer(self, spans: Sequence[bytes]) -> bool:
        """Queue one event's spans (encoded, streaming.tracing.otlp), or drop them at once when
        too many wait (never blocks)."""
        n = len(spans)
        with self._lock:
            if self._waiting + n > self._limit:
                full = True
            else:
                full = False
                self._waiting += n
        if full:
            self.dropped_full += n
            self._full.inc(n)
            return False
        self._queue.put(spans)
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = list(item)
            stop = False
            deadline = time.monotonic() + EXPORT_DELAY_S
            while len(batch) < EXPORT_BATCH:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    more = self._queue.get(timeout=left)
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.extend(more)
            self._export(batch)
            if stop:
                return

    def _export(self, batch: list[bytes]) -> None:
        try:
            ok = self.sender.send(request(self._resource, self._scope, batch))
        except Exception:
            log.exception("OTLP export raised")
            ok = False
        with self._lock:
            self._waiting -= len(batch)
        if ok:
            self.sent += len(batch)
            self._sent.inc(len(batch))
        else:
            self.dropped_failed += len(batch)
            self._failed.inc(len(batch))

    @property
    def dropped(self) -> int:
        """Spans lost either way."""
        return self.dropped_full + self.dropped_failed

    def close(self) -> None:
        """Send what waits, within one export timeout (plus a second), then stop."""
        self._queue.put(None)
        deadline = time.monotonic() + self._timeout_s + 1.0
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            log.warning("OTLP export still busy at close: %d spans left unsent", self._waiting)
        self.sender.shutdown()
