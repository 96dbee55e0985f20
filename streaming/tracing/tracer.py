"""Spans for the events worth keeping, made after their outputs are acked.

Imported only when ``tracing.enabled`` (it imports OpenTelemetry). Called on the delivery
thread (predictions acked, dead letters acked), which owns the sampler and the batch-span
memory; spans go to ``SpanExport``, which never blocks. ``stamp`` alone is called on the
feeding thread, as each chunk is queued: the picks made there are that thread's.

One trace per kept event, its root ``event`` span from the event's own time to its last
output's ack, with one child per stage it went through, end to end without gaps:

    consume (time in the topic) | decode | preprocess | queue | inference | publish (to ack)

A dead letter's last stage is cut where it was refused, followed by ``dead_letter`` (to its
ack). Each model call is one ``inference batch`` span (a trace of its own, made once, when
its first kept event needs it), linked from the events' ``inference`` spans. The root's parent
is the event's incoming traceparent; without one, the trace id is the MD5 of the event id
(streaming.tracing.stamps.trace_id_of), or the one the worker wrote into the event's outputs
(dead letters; predictions with ``tracing.new_trace_header``).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import numpy as np
from opentelemetry.sdk.resources import Resource

from streaming.config import PipelineConfig
from streaming.engine.types import (
    STAGE_DECODE,
    STAGE_INFERENCE,
    STAGE_PREPROCESS,
    STAGE_PUBLISH,
    STAGE_TIMEOUT,
    STAGE_VALIDATE,
    Chunk,
    Headers,
    Rejection,
)
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import WorkerStats
from streaming.tracing import otlp
from streaming.tracing.export import SpanExport
from streaming.tracing.sampler import QueuePicks, TailSampler
from streaming.tracing.senders import make_sender
from streaming.tracing.stamps import (
    UPSTREAM,
    BatchStamp,
    ChunkTimes,
    TraceRow,
    parse_traceparent,
    picked_traceparents,
    stamp_traceparents,
    trace_id_of,
    with_traceparent,
)

STAGES = ("consume", "decode", "preprocess", "queue", "inference", "publish")
"""Span names of the stages, in the order an event passes them."""
_CUT_AT = {
    STAGE_DECODE: "decode",
    STAGE_VALIDATE: "decode",
    STAGE_PREPROCESS: "preprocess",
    STAGE_INFERENCE: "inference",
    STAGE_TIMEOUT: "inference",
    STAGE_PUBLISH: "publish",
}
"""A dead letter's stage -> the span it was refused in."""
_BATCHES_REMEMBERED = 4_096


