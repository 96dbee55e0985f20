"""The Kafka sink's batch paths on the real broker: ``produce_rows`` (how a chunk's predictions
go out): the rows chosen, in order, with their keys and headers, one report each;
``producer_of_many`` (the state changelog's key records): in order, tombstones kept, no report
taken by Python where streaming.kafka.direct runs; and for both, a full producer queue waited
out rather than a record dropped."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from streaming.dev.broker import EmbeddedBroker
from streaming.kafka.direct import DIRECT, DirectProducer
from streaming.kafka.settings import producer_settings
from streaming.kafka.sink import KafkaSink
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import read_topic, write_config


class _Reports:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.errors: list[Any] = []
        self.count = 0

    def __call__(self, err: Any, _msg: Any) -> None:
        with self.lock:
            self.count += 1
            if err is not None:
                self.errors.append(err)


def test_produce_rows_sends_the_rows_in_order_with_keys_and_headers(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    _, cfg = write_config(tmp_path, broker.bootstrap, **{"topics.partitions": 1})  # one order
    create_topics(cfg)
    topic = cfg.topics.predictions
    values = [b"v%d" % i for i in range(10)]
    keys = [b"k%d" % i if i % 3 else None for i in range(10)]
    headers: list[Any] = [[("h", b"%d" % i)] if i % 2 else None for i in range(10)]
    headers[4] = []  # an event that came with an empty header list
    rows = [0, 2, 3, 4, 7, 9]
    reports = _Reports()
    sink = KafkaSink(producer_settings(cfg.kafka, "sink-rows"))
    sink.start()
    sink.produce_rows(topic, rows, values, keys, headers, reports)
    assert sink.close(30.0) == 0
    got = read_topic(cfg, topic, len(rows))
    assert [r.value for r in got] == [values[i] for i in rows]
    assert [r.key for r in got] == [keys[i] for i in rows]
    assert [r.headers for r in got] == [dict(headers[i] or []) for i in rows]
    assert reports.count == len(rows) and reports.errors == []


def test_a_full_queue_is_waited_out_not_dropped(broker: EmbeddedBroker, tmp_path: Path) -> None:
    _, cfg = write_config(tmp_path, broker.bootstrap, **{"topics.partitions": 1})  # one order
    create_topics(cfg)
    topic = cfg.topics.predictions
    n = 400
    values = [b"%d" % i for i in range(n)]
    reports = _Reports()
    # room for 8 records: produce_rows meets BufferError many times over and must wait for the
    # delivery thread to free the queue
    sink = KafkaSink(
        {**producer_settings(cfg.kafka, "sink-full"), "queue.buffering.max.messages": 8}
    )
    sink.start()
    sink.produce_rows(topic, range(n), values, [None] * n, [None] * n, reports)
    assert sink.close(30.0) == 0
    got = read_topic(cfg, topic, n)
    assert [r.value for r in got] == values
    assert reports.count == n and reports.errors == []


@pytest.mark.parametrize("path", ["direct", "produce"])
def test_many_records_go_in_order_and_direct_ones_take_no_report(
    broker: EmbeddedBroker, tmp_path: Path, path: str
) -> None:
    """The changelog's key records through ``producer_of_many``: every record in order on the
    partition asked for, a None value as a tombstone; through librdkafka directly, not one
    delivery report reaches Python (the producer's default callback counts them), and a
    queue of room for 8 records is waited out. ``produce`` is the fallback where the direct
    path cannot run; on Linux with confluent-kafka 2 the direct path must be the one bound."""
    _, cfg = write_config(tmp_path, broker.bootstrap, **{"topics.partitions": 2})
    create_topics(cfg)
    topic = cfg.topics.predictions
    n = 400
    keys = [b"card-%d" % i for i in range(n)]
    values: list[bytes | None] = [b"rows-%d" % i if i % 7 else None for i in range(n)]
    reports = _Reports()
    sink = KafkaSink(
        {
            **producer_settings(cfg.kafka, f"sink-many-{path}"),
            "queue.buffering.max.messages": 8,
            "on_delivery": reports,
        }
    )
    sink.start()
    many = sink.producer_of_many() if path == "direct" else sink._produce_each
    if path == "direct":
        assert DIRECT is not None and isinstance(many.__self__, DirectProducer)  # type: ignore[attr-defined]
    assert many(topic, 1, keys, values) == n
    assert sink.close(30.0) == 0
    got = _read_partition(cfg.kafka.bootstrap, topic, 1, n)
    assert [m.key() for m in got] == keys
    assert [m.value() for m in got] == values  # a tombstone's value is null, not empty
    assert reports.errors == []
    assert reports.count == (0 if path == "direct" else n)


def test_the_direct_path_refuses_what_is_not_a_confluent_kafka_producer() -> None:
    """Anything but the Producer type it was bound to (here an object with a produce method)
    gets no direct path: its records go through its own produce."""

    class NotAProducer:
        def produce(self, *args: Any) -> None: ...

    assert DirectProducer.of(NotAProducer(), lambda: None) is None


def _read_partition(bootstrap: str, topic: str, partition: int, n: int) -> list[Any]:
    """The first ``n`` messages of one partition, values as they are (read_topic makes a
    null value empty)."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "many-reader", "fetch.wait.max.ms": 100}
    )
    consumer.assign([TopicPartition(topic, partition, 0)])
    out: list[Any] = []
    deadline = time.monotonic() + 60
    try:
        while len(out) < n and time.monotonic() < deadline:
            out += [m for m in consumer.consume(n - len(out), 0.5) if not m.error()]
    finally:
        consumer.close()
    return out
