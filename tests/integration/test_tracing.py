"""Tail-sampled traces (tracing.enabled), received by a real OTLP/HTTP endpoint.

The spans go through the OpenTelemetry OTLP exporter to streaming.dev.otlp_receiver, which
decodes the protobuf requests with opentelemetry-proto. Set OTLP_TEST_ENDPOINT to send the
broker test's spans to a real collector as well (its checks still read the local receiver).

Every check is by event id (or by the dead letter's source offset), with what the run measured
taken as the expectation: which events were slow is decided by their own event times.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import time
from collections import defaultdict

import pytest
from confluent_kafka import Producer

from streaming.config import load_config
from streaming.dev.inprocess import InMemoryMessage, InstantSink
from streaming.dev.otlp_receiver import OtlpReceiver, ReceivedSpan
from streaming.engine.engine import Engine
from streaming.kafka import settings as kafka
from streaming.kafka.topics import create_topics
from streaming.pipeline import load_pipeline
from streaming.tracing.tracer import STAGES
from streaming.worker import Worker
from tests.kafka_helpers import BASE_CONFIG, ROOT, read_topic, write_config

pytestmark = pytest.mark.integration

MS = 1_000_000  # ns
RATIO = 0.1
SLOW_MS = 120_000
BACKDATE_MS = 600_000
"""Events whose own time is this far back are slow (their end-to-end time is over SLOW_MS)."""


def _traces(spans: list[ReceivedSpan]) -> dict[str, list[ReceivedSpan]]:
    out: dict[str, list[ReceivedSpan]] = defaultdict(list)
    for s in spans:
        out[s.trace_id].append(s)
    return out


def _produce(cfg, n: int, seed: int) -> dict[str, dict]:
    """n generated events (3% invalid); every 40th valid one backdated; traceparents varied:
    a third none, the rest their own upstream span, every 25th of those sampled upstream."""
    spec = load_pipeline(cfg.pipeline.module)
    now = int(time.time() * 1000)
    producer = Producer({**kafka.producer_settings(cfg.kafka, "trace-test"), "linger.ms": 50})
    truth: dict[str, dict] = {}
    for i, ev in enumerate(spec.make_generator(seed).batch(n, now, 0.03)):
        value, slow = ev.value, False
        if ev.invalid_kind is None and i % 40 == 0:
            body = json.loads(value)
            body["ts_ms"] -= BACKDATE_MS
            value, slow = json.dumps(body).encode(), True
        headers, upstream, sampled = None, None, False
        if i % 3:
            sampled = i % 25 == 1
            upstream = (f"{i + 1:032x}", f"{i + 7:016x}")
            tp = f"00-{upstream[0]}-{upstream[1]}-{'01' if sampled else '00'}"
            headers = [("traceparent", tp.encode())]
        producer.produce(cfg.topics.input, value, ev.key, headers=headers)
        truth[ev.event_id] = {
            "value": value,
            "valid": ev.invalid_kind is None,
            "slow": slow,
            "upstream": upstream,
            "sampled": sampled,
        }
        producer.poll(0)
    assert producer.flush(30) == 0
    return truth


def _check_trace(spans: list[ReceivedSpan], expected_stages: tuple[str, ...]) -> ReceivedSpan:
    """The event's spans: one root, its stages back to back adding up to the root's time."""
    roots = [s for s in spans if s.name == "event"]
    assert len(roots) == 1, [s.name for s in spans]
    root = roots[0]
    children = sorted((s for s in spans if s is not root), key=lambda s: s.start_ns)
    assert tuple(s.name for s in children) == expected_stages
    assert all(s.parent_span_id == root.span_id for s in children)
    assert children[0].start_ns == root.start_ns and children[-1].end_ns == root.end_ns
    for a, b in itertools.pairwise(children):
        assert a.end_ns == b.start_ns, (a.name, b.name)
    assert abs(sum(s.duration_ns for s in children) - root.duration_ns) <= MS
    return root


def test_kept_events_have_every_stage_span_joined_to_their_traceparent(
    broker, models_built, tmp_path
):
    with OtlpReceiver(forward_to=os.environ.get("OTLP_TEST_ENDPOINT")) as rx:
        _, cfg = write_config(
            tmp_path,
            broker.bootstrap,
            **{
                "tracing.enabled": True,
                "tracing.endpoint": rx.endpoint,
                "tracing.ratio": RATIO,
                "tracing.slow_ms": SLOW_MS,
                "tracing.max_per_s": 1e9,  # what is kept here is the sampler's, not a budget's
                "tracing.export_timeout_s": 60,  # nothing dropped, even on a crowded machine
            },
        )
        create_topics(cfg)
        truth = _produce(cfg, 3_000, seed=21)
        started_ms = time.time() * 1000
        worker = Worker(cfg, idle_exit_s=2.0)
        stats = worker.run()
        finished_ms = time.time() * 1000
        spans = rx.spans
    valid = {k: t for k, t in truth.items() if t["valid"]}
    invalid = {k: t for k, t in truth.items() if not t["valid"]}
    assert stats.predictions == len(valid) and sum(stats.dead_letters.values()) == len(invalid)
    assert worker.engine is not None and worker.engine.tracer is not None
    assert worker.engine.tracer.export.dropped == 0

    traces = _traces(spans)
    roots = {s.attributes.get("event.id"): s for s in spans if s.name == "event"}
    batches = {s.span_id: s for s in spans if s.name == "inference batch"}
    preds = {
        json.loads(r.value)["event_id"]: r
        for r in read_topic(cfg, cfg.topics.predictions, len(valid))
    }

    # every slow and every upstream-sampled event: all six stages, joined to its traceparent
    must = [k for k, t in valid.items() if t["slow"] or t["sampled"]]
    assert len(must) > 60
    for event_id in must:
        t = valid[event_id]
        assert event_id in roots, f"{event_id} (slow={t['slow']}) was not traced"
        root = _check_trace(traces[roots[event_id].trace_id], STAGES)
        ts_ms = json.loads(t["value"])["ts_ms"]
        assert abs(root.start_ns - ts_ms * MS) <= MS  # from the event's own time ...
        assert started_ms * MS < root.end_ns < finished_ms * MS  # ... to its ack in this run
        assert root.attributes["event.kept"] == ("slow" if t["slow"] else "sampled")
        if t["slow"]:
            assert root.duration_ns > SLOW_MS * MS
        if t["upstream"]:
            assert (root.trace_id, root.parent_span_id) == t["upstream"]
        else:  # a new trace, named by the event id, and (slow already when queued) by a header
            assert root.trace_id == _md5(json.loads(preds[event_id].value)["event_id"])
            tp = preds[event_id].headers["traceparent"].decode()
            assert tp == f"00-{root.trace_id}-{root.span_id}-01"
        (inference,) = [s for s in traces[root.trace_id] if s.name == "inference"]
        assert inference.attributes["model.version"] == "v2"
        (link,) = inference.links
        batch = batches[link[1]]
        assert batch.attributes["batch.size"] == inference.attributes["batch.size"] >= 1
        assert (batch.start_ns, batch.end_ns) == (inference.start_ns, inference.end_ns)

    # every dead letter: consume, decode (where it was refused), the dead letter to its ack
    dead = read_topic(cfg, cfg.topics.dead_letters, len(invalid))
    by_offset = {
        (
            s.attributes["messaging.kafka.source.partition"],
            s.attributes["messaging.kafka.message.offset"],
        ): s
        for s in spans
        if s.name == "event" and s.attributes["event.kept"] == "dead_letter"
    }
    assert len(dead) == len(invalid) == len(by_offset)
    upstream = {t["upstream"] for t in invalid.values() if t["upstream"]}
    ours = 0
    for r in dead:
        where = (int(r.headers["dead_letter.partition"]), int(r.headers["dead_letter.offset"]))
        root = _check_trace(traces[by_offset[where].trace_id], ("consume", "decode", "dead_letter"))
        assert root.attributes["dead_letter.stage"] == r.headers["dead_letter.stage"].decode()
        tp = r.headers["traceparent"].decode().split("-")  # every dead letter names its trace
        if (tp[1], tp[2]) in upstream:
            assert (root.trace_id, root.parent_span_id) == (tp[1], tp[2])
        else:  # the worker's own trace: its root span is the header's
            assert (root.trace_id, root.span_id, tp[3]) == (tp[1], tp[2], "00")
            ours += 1
    assert ours == len(invalid) - len(upstream) > 0

    # the ordinary rest: the kept share is the ratio, within binomial tolerance (4 sigma)
    ordinary = [k for k, t in valid.items() if not t["slow"] and not t["sampled"]]
    kept = sum(1 for k in ordinary if k in roots)
    assert all(roots[k].attributes["event.kept"] == "ratio" for k in ordinary if k in roots)
    n = len(ordinary)
    assert abs(kept - n * RATIO) <= 4 * math.sqrt(n * RATIO * (1 - RATIO)), (kept, n)
    # tracing.new_trace_header: traced (the default): a prediction of an event that came
    # without a traceparent carries the worker's exactly when its trace was kept
    for k in ordinary:
        if valid[k]["upstream"]:
            continue
        header = preds[k].headers.get("traceparent")
        if k in roots:
            assert header == f"00-{roots[k].trace_id}-{roots[k].span_id}-01".encode(), k
        else:
            assert header is None, k


def _md5(event_id: str) -> str:
    """The README's recipe for a new trace's id: md5 of the event id, in hex."""
    return hashlib.md5(event_id.encode(), usedforsecurity=False).hexdigest()


def _engine_run(endpoint: str, n: int, **tracing) -> tuple[Engine, InstantSink, float]:
    cfg = load_config(BASE_CONFIG).with_overrides(
        models_dir=str(ROOT / "models"),
        **{
            "tracing.enabled": True,
            "tracing.endpoint": endpoint,
            "tracing.ratio": 1.0,
            "tracing.max_per_s": 1e9,
        },
        **{f"tracing.{k}": v for k, v in tracing.items()},
    )
    spec = load_pipeline(cfg.pipeline.module)
    events = spec.make_generator(5).batch(n, int(time.time() * 1000))
    msgs = [InMemoryMessage(e.value, b"%d" % i, i) for i, e in enumerate(events)]
    sink = InstantSink(keep=True)
    engine = Engine(cfg, sink)
    engine.start()
    for i in range(0, n, 250):
        engine.submit(msgs[i : i + 250])
    assert engine.offsets.wait_drained(60)
    return engine, sink, time.monotonic()


def test_a_slow_or_down_collector_costs_spans_never_the_events(models_built):
    n = 1_000
    with OtlpReceiver() as rx:
        rx.delay_s = 60.0  # a collector that takes every request and answers none in time
        engine, sink, _ = _engine_run(rx.endpoint, n, queue_spans=100, export_timeout_s=1.0)
        # every event was answered while the collector had answered no request at all
        assert len(sink.acked_at[engine.config.topics.predictions]) == n
        assert rx.requests == 0
        export = engine.tracer.export
        assert export.dropped_full > 0  # the queue was full: dropped at once, not waited for
        closing = time.monotonic()
        engine.close()
        assert time.monotonic() - closing < 60.0  # close does not wait for the collector
    assert engine.tracer.kept["ratio"] == n
    assert export.sent == 0 and export.dropped_failed > 0
    metric = engine.metrics.registry.get_sample_value
    labels = {"pipeline": engine.config.name}
    assert metric("streaming_trace_spans_sent_total", labels) == 0
    assert (
        metric("streaming_trace_spans_dropped_total", {**labels, "reason": "queue_full"})
        == export.dropped_full
    )
    assert (
        metric("streaming_trace_spans_dropped_total", {**labels, "reason": "export_failed"})
        == export.dropped_failed
    )

    # down: nothing listens on the port
    rx2 = OtlpReceiver()
    endpoint = rx2.endpoint
    rx2.close()
    engine, sink, _ = _engine_run(endpoint, 200, export_timeout_s=1.0, new_trace_header=True)
    assert len(sink.acked_at[engine.config.topics.predictions]) == 200
    # tracing.new_trace_header: each prediction also carries its trace (by its event id)
    preds = [(v, h) for t, v, h in sink.records if t == engine.config.topics.predictions]
    assert len(preds) == 200
    for value, headers in preds:
        tp = headers["traceparent"].decode().split("-")
        assert tp[1] == _md5(json.loads(value)["event_id"]) and tp[3] == "00"
    engine.close()
    assert engine.tracer.export.sent == 0
    assert engine.tracer.export.dropped == engine.tracer.export.dropped_failed > 0


def test_model_errors_and_an_open_breaker_are_traced_up_to_where_they_failed(
    models_built, tmp_path
):
    from models.fraud.faulty import build_faulty

    raising = build_faulty("raising", models_built / "v2", tmp_path / "v7", "v7")
    n = 600
    with OtlpReceiver() as rx:
        cfg = load_config(BASE_CONFIG).with_overrides(
            models_dir=str(ROOT / "models"),
            **{
                "model.versions": [{"version": "v7", "path": str(raising)}],
                "worker.breaker_failures": 2,
                "tracing.enabled": True,
                "tracing.endpoint": rx.endpoint,
                "tracing.ratio": 0.0,
            },
        )
        spec = load_pipeline(cfg.pipeline.module)
        events = spec.make_generator(9).batch(n, int(time.time() * 1000))
        msgs = [InMemoryMessage(e.value, b"%d" % i, i) for i, e in enumerate(events)]
        sink = InstantSink(keep=True)
        engine = Engine(cfg, sink)
        engine.start()
        for i in range(0, n, 50):
            engine.submit(msgs[i : i + 50])
        assert engine.offsets.wait_drained(60)
        engine.close()
        spans = rx.spans
    dead = [
        (json.loads(v)["event_id"], h) for t, v, h in sink.records if t == cfg.topics.dead_letters
    ]
    assert len(dead) == n
    roots = {s.attributes["event.id"]: s for s in spans if s.name == "event"}
    traces = _traces(spans)
    seen = set()
    for event_id, headers in dead:
        reason = headers["dead_letter.reason_class"].decode()
        seen.add(reason)
        root = roots[event_id]
        assert root.attributes["dead_letter.reason_class"] == reason
        assert root.status_code == 2  # ERROR
        if reason == "circuit_open":  # refused before any model call
            expected = ("consume", "decode", "preprocess", "queue", "dead_letter")
        else:  # the model raised: the call is in the trace, linked to its batch span
            expected = ("consume", "decode", "preprocess", "queue", "inference", "dead_letter")
        root = _check_trace(traces[root.trace_id], expected)
        # the worker's own trace: the dead letter carries the traceparent of its root span
        assert headers["traceparent"].decode() == f"00-{root.trace_id}-{root.span_id}-00"
        assert root.trace_id == _md5(event_id)
    assert "circuit_open" in seen and len(seen) == 2, seen