class Tracer:
    """Decides which acked events to trace and builds their spans (delivery thread)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        metrics: WorkerMetrics,
        stats: WorkerStats,
        export: SpanExport | None = None,
    ) -> None:
        t = cfg.tracing
        recorder = stats.end_to_end_ms
        self.sampler = TailSampler(
            t.ratio,
            t.slow_ms,
            lambda: (recorder.count, recorder.percentile(99)),
            max_per_s=t.max_per_s,
        )
        self._counts = {
            why: metrics.traces.labels(cfg.name, why)
            for why in ("slow", "sampled", "ratio", "dead_letter", "over_budget")
        }
        self._new_trace_header = t.new_trace_header
        self.picks = (
            QueuePicks(self.sampler, self._counts["over_budget"].inc)
            if t.new_trace_header == "traced"
            else None
        )
        """The feeding thread's: picks the ratio (and the already slow) as chunks are queued,
        so that their predictions carry their trace (``tracing.new_trace_header: traced``)."""
        attrs: dict[str, Any] = {"streaming.pipeline": cfg.name}
        if t.service_name is not None:
            attrs["service.name"] = t.service_name
        resource = Resource.create(attrs)  # reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if resource.attributes.get("service.name", "").startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": f"streaming-{cfg.name}"}))
        self.resource = dict(resource.attributes)
        self.export = export or SpanExport(
            make_sender(t),
            t,
            metrics,
            cfg.name,
            otlp.resource(self.resource),
            otlp.scope("streaming.tracing"),
        )
        self._model = cfg.model.name
        self._topic = cfg.topics.input
        self._batches: OrderedDict[int, tuple[bytes, bytes]] = OrderedDict()
        self._attrs: dict[tuple[str, int], bytes] = {}
        self._rand = random.Random()
        self.kept = {"slow": 0, "sampled": 0, "ratio": 0, "dead_letter": 0, "over_budget": 0}
        """Events traced, by why (delivery thread)."""

    # ------------------------------------------------------------------ decisions

    def stamp(self, c: Chunk) -> None:
        """A chunk is queued (the feeding thread: ``picks`` is its own): each row's flags
        (came with a traceparent, sampled, picked here), and the traceparents its outputs will
        carry, by ``tracing.new_trace_header``."""
        every = self._new_trace_header is True
        flags, made = stamp_traceparents(c.headers, c.event_ids if every else None)
        if self.picks is not None and c.times is not None and c.times.queued is not None:
            flags = self.picks.pick(c.ts_ms, flags, c.times.queued * 1000.0)
            made = picked_traceparents(c.event_ids, flags)
        c.trace_flags, c.new_traceparents = flags, made

    def predictions(self, c: Chunk, rows: range | list[int], latencies_ms: np.ndarray) -> None:
        """A chunk's predictions are acked: trace the rows the sampler keeps."""
        times = c.times
        if times is None or len(latencies_ms) != len(rows):
            return  # refused rows were handed to the dead letters, which trace them
        flags = c.trace_flags  # None: no row came with a traceparent, none picked (common)
        queued = self.picks is not None  # the ratio was picked as the chunk was queued
        if flags is None and self.sampler.spent():  # a drain, mostly: only count the skipped
            skipped = self.sampler.qualifying(latencies_ms, queued)
            if skipped:
                self._count("over_budget", skipped)
            return
        if flags is not None:
            flags = flags[rows.start : rows.stop] if isinstance(rows, range) else flags[rows]
        made = c.new_traceparents
        for why, picked, budgeted in self.sampler.keep(latencies_ms, flags, queued):
            if picked.size == 0:
                continue
            if not budgeted:
                allowed = self.sampler.within_budget(picked)
                if allowed.size < picked.size:
                    self._count("over_budget", picked.size - allowed.size)
                    if allowed.size == 0:  # a drain, mostly: the budget is spent
                        continue
                picked = allowed
            self._count(why, picked.size)
            for j in picked.tolist():
                i = rows[j]
                start = c.ts_ms[i] / 1000.0
                end = (c.ts_ms[i] + float(latencies_ms[j])) / 1000.0
                self._event(
                    with_traceparent(c.headers[i], made[i]) if made is not None else c.headers[i],
                    flags is not None and bool(flags[j] & UPSTREAM),
                    start,
                    end,
                    times,
                    c.batch,
                    None,
                    {"event.id": c.event_ids[i], "event.kept": why},
                    self._where(c, i),
                )

    def dead_letter(
        self,
        row: TraceRow,
        headers: Headers | None,
        rejection: Rejection,
        rejected_s: float,
        acked_s: float,
        where: dict[str, Any],
    ) -> None:
        """A dead letter is acked: always traced."""
        start = row.start_s
        if start is None:  # not decoded: the record's own time is unknown
            start = row.times.polled if row.times is not None else rejected_s
        cut = _CUT_AT.get(rejection.stage, "publish")
        if cut == "inference" and row.batch is None:  # refused before any model call
            cut = "queue"  # (an open breaker, a passed deadline, a version already hung)
        attrs: dict[str, Any] = {
            "event.kept": "dead_letter",
            "dead_letter.stage": rejection.stage,
            "dead_letter.reason_class": rejection.reason_class,
        }
        if row.event_id is not None:
            attrs["event.id"] = row.event_id
        self._event(
            headers,
            row.upstream,
            start,
            acked_s,
            row.times,
            row.batch,
            (cut, rejected_s),
            attrs,
            where,
        )
        self._count("dead_letter", 1)

    def _count(self, why: str, n: int) -> None:
        self.kept[why] += n
        self._counts[why].inc(n)

    # ------------------------------------------------------------------ spans

    def _event(
        self,
        headers: Headers | None,
        upstream: bool,
        start: float,
        end: float,
        times: ChunkTimes | None,
        batch: BatchStamp | None,
        cut: tuple[str, float] | None,
        attrs: dict[str, Any],
        where: dict[str, Any],
    ) -> None:
        ids = parse_traceparent(headers)
        rand = self._rand.getrandbits
        if ids is None:  # no header on the outputs: the trace is found by the event id
            event_id = attrs.get("event.id")
            trace_id = trace_id_of(event_id) if event_id is not None else rand(128) or 1
            parent, root_id = None, rand(64) or 1
        elif upstream:
            trace_id, parent, root_id = ids[0], ids[1], rand(64) or 1
        else:  # the traceparent the worker wrote: our root's id is its parent id
            trace_id, parent, root_id = ids[0], None, ids[1]
        tid = trace_id.to_bytes(16, "big")
        root = root_id.to_bytes(8, "big")
        spans: list[bytes] = []
        for name, s, e in self._stages(start, end, times, batch, cut):
            if name == "inference" and batch is not None:
                spans.append(
                    otlp.span(
                        name,
                        tid,
                        (rand(64) or 1).to_bytes(8, "big"),
                        root,
                        s,
                        e,
                        attrs=self._batch_attrs(batch),
                        link=self._batch_span(batch),
                    )
                )
                continue
            kind = otlp.PRODUCER if name in ("publish", "dead_letter") else otlp.INTERNAL
            spans.append(otlp.span(name, tid, (rand(64) or 1).to_bytes(8, "big"), root, s, e, kind))
        error = attrs.get("event.kept") == "dead_letter"
        spans.append(
            otlp.span(
                "event",
                tid,
                root,
                parent.to_bytes(8, "big") if parent else None,
                start,
                end,
                otlp.CONSUMER,
                {**where, **attrs},
                error=attrs["dead_letter.reason_class"] if error else None,
                remote_parent=parent is not None,
            )
        )
        self.export.offer(spans)

    def _stages(
        self,
        start: float,
        end: float,
        times: ChunkTimes | None,
        batch: BatchStamp | None,
        cut: tuple[str, float] | None,
    ) -> list[tuple[str, float, float]]:
        """(name, start, end) per stage passed, back to back from ``start`` to ``end``."""
        marks: list[float | None] = [
            times.polled if times else None,
            times.decoded if times else None,
            times.queued if times else None,
            batch.start if batch else None,
            batch.end if batch else None,
            None,
        ]
        out: list[tuple[str, float, float]] = []
        at = start
        for name, mark in zip(STAGES, marks, strict=True):
            last = cut is not None and name == cut[0]
            if last:
                assert cut is not None
                mark = cut[1]
            elif mark is None:
                if cut is None and name == "publish":
                    mark = end
                else:
                    continue
            mark = min(max(mark, at), end)  # clocks may disagree a little: never backwards
            out.append((name, at, mark))
            at = mark
            if last:
                break
        if cut is not None:
            out.append(("dead_letter", at, end))
        return out

    def _batch_span(self, batch: BatchStamp) -> tuple[bytes, bytes] | None:
        """The model call's own span, sent once; its (trace id, span id) is what events link to."""
        if batch.end is None:
            return None
        ctx = self._batches.get(batch.seq)
        if ctx is not None:
            return ctx
        rand = self._rand.getrandbits
        ctx = ((rand(128) or 1).to_bytes(16, "big"), (rand(64) or 1).to_bytes(8, "big"))
        self._batches[batch.seq] = ctx
        if len(self._batches) > _BATCHES_REMEMBERED:
            self._batches.popitem(last=False)
        span = otlp.span(
            "inference batch",
            ctx[0],
            ctx[1],
            None,
            batch.start,
            batch.end,
            attrs=self._batch_attrs(batch),
        )
        self.export.offer([span])
        return ctx

    def _batch_attrs(self, batch: BatchStamp) -> bytes:
        """A model call's attributes, encoded once per (version, batch size) in use."""
        key = (batch.version, batch.size)
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = self._attrs[key] = otlp.attributes(
                9, {"model.name": self._model, "model.version": key[0], "batch.size": key[1]}
            )
        return attrs

    def _where(self, c: Chunk, i: int) -> dict[str, Any]:
        ledger = c.ledgers[i]
        return {
            "messaging.system": "kafka",
            "messaging.source.name": ledger.topic,
            "messaging.kafka.source.partition": ledger.partition,
            "messaging.kafka.message.offset": c.offsets[i],
        }

    def close(self) -> None:
        """Send what is queued (bounded by the export timeout), then stop the exporter."""
        self.export.close()
