"""The state stage in the worker: every prediction's score equals an offline recomputation
of the same events (the stage over each partition in offset order, the model's
preprocessing, the model), on the real broker with the real model."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest
from confluent_kafka import Producer

from pipelines.fraud import PIPELINE
from pipelines.fraud.generator import FraudGenerator
from streaming.kafka.topics import create_topics
from streaming.runtimes.registry import create_runtime
from streaming.state import history_features
from tests.kafka_helpers import read_topic, start_worker, write_config

pytestmark = pytest.mark.integration


def test_scores_equal_the_stage_recomputed_offline(broker, models_built, tmp_path) -> None:
    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    # 300 cards over 3 days: histories, bursts, events out of order and late ones
    records, _ = FraudGenerator(21, n_cards=300).training_data(4_000, days=3)
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 20})
    for r in records:
        producer.produce(cfg.topics.input, r.model_dump_json().encode(), r.card_id.encode())
    assert producer.flush(30) == 0
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    assert worker.wait(120) == 0, worker.log()

    preds = read_topic(cfg, cfg.topics.predictions, len(records))
    inputs = read_topic(cfg, cfg.topics.input, len(records))
    score = {json.loads(p.value)["event_id"]: json.loads(p.value)["score"] for p in preds}
    assert len(preds) == len(score) == len(records)  # one each, none lost

    runtime = create_runtime("onnx", models_built / "v2")
    runtime.load()
    pre = PIPELINE.make_preprocessor(runtime.metadata.preprocessing)
    by_partition = defaultdict(list)
    for rec in inputs:
        by_partition[rec.partition].append(rec)
    want: dict[str, float] = {}
    busy = 0
    for part in by_partition.values():
        part.sort(key=lambda r: r.offset)
        recs = [PIPELINE.schema.model_validate_json(r.value) for r in part]
        state = history_features(PIPELINE.state, [r.key for r in part], recs)  # type: ignore[arg-type]
        busy += int((state[:, PIPELINE.state.names.index("txn_count_1h")] > 0).sum())  # type: ignore[union-attr]
        scores = runtime.predict(pre.transform(recs, state))
        want.update(zip([r.event_id for r in recs], scores.tolist(), strict=True))
    assert busy > 200  # the stage had histories to work on, not only first events
    diff = np.array([abs(score[e] - want[e]) for e in want])
    assert diff.max() <= 1e-6, f"{(diff > 1e-6).sum()} scores differ, by up to {diff.max()}"
