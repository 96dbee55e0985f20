"""Tail sampling and traceparent stamping: the pure logic under the traced worker."""

from __future__ import annotations

from hashlib import md5

import numpy as np
import pytest

from streaming.config import PipelineConfig, TracingConfig
from streaming.tracing.sampler import AUTO_MIN_SAMPLES, Budget, QueuePicks, TailSampler
from streaming.tracing.stamps import (
    PICKED,
    PICKED_SLOW,
    SAMPLED,
    UPSTREAM,
    has_traceparent,
    parse_traceparent,
    picked_traceparents,
    stamp_traceparents,
    trace_id_of,
    with_traceparent,
    worker_traceparent,
)

UP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _kept(decided: list[tuple[str, np.ndarray, bool]]) -> dict[str, list[int]]:
    """``TailSampler.keep``'s answer by why, the positions of each in order."""
    out: dict[str, list[int]] = {}
    for why, rows, _budgeted in decided:
        out[why] = sorted(out.get(why, []) + rows.tolist())
    return out


def _md5(event_id: str) -> str:
    """The README's recipe for a new trace's id: md5 of the event id, in hex."""
    return md5(event_id.encode(), usedforsecurity=False).hexdigest()


def test_rows_without_a_traceparent_get_a_new_one_and_upstream_flags_are_read():
    headers = [None, [("traceparent", UP)], [("x", b"1")], [("traceparent", UP[:-2] + b"00")]]
    ids = ["e0", "e1", "e2", "e3"]
    flags, made = stamp_traceparents(headers, ids)  # tracing.new_trace_header: true
    assert flags.tolist() == [0, UPSTREAM | SAMPLED, 0, UPSTREAM]
    assert made[1] is None and made[3] is None  # an upstream traceparent is left as it came
    assert headers[2] == [("x", b"1")]  # the input's headers are not touched
    out = [with_traceparent(headers[i], made[i]) for i in range(4)]
    assert out[2][0] == ("x", b"1") and out[1] == [("traceparent", UP)]
    new = [parse_traceparent(out[i]) for i in (0, 2)]
    # the trace id is what the README tells users to compute: md5 of the event id
    assert [f"{t:032x}" for t, _span in new] == [_md5("e0"), _md5("e2")]
    assert out[0][0][1].endswith(b"-00")  # not sampled yet: the worker decides at the ack
    flags, made = stamp_traceparents([None] * 3, ["a", "b", "c"])  # the common chunk: no headers
    assert flags is None  # no row came with a traceparent: nothing per row to look at later
    assert stamp_traceparents([[("x", b"1")], None])[0] is None
    assert len({parse_traceparent([("traceparent", t)]) for t in made}) == 3
    assert parse_traceparent([("traceparent", UP)]) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
    )
    assert parse_traceparent([("traceparent", b"garbage")]) is None
    assert has_traceparent([("traceparent", b"x")]) and not has_traceparent(None)


def test_a_new_trace_is_named_by_its_event_id_and_a_dead_letter_by_its_header():
    assert f"{trace_id_of('ev-7'):032x}" == _md5("ev-7")
    tp = worker_traceparent("ev-7")  # what a dead letter of an event without one carries
    trace, span = parse_traceparent([("traceparent", tp)])
    assert trace == trace_id_of("ev-7") and tp.endswith(b"-00")
    assert parse_traceparent([("traceparent", worker_traceparent("ev-7"))])[1] != span
    assert parse_traceparent([("traceparent", worker_traceparent(None))]) is not None  # undecoded


def test_sampler_keeps_slow_and_upstream_sampled_rows_and_a_ratio_of_the_rest():
    sampler = TailSampler(ratio=0.25, slow_ms=100.0, seed=3)
    lat = np.array([5.0] * 40_000 + [150.0, 101.0])
    flags = np.zeros(lat.size, dtype=np.uint8)
    flags[:10] = UPSTREAM | SAMPLED
    kept = _kept(sampler.keep(lat, flags))
    assert kept["slow"] == [40_000, 40_001]
    assert kept["sampled"] == list(range(10))
    assert not set(kept["ratio"]) & set(range(10))
    n = 40_000 - 10
    assert abs(len(kept["ratio"]) - n * 0.25) <= 4 * np.sqrt(n * 0.25 * 0.75)


def test_auto_threshold_follows_the_current_p99_once_there_are_enough_samples():
    now = [0.0]
    state = [(10, 50.0)]
    sampler = TailSampler(0.0, "auto", p99=lambda: state[0], clock=lambda: now[0])
    assert sampler.slow_ms == float("inf")  # too few samples for a p99 to mean anything
    state[0] = (AUTO_MIN_SAMPLES, 50.0)
    now[0] = 2.0
    assert sampler.slow_ms == 50.0
    kept = _kept(sampler.keep(np.array([10.0, 60.0]), None))
    assert kept["slow"] == [1] and kept["ratio"] == []


