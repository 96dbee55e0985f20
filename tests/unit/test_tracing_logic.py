"""Tail sampling and traceparent stamping: the pure logic under the traced worker."""

from __future__ import annotations

import numpy as np
import pytest

from streaming.config import PipelineConfig, TracingConfig
from streaming.tracing.sampler import AUTO_MIN_SAMPLES, Budget, TailSampler
from streaming.tracing.stamps import (
    SAMPLED,
    UPSTREAM,
    has_traceparent,
    parse_traceparent,
    stamp_traceparents,
    with_traceparent,
)

UP = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_rows_without_a_traceparent_get_a_new_one_and_upstream_flags_are_read():
    headers = [None, [("traceparent", UP)], [("x", b"1")], [("traceparent", UP[:-2] + b"00")]]
    flags, made = stamp_traceparents(headers)
    assert flags.tolist() == [0, UPSTREAM | SAMPLED, 0, UPSTREAM]
    assert made[1] is None and made[3] is None  # an upstream traceparent is left as it came
    assert headers[2] == [("x", b"1")]  # the input's headers are not touched
    out = [with_traceparent(headers[i], made[i]) for i in range(4)]
    assert out[2][0] == ("x", b"1") and out[1] == [("traceparent", UP)]
    new = [parse_traceparent(out[i]) for i in (0, 2)]
    assert all(ids is not None for ids in new) and new[0] != new[1]
    assert out[0][0][1].endswith(b"-00")  # not sampled yet: the worker decides at the ack
    flags, made = stamp_traceparents([None] * 3)  # the common chunk: no headers at all
    assert (
        flags.tolist() == [0, 0, 0]
        and len({parse_traceparent([("traceparent", t)]) for t in made}) == 3
    )
    assert parse_traceparent([("traceparent", UP)]) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
    )
    assert parse_traceparent([("traceparent", b"garbage")]) is None
    assert has_traceparent([("traceparent", b"x")]) and not has_traceparent(None)


def test_sampler_keeps_slow_and_upstream_sampled_rows_and_a_ratio_of_the_rest():
    sampler = TailSampler(ratio=0.25, slow_ms=100.0, seed=3)
    lat = np.array([5.0] * 40_000 + [150.0, 101.0])
    flags = np.zeros(lat.size, dtype=np.uint8)
    flags[:10] = UPSTREAM | SAMPLED
    slow, sampled, lucky = sampler.keep(lat, flags)
    assert slow.tolist() == [40_000, 40_001]
    assert sampled.tolist() == list(range(10))
    assert not set(lucky) & set(range(10))
    n = 40_000 - 10
    assert abs(lucky.size - n * 0.25) <= 4 * np.sqrt(n * 0.25 * 0.75)


def test_auto_threshold_follows_the_current_p99_once_there_are_enough_samples():
    now = [0.0]
    state = [(10, 50.0)]
    sampler = TailSampler(0.0, "auto", p99=lambda: state[0], clock=lambda: now[0])
    assert sampler.slow_ms == float("inf")  # too few samples for a p99 to mean anything
    state[0] = (AUTO_MIN_SAMPLES, 50.0)
    now[0] = 2.0
    assert sampler.slow_ms == 50.0
    slow, _, lucky = sampler.keep(np.array([10.0, 60.0]), None)
    assert slow.tolist() == [1] and lucky.size == 0


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
    assert sampler.within_budget(np.arange(8)).tolist() == [0, 1, 2, 3, 4]


def test_tracing_is_off_by_default_and_a_bad_value_names_its_field():
    assert TracingConfig().enabled is False
    assert TracingConfig().ratio == 0.001
    with pytest.raises(ValueError, match="slow_ms"):
        TracingConfig(slow_ms=0)
    with pytest.raises(ValueError, match="ratio"):
        TracingConfig(ratio=2)
    assert "tracing" in PipelineConfig.model_fields


def test_the_exporter_follows_the_config_then_the_otel_variables(monkeypatch):
    from streaming.errors import StartupError
    from streaming.tracing.export import make_exporter

    grpc = make_exporter(TracingConfig(endpoint="http://127.0.0.1:4317", protocol="grpc"))
    assert "grpc" in type(grpc).__module__
    http = make_exporter(TracingConfig(endpoint="http://127.0.0.1:4318"))
    assert http._endpoint == "http://127.0.0.1:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")
    assert make_exporter(TracingConfig())._endpoint == "http://collector:4318/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(StartupError, match=r"tracing\.protocol"):
        make_exporter(TracingConfig())


def test_without_new_trace_headers_no_row_gets_one():
    flags, made = stamp_traceparents([None, [("traceparent", UP)]], new=False)
    assert made is None and flags.tolist() == [0, UPSTREAM | SAMPLED]
