"""The state stage in the worker: every prediction's score equals an offline recomputation
of the same events (the stage over each partition in offset order, the model's
preprocessing, the model), on the real broker with the real model."""

from __future__ import annotations

import json
import time

import pytest
from confluent_kafka import Producer

from pipelines.fraud.generator import FraudGenerator
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import (
    read_topic,
    start_worker,
    write_config,
)
from tests.state_scores import assert_scores_equal, offline_scores

pytestmark = pytest.mark.integration


def produce_history(cfg, records, rate: float | None = None) -> None:  # type: ignore[no-untyped-def]
    """The generated transactions keyed by card, at ``rate`` events/s (or at once)."""
    producer = Producer({"bootstrap.servers": cfg.kafka.bootstrap, "linger.ms": 20})
    started = time.monotonic()
    for i, r in enumerate(records):
        producer.produce(cfg.topics.input, r.model_dump_json().encode(), r.card_id.encode())
        if rate is not None and i % 100 == 99:
            producer.poll(0)
            time.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
    assert producer.flush(30) == 0


def test_scores_equal_the_stage_recomputed_offline(broker, models_built, tmp_path) -> None:
    path, cfg = write_config(tmp_path, broker.bootstrap)
    # the topics of another consumer group: this group's state changelog is missing, and the
    # worker creates it (one per group, README "Where the state lives")
    create_topics(cfg.with_overrides(**{"kafka.group": "another-group"}))
    # 300 cards over 3 days: histories, bursts, events out of order and late ones
    records, _ = FraudGenerator(21, n_cards=300).training_data(4_000, days=3)
    produce_history(cfg, records)
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    assert worker.wait(120) == 0, worker.log()
    assert f"created the state changelog {cfg.topics.input}.state.{cfg.kafka.group}" in (
        worker.log()
    )

    preds = read_topic(cfg, cfg.topics.predictions, len(records))
    assert len(preds) == len({json.loads(p.value)["event_id"] for p in preds}) == len(records)
    want, busy = offline_scores(cfg, models_built, len(records))
    assert busy > 200  # the stage had histories to work on, not only first events
    assert_scores_equal(preds, want)