def test_the_budget_bounds_traced_events_per_second_whatever_qualifies():
    now = [0.0]
    budget = Budget(100.0, lambda: now[0])
    assert budget.take(250) == 100  # a burst: one second's worth
    assert budget.take(10) == 0
    now[0] = 0.5
    assert budget.take(250) == 50
    now[0] = 10.0
    assert budget.take(1_000) == 100  # idle time does not pile up more than a second's worth
    sampler = TailSampler(1.0, 1.0, max_per_s=5, clock=lambda: now[0])
    assert not sampler.spent()
    assert sampler.within_budget(np.arange(8)).tolist() == [0, 1, 2, 3, 4]
    assert sampler.spent()  # a chunk now is only counted: what qualified and was skipped
    assert sampler.qualifying(np.array([0.5, 2.0, 3.0])) == 3  # ratio 1.0: every row
    assert TailSampler(0.0, 1.0).qualifying(np.array([0.5, 2.0, 3.0])) == 2  # the slow ones
    now[0] += 0.3
    assert not sampler.spent()  # 0.3 s at 5 a second: one more may go


def test_queue_picks_take_the_ratio_and_the_already_slow_and_the_ack_keeps_them():
    sampler = TailSampler(ratio=0.01, slow_ms=100.0, seed=5)
    picks = QueuePicks(sampler, seed=7)
    n = 50_000
    now = 1_000_000.0
    ts = [int(now) - 5] * n  # 5 ms old when queued
    ts[17] = ts[40_000] = int(now) - 250  # already slow when queued
    flags = np.zeros(n, dtype=np.uint8)
    flags[:20] = UPSTREAM | SAMPLED  # sampled upstream: kept anyway, never picked
    flags[20:30] = UPSTREAM  # a traceparent of its own, not sampled: may be picked
    got = picks.pick(ts, flags, now)
    assert got is not flags and flags[17] == UPSTREAM | SAMPLED  # the input is not written
    picked = np.flatnonzero(got & PICKED)
    assert not set(picked.tolist()) & set(range(20))
    assert np.flatnonzero(got & PICKED_SLOW).tolist() == [40_000]
    ratio = picked.size - 1
    assert abs(ratio - (n - 20) * 0.01) <= 4 * np.sqrt((n - 20) * 0.01 * 0.99)
    # only picked rows that came without a traceparent get the worker's, flagged sampled
    ids = [f"e{i}" for i in range(n)]
    made = picked_traceparents(ids, got)
    with_made = [i for i, tp in enumerate(made) if tp is not None]
    assert with_made == [i for i in picked.tolist() if not got[i] & UPSTREAM]
    i = with_made[0]
    trace, _span = parse_traceparent([("traceparent", made[i])])
    assert f"{trace:032x}" == _md5(ids[i]) and made[i].endswith(b"-01")
    # the ack: the picks as picked, the upstream-sampled, and what turned slow since
    lat = np.full(n, 20.0)
    lat[40_000] = lat[17] = 300.0
    lat[33] = 150.0  # slow only by the time it was acked
    decided = sampler.keep(lat, got, picked=True)
    kept = _kept(decided)
    assert kept["sampled"] == [i for i in range(17)] + [18, 19]  # 17 is slow: kept as slow
    assert set(kept["slow"]) == {17, 33, 40_000}
    assert set(kept["ratio"]) == set(picked.tolist()) - {40_000, 33}
    budgeted = {why: b for why, rows, b in decided if 33 in rows.tolist()}
    assert budgeted == {"slow": False}  # found at the ack: it takes from the budget then
    assert picked_traceparents(ids[:3], None) is None


def test_queue_picks_stay_within_the_shared_budget_slow_rows_first():
    now = [0.0]
    sampler = TailSampler(ratio=0.5, slow_ms=100.0, max_per_s=3, clock=lambda: now[0], seed=1)
    skipped = []
    picks = QueuePicks(sampler, skipped.append, seed=2)
    ts = [0] * 6 + [900] * 20  # at 1,000 ms: six already slow, twenty fresh
    got = picks.pick(ts, None, 1_000.0)
    assert np.flatnonzero(got & PICKED).tolist() == [0, 1, 2]  # the budget: 3, slow first
    assert sum(skipped) >= 3  # the rest of the slow ones at least, and the ratio's
    assert sampler.spent()  # the ack shares the budget: nothing more this second
    assert picks.pick([900] * 10, None, 1_000.0) is None  # none granted: nothing marked
    assert sampler.qualifying(np.array([5.0, 200.0]), picked=True) == 1  # the ratio was drawn


def test_tracing_is_off_by_default_and_a_bad_value_names_its_field():
    assert TracingConfig().enabled is False
    assert TracingConfig().ratio == 0.001
    with pytest.raises(ValueError, match="slow_ms"):
        TracingConfig(slow_ms=0)
    with pytest.raises(ValueError, match="ratio"):
        TracingConfig(ratio=2)
    assert "tracing" in PipelineConfig.model_fields


