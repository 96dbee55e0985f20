"""Faults on the real broker: a model that raises goes to the dead letters batch by batch
while the worker goes on, and its circuit breaker stops calling it."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from models.fraud.faulty import build_faulty
from streaming.produce import produce_events
from streaming.topics import create_topics
from tests.kafka_helpers import read_topic, start_worker, write_config

pytestmark = pytest.mark.integration


def test_a_raising_model_dead_letters_its_events_and_its_breaker_opens(
    broker, models_built, tmp_path, capsys
):
    raising = build_faulty("raising", models_built / "v2", tmp_path / "v7", "v7")
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **{
            "model.versions": [
                {"version": "v2", "weight": 50},
                {"version": "v7", "weight": 50, "path": str(raising)},
            ],
            "worker.breaker_failures": 3,
            "worker.breaker_cooldown_s": 1.0,
        },
    )
    create_topics(cfg)
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    worker.wait_for_log("assigned", 60)
    produced = produce_events(cfg, 6_000, rate=1_500, invalid_ratio=0.02, seed=13, keep=True)
    assert worker.wait(120) == 0, worker.log()  # the worker went on to the end

    valid = [e for e in produced.events if e.invalid_kind is None]
    invalid = [e for e in produced.events if e.invalid_kind is not None]
    preds = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.predictions, 2_000)]
    dead = read_topic(cfg, cfg.topics.dead_letters, len(valid) - len(preds) + len(invalid))
    assert {p["version"] for p in preds} == {"v2"}
    inference = [r for r in dead if r.headers["dead_letter.stage"] == b"inference"]
    assert all(r.headers["dead_letter.version"] == b"v7" for r in inference)
    # every event accounted for, once: a prediction by v2 or a dead letter
    scored = Counter(p["event_id"] for p in preds)
    failed = Counter(json.loads(r.value)["event_id"] for r in inference)
    assert scored.keys() | failed.keys() == {e.event_id for e in valid}
    assert not scored.keys() & failed.keys()
    assert max((scored + failed).values()) == 1
    assert len(dead) - len(inference) == len(invalid)
    classes = Counter(r.headers["dead_letter.reason_class"].decode() for r in inference)
    assert classes["circuit_open"] > 0, classes  # the breaker stopped calling the model
    assert sum(n for c, n in classes.items() if c != "circuit_open") > 0  # after trying it
    reasons = {r.headers["dead_letter.reason"].decode() for r in inference}
    assert any("Gather" in r for r in reasons), reasons  # the model's own error, verbatim
    assert "circuit open for 1 s" in worker.log()
    with capsys.disabled():
        print(
            f"\n[raising model] {len(produced.events):,} events: {len(preds):,} scored by v2, "
            f"{len(inference):,} of v7's dead-lettered ({dict(classes)}), "
            f"{len(invalid)} invalid dead-lettered; the worker exited 0"
        )
