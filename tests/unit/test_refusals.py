"""Records the broker refuses at delivery, through the whole engine with the real model.

No broker that can run here refuses a record at delivery (Tansu 0.6.0 takes records over a
topic's max.message.bytes, null keys on compacted topics and writes to deleted topics), so a
sink that answers like Kafka does stands in for the broker's delivery reports; everything else
is the real engine."""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from confluent_kafka import KafkaError

from streaming.config import load_config
from streaming.dev.inprocess import InMemoryMessage
from streaming.engine.engine import Engine
from streaming.engine.types import Sink
from streaming.pipeline import load_pipeline
from tests.kafka_helpers import BASE_CONFIG, ROOT


class RefusingSink(Sink):
    """Acknowledges at once, but answers some records with the error Kafka would send."""

    def __init__(self, refuse: Any) -> None:
        self.refuse = refuse
        self.lock = threading.Lock()
        self.records: list[tuple[str, bytes | None, bytes | None, dict[str, bytes]]] = []

    def start(self) -> None:
        return None

    def produce(self, topic: str, value: Any, key: Any, headers: Any, on_delivery: Any) -> None:
        with self.lock:
            err = self.refuse(topic, value, key)
            if err is None:
                self.records.append((topic, value, key, dict(headers or [])))
            if on_delivery is not None:
                on_delivery(err, _Msg(value))

    def close(self, timeout: float) -> int:
        return 0


class _Msg:
    def __init__(self, value: bytes | None) -> None:
        self._value = value

    def value(self) -> bytes | None:
        return self._value


def _engine(sink: RefusingSink) -> tuple[Engine, Any]:
    cfg = load_config(BASE_CONFIG).with_overrides(models_dir=str(ROOT / "models"))
    engine = Engine(cfg, sink)
    engine.start()
    return engine, cfg


def _events(cfg: Any, n: int) -> list[InMemoryMessage]:
    events = load_pipeline(cfg.pipeline.module).make_generator(4).batch(n, 1_796_000_000_000)
    offsets = itertools.count()
    return [InMemoryMessage(e.value, e.key, next(offsets)) for e in events]


def test_a_refused_prediction_becomes_a_publish_dead_letter_and_the_rest_go_on() -> None:
    def refuse(topic: str, value: bytes | None, key: bytes | None) -> KafkaError | None:
        picked = (
            topic.endswith("predictions")
            and value is not None
            and int(json.loads(value)["event_id"].encode().hex(), 16) % 7 == 0
        )
        return KafkaError(KafkaError.MSG_SIZE_TOO_LARGE) if picked else None

    sink = RefusingSink(refuse)
    engine, cfg = _engine(sink)
    try:
        msgs = _events(cfg, 700)
        engine.submit(msgs)
        assert engine.offsets.wait_drained(30), "refused rows were never answered"
        assert not engine.faults, engine.faults.reason
    finally:
        engine.close()
    predictions = [json.loads(v) for t, v, _, _ in sink.records if t == cfg.topics.predictions]
    dead = [h for t, _, _, h in sink.records if t == cfg.topics.dead_letters]
    assert dead, "no prediction was refused: the test's rule picked none"
    assert all(h["dead_letter.stage"] == b"publish" for h in dead)
    assert all(b"MSG_SIZE_TOO_LARGE" in h["dead_letter.reason"] for h in dead)
    assert {h["dead_letter.reason_class"] for h in dead} == {b"msg_size_too_large"}
    offsets = sorted([int(h["dead_letter.offset"]) for h in dead] + [-1] * len(predictions))
    assert len(predictions) + len(dead) == len(msgs) and len(set(offsets) - {-1}) == len(dead)
    assert engine.offsets.ledger("in-memory", 0).advance() == len(msgs)  # all committable


def test_a_topic_the_worker_may_not_write_stops_it_with_exit_2_and_nothing_committed() -> None:
    def refuse(topic: str, value: bytes | None, key: bytes | None) -> KafkaError | None:
        if topic.endswith("predictions"):
            return KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)
        return None

    engine, cfg = _engine(RefusingSink(refuse))
    try:
        engine.submit(_events(cfg, 50))
        engine.offsets.wait_drained(5)
    finally:
        engine.close()
    assert engine.faults.exit_code == 2
    assert cfg.topics.predictions in (engine.faults.reason or "")
    assert "ACLs" in (engine.faults.reason or "")
    assert engine.offsets.ledger("in-memory", 0).advance() is None  # nothing past delivered