def test_the_sender_follows_the_config_then_the_otel_variables(monkeypatch):
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from streaming.errors import StartupError
    from streaming.tracing import otlp
    from streaming.tracing.senders import GrpcSender, HttpSender, make_sender

    grpc = make_sender(TracingConfig(endpoint="http://127.0.0.1:4317", protocol="grpc"))
    assert isinstance(grpc, GrpcSender)
    # the SDK's gRPC exporter sends our encoded request as it is (its translation hook)
    span = otlp.span("x", b"\x01" * 16, b"\x02" * 8, None, 1.0, 2.0)
    body = otlp.request(otlp.resource({"service.name": "s"}), otlp.scope("t"), [span, span])
    req = ExportTraceServiceRequest.FromString(body)
    assert grpc._exporter._translate_data(req) is req and grpc._exporter._count_data(req) == 2
    grpc.shutdown()
    http = make_sender(TracingConfig(endpoint="http://127.0.0.1:4318"))
    assert isinstance(http, HttpSender) and http.endpoint == "http://127.0.0.1:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20abc,x-tenant=7")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip")
    http = make_sender(TracingConfig())
    assert http.endpoint == "http://collector:4318/v1/traces"
    assert http.headers["authorization"] == "Bearer abc" and http.headers["x-tenant"] == "7"
    assert http.headers["Content-Encoding"] == "gzip"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://other:4318/custom")
    assert make_sender(TracingConfig()).endpoint == "http://other:4318/custom"  # used as it is
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "zstd")
    with pytest.raises(StartupError, match="COMPRESSION"):
        make_sender(TracingConfig())
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(StartupError, match=r"tracing\.protocol"):
        make_sender(TracingConfig())


def test_spans_encoded_by_hand_decode_as_otlp_field_for_field():
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    from streaming.tracing import otlp

    tid, sid, parent, link = b"\x0a" * 16, b"\x0b" * 8, b"\x0c" * 8, (b"\x0d" * 16, b"\x0e" * 8)
    attrs = {"s": "naïve", "i": 2**40, "neg": -3, "b": True, "f": 0.25, "o": None}
    root = otlp.span(
        "event", tid, sid, parent, 1.5, 2.25, otlp.CONSUMER, attrs, link, "timeout", True
    )
    stage = otlp.span("queue", tid, b"\x01" * 8, sid, 1.5, 1.75)
    body = otlp.request(
        otlp.resource({"service.name": "streaming-fraud", "n": 1}), otlp.scope("sc"), [root, stage]
    )
    (rs,) = ExportTraceServiceRequest.FromString(body).resource_spans
    assert {
        kv.key: kv.value.string_value or kv.value.int_value for kv in rs.resource.attributes
    } == {
        "service.name": "streaming-fraud",
        "n": 1,
    }
    (ss,) = rs.scope_spans
    assert ss.scope.name == "sc"
    got, queued = ss.spans
    assert (got.trace_id, got.span_id, got.parent_span_id) == (tid, sid, parent)
    assert (got.name, got.kind) == ("event", Span.SPAN_KIND_CONSUMER)
    assert (got.start_time_unix_nano, got.end_time_unix_nano) == (1_500_000_000, 2_250_000_000)
    values = {kv.key: kv.value for kv in got.attributes}
    assert values["s"].string_value == "naïve" and values["i"].int_value == 2**40
    assert values["neg"].int_value == -3 and values["b"].bool_value is True
    assert values["f"].double_value == 0.25 and values["o"].string_value == "None"
    (ln,) = got.links
    assert (ln.trace_id, ln.span_id, ln.flags) == (*link, 0x101)
    assert (got.status.code, got.status.message) == (Status.STATUS_CODE_ERROR, "timeout")
    assert got.flags == 0x301  # sampled, its parent remote
    assert (queued.name, queued.kind, queued.parent_span_id) == (
        "queue",
        Span.SPAN_KIND_INTERNAL,
        sid,
    )
    assert queued.flags == 0x101 and not queued.links and queued.status.code == 0


def test_without_new_trace_headers_no_row_gets_one():
    assert TracingConfig().new_trace_header == "traced"  # the default: the traced rows only
    assert TracingConfig(new_trace_header="false").new_trace_header is False
    flags, made = stamp_traceparents([None, [("traceparent", UP)]])
    assert made is None and flags.tolist() == [0, UPSTREAM | SAMPLED]


def test_the_grpc_sender_delivers_our_encoded_request_to_a_grpc_collector():
    from concurrent import futures

    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

    from streaming.tracing import otlp
    from streaming.tracing.senders import make_sender

    got = []

    class Collector(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):  # the service's method name
            got.append(request)
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Collector(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        sender = make_sender(
            TracingConfig(endpoint=f"http://127.0.0.1:{port}", protocol="grpc", export_timeout_s=10)
        )
        spans = [
            otlp.span(n, b"\x01" * 16, bytes([i + 1]) * 8, None, 1.0, 2.0)
            for i, n in enumerate("ab")
        ]
        assert sender.send(
            otlp.request(otlp.resource({"service.name": "s"}), otlp.scope("t"), spans)
        )
        sender.shutdown()
    finally:
        server.stop(None)
    (request,) = got
    assert [s.name for s in request.resource_spans[0].scope_spans[0].spans] == ["a", "b"]
