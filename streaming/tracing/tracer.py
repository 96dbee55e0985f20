"""Spans for the events worth keeping, made after their outputs are acked.

Imported only when ``tracing.enabled`` (it imports OpenTelemetry). Called on the delivery
thread (predictions acked, dead letters acked), which owns the sampler and the batch-span
memory; spans go to ``SpanExport``, which never blocks.

One trace per kept event, its root ``event`` span from the event's own time to its last
output's ack, with one child per stage it went through, end to end without gaps:

    consume (time in the topic) | decode | preprocess | queue | inference | publish (to ack)

A dead letter's last stage is cut where it was refused, followed by ``dead_letter`` (to its
ack). Each model call is one ``inference batch`` span (a trace of its own, made once, when
its first kept event needs it), linked from the events' ``inference`` spans. The root's parent
is the event's incoming traceparent; without one, the trace is the one the worker wrote into
the event's outputs (streaming.tracing.stamps).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any

import numpy as np
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.status import Status, StatusCode

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
from streaming.tracing.export import SpanExport, make_exporter
from streaming.tracing.sampler import TailSampler
from streaming.tracing.stamps import (
    UPSTREAM,
    BatchStamp,
    ChunkTimes,
    TraceRow,
    parse_traceparent,
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
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)


def _ns(seconds: float) -> int:
    return round(seconds * 1e9)


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
        self.export = export or SpanExport(make_exporter(t), t, metrics, cfg.name)
        attrs: dict[str, Any] = {"streaming.pipeline": cfg.name}
        if t.service_name is not None:
            attrs["service.name"] = t.service_name
        resource = Resource.create(attrs)  # reads OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
        if resource.attributes.get("service.name", "").startswith("unknown_service"):
            resource = resource.merge(Resource({"service.name": f"streaming-{cfg.name}"}))
        self._resource = resource
        self._scope = InstrumentationScope("streaming.tracing")
        self._model = cfg.model.name
        self._topic = cfg.topics.input
        self._batches: OrderedDict[int, SpanContext] = OrderedDict()
        self._rand = random.Random()
        self.kept = {"slow": 0, "sampled": 0, "ratio": 0, "dead_letter": 0, "over_budget": 0}
        """Events traced, by why (delivery thread)."""

    # ------------------------------------------------------------------ decisions

    def predictions(self, c: Chunk, rows: range | list[int], latencies_ms: np.ndarray) -> None:
        """A chunk's predictions are acked: trace the rows the sampler keeps."""
        times = c.times
        if times is None or len(latencies_ms) != len(rows):
            return  # refused rows were handed to the dead letters, which trace them
        flags = c.trace_flags[rows] if c.trace_flags is not None else None
        made = c.new_traceparents
        slow, sampled, lucky = self.sampler.keep(latencies_ms, flags)
        for why, picked in (("slow", slow), ("sampled", sampled), ("ratio", lucky)):
            if picked.size == 0:
                continue
            if why != "sampled":
                allowed = self.sampler.within_budget(picked)
                if allowed.size < picked.size:
                    self._count("over_budget", picked.size - allowed.size)
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
        if ids is None:
            trace_id, parent, root_id = rand(128) or 1, None, rand(64) or 1
        elif upstream:
            trace_id, parent, root_id = ids[0], ids[1], rand(64) or 1
        else:  # the traceparent the worker wrote: our root's id is its parent id
            trace_id, parent, root_id = ids[0], None, ids[1]
        root_ctx = SpanContext(trace_id, root_id, False, _SAMPLED)
        parent_ctx = SpanContext(trace_id, parent, True, _SAMPLED) if parent else None
        spans: list[ReadableSpan] = []
        batch_link = None
        for name, s, e in self._stages(start, end, times, batch, cut):
            span_attrs: dict[str, Any] = {}
            links: tuple[Link, ...] = ()
            if name == "inference" and batch is not None:
                span_attrs = {
                    "model.name": self._model,
                    "model.version": batch.version,
                    "batch.size": batch.size,
                }
                batch_link = batch_link or self._batch_span(batch)
                if batch_link is not None:
                    links = (Link(batch_link),)
            kind = SpanKind.PRODUCER if name in ("publish", "dead_letter") else SpanKind.INTERNAL
            spans.append(
                self._span(
                    name,
                    SpanContext(trace_id, rand(64) or 1, False, _SAMPLED),
                    root_ctx,
                    s,
                    e,
                    span_attrs,
                    links,
                    kind,
                )
            )
        error = attrs.get("event.kept") == "dead_letter"
        root = self._span(
            "event",
            root_ctx,
            parent_ctx,
            start,
            end,
            {**where, **attrs},
            (),
            SpanKind.CONSUMER,
            Status(StatusCode.ERROR, attrs["dead_letter.reason_class"]) if error else None,
        )
        spans.append(root)
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

    def _batch_span(self, batch: BatchStamp) -> SpanContext | None:
        """The model call's own span, sent once; its context is what events link to."""
        if batch.end is None:
            return None
        ctx = self._batches.get(batch.seq)
        if ctx is not None:
            return ctx
        rand = self._rand.getrandbits
        ctx = SpanContext(rand(128) or 1, rand(64) or 1, False, _SAMPLED)
        self._batches[batch.seq] = ctx
        if len(self._batches) > _BATCHES_REMEMBERED:
            self._batches.popitem(last=False)
        span = self._span(
            "inference batch",
            ctx,
            None,
            batch.start,
            batch.end,
            {"model.name": self._model, "model.version": batch.version, "batch.size": batch.size},
            (),
            SpanKind.INTERNAL,
        )
        self.export.offer([span])
        return ctx

    def _span(
        self,
        name: str,
        ctx: SpanContext,
        parent: SpanContext | None,
        start: float,
        end: float,
        attrs: dict[str, Any],
        links: tuple[Link, ...],
        kind: SpanKind,
        status: Status | None = None,
    ) -> ReadableSpan:
        return ReadableSpan(
            name=name,
            context=ctx,
            parent=parent,
            resource=self._resource,
            attributes=attrs,
            links=links,
            kind=kind,
            status=status or Status(StatusCode.UNSET),
            start_time=_ns(start),
            end_time=_ns(end),
            instrumentation_scope=self._scope,
        )

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
