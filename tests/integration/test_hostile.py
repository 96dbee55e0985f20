"""The hostile-input corpus through the real worker on the real broker: every record the broker
accepts ends in exactly one prediction or one dead letter with a stage and a reason, outputs
fit the topics they go to, and the worker never stops because of a record."""

from __future__ import annotations

import signal

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from loadtests.hostile import build, collect, describe, problems, send
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import start_worker, write_config

pytestmark = pytest.mark.integration

DEAD_LETTER_TOPIC_MAX = 262_144
"""The dead-letter topic takes less than the input (a common setup)."""


def test_every_hostile_record_gets_exactly_one_output_that_fits(
    broker, tmp_path, models_built
) -> None:
    path, cfg = write_config(tmp_path, broker.bootstrap)
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(
                cfg.topics.dead_letters,
                cfg.topics.partitions,
                1,
                config={"max.message.bytes": str(DEAD_LETTER_TOPIC_MAX)},
            )
        ]
    )
    for f in futures.values():
        f.result(15)
    create_topics(cfg)
    worker = start_worker(path, tmp_path)
    try:
        worker.wait_for_log("assigned", 60)
        records = build(cfg)
        send(cfg, records)
        collect(cfg, records, timeout=120)
        for r in records:
            print(f"[hostile] {r.cls:<32} {describe(r)}")
        assert problems(records) == []
        assert worker.proc.poll() is None, worker.log()  # no record stopped it

        by = {r.cls: r.outcomes[0] for r in records}
        for name in ("value.huge_2MB", "value.over_dead_letter_limit", "value.over_producer_limit"):
            dead = by[name]
            assert dead["stage"] == "decode" and dead["reason_class"] == "too_large", dead
            assert dead["truncated"] and dead["size"] < DEAD_LETTER_TOPIC_MAX, dead
        assert by["value.null_tombstone"]["stage"] == "decode"
        assert by["value.valid"]["kind"] == "prediction"
        for name in ("headers.huge_value_1MB", "headers.huge_traceparent", "headers.many_small"):
            assert by[name]["kind"] == "prediction" and int(by[name]["headers_dropped"]) > 0
        assert by["headers.repeated"]["headers_dropped"] == ""
        assert by["headers.huge_on_invalid_value"]["truncated"]
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log()
    finally:
        worker.stop()
