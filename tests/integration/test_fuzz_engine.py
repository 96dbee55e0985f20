"""Hostile events through the whole engine with the real model: every event gets exactly one
output, a prediction or a dead letter with a reason, and the engine never stops."""

from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.config import load_config
from streaming.dev.inprocess import InMemoryMessage, InstantSink
from streaming.engine.engine import Engine
from streaming.engine.outputs import DLQ_OFFSET, DLQ_REASON, DLQ_STAGE
from tests.fuzz_strategies import hostile_values
from tests.kafka_helpers import BASE_CONFIG, ROOT


@pytest.fixture(scope="module")
def engine(models_built):  # type: ignore[no-untyped-def]
    cfg = load_config(BASE_CONFIG).with_overrides(models_dir=str(ROOT / "models"))
    sink = InstantSink(keep=True)
    engine = Engine(cfg, sink)
    engine.start()
    yield engine, sink, cfg, itertools.count()
    engine.close()


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(hostile_values, min_size=1, max_size=30))
def test_every_event_gets_exactly_one_output(engine, values: list[bytes]) -> None:  # type: ignore[no-untyped-def]
    engine, publisher, cfg, offsets = engine
    msgs = [InMemoryMessage(v, b"card-1", next(offsets)) for v in values]
    with publisher.lock:
        publisher.records.clear()
    engine.submit(msgs)
    assert engine.offsets.wait_drained(30), "the engine stopped producing outputs"
    assert not engine.faults, engine.faults.reason
    with publisher.lock:
        records = list(publisher.records)
    predictions = [json.loads(v) for t, v, _ in records if t == cfg.topics.predictions]
    dead = [h for t, _, h in records if t == cfg.topics.dead_letters]
    assert len(predictions) + len(dead) == len(msgs)
    dead_offsets = Counter(int(h[DLQ_OFFSET]) for h in dead)
    assert all(n == 1 for n in dead_offsets.values())
    for h in dead:
        assert h[DLQ_STAGE] in (b"decode", b"validate", b"preprocess", b"inference")
        assert h[DLQ_REASON]
    for p in predictions:
        assert 0.0 <= p["score"] <= 1.0
