"""The Kafka sink's batch path (``produce_rows``, how a chunk's predictions go out) on the real
broker: the rows chosen, in order, with their keys and headers, one report each, and a full
producer queue waited out rather than a record dropped."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from streaming.dev.broker import EmbeddedBroker
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
