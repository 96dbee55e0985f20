"""The Kafka sink's batch path (``produce_rows``, how a chunk's predictions go out) on the real
broker: the rows chosen, in order, with their keys and headers, one report each, and a full
producer queue waited out rather than a record dropped. Its delivery thread sleeps while the
producer is idle, and every way of producing wakes it."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

from loadtests.thread_cpu import snapshot
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
        {**producer_settings(cfg.kafka, "sink-full"), "queue.buffering.max.messages": 8},
        parked_s=600.0,
    )
    sink.start()
    _wait_parked(sink)  # the full queue must wake it: nothing else would for 600 s
    sink.produce_rows(topic, range(n), values, [None] * n, [None] * n, reports)
    assert sink.close(30.0) == 0
    got = read_topic(cfg, topic, n)
    assert [r.value for r in got] == values
    assert reports.count == n and reports.errors == []


def _wait_parked(sink: KafkaSink) -> None:
    deadline = time.monotonic() + 30
    while not sink.parked:
        assert time.monotonic() < deadline, "the idle delivery thread never went to sleep"
        time.sleep(0.01)


def _wait_reports(reports: _Reports, n: int) -> None:
    deadline = time.monotonic() + 30
    while reports.count < n:
        assert time.monotonic() < deadline, f"{reports.count} of {n} reports after 30 s"
        time.sleep(0.01)


def _voluntary_switches(thread_id: int) -> int:
    return snapshot(os.getpid())[thread_id].voluntary


def test_an_idle_delivery_thread_sleeps_until_a_record_wakes_it(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    """Idle, the thread does not wake on a timer (it did 20 times a second); a record produced
    either way wakes it and is reported, and close wakes it to stop. Its sleep is bounded at
    600 s here, so nothing but those wakes can pass this test."""
    _, cfg = write_config(tmp_path, broker.bootstrap, **{"topics.partitions": 1})  # one order
    create_topics(cfg)
    topic = cfg.topics.predictions
    reports = _Reports()
    sink = KafkaSink(producer_settings(cfg.kafka, "sink-idle"), parked_s=600.0)
    sink.start()
    thread_id = sink.delivery_thread_id
    assert thread_id is not None
    _wait_parked(sink)
    before = _voluntary_switches(thread_id)
    time.sleep(1.0)
    assert _voluntary_switches(thread_id) - before <= 2

    sink.produce(topic, b"one", None, None, reports)
    _wait_reports(reports, 1)
    _wait_parked(sink)
    sink.produce_rows(topic, [0, 1], [b"two", b"three"], [None, None], [None, None], reports)
    _wait_reports(reports, 3)
    assert reports.errors == []

    _wait_parked(sink)
    closing = threading.Thread(target=sink.close, args=(30.0,))
    closing.start()
    closing.join(60)
    assert not closing.is_alive(), "close waited for the parked thread's bound"
    assert [r.value for r in read_topic(cfg, topic, 3)] == [b"one", b"two", b"three"]
