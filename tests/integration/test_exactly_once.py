"""Exactly-once mode on the real broker: outputs and input offsets in one transaction.

Kafka hides the records of aborted transactions from read_committed readers. The embedded
broker (Tansu 0.6.0) does not: measured, a read_committed reader there gets committed,
aborted and still-open transactions' records alike. So this test reads like Kafka would: it
takes the group's committed offsets right after the kill (they were committed inside the
worker's last committed transaction), drops the killed worker's outputs for events at or past
them (those were in its open transaction, which Kafka aborts), and checks that what is left
holds each event exactly once. That is the worker's half of the contract: no committed output
without its committed offset, and no committed offset without its outputs.
"""

from __future__ import annotations

import json
import signal
import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from loadtests.pod_replacement import describe, replacement_run
from streaming.dev.produce import ProduceResult, produce_events
from streaming.kafka.settings import reader_settings
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import (
    log_records,
    read_topic,
    start_worker,
    wait_for_records,
    write_config,
)
from tests.state_scores import assert_scores_equal, offline_scores

pytestmark = pytest.mark.integration


def committed_offsets(cfg, partitions: int) -> dict[int, int]:  # type: ignore[no-untyped-def]
    consumer = Consumer({**reader_settings(cfg.kafka, cfg.kafka.group)})
    try:
        tps = consumer.committed(
            [TopicPartition(cfg.topics.input, p) for p in range(partitions)], timeout=10
        )
    finally:
        consumer.close()
    return {tp.partition: max(tp.offset, 0) for tp in tps}


def input_offsets(cfg, n: int) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    """event_id -> (partition, offset) of every valid event on the input topic."""
    out = {}
    for r in read_topic(cfg, cfg.topics.input, n):
        try:
            out[json.loads(r.value)["event_id"]] = (r.partition, r.offset)
        except (ValueError, KeyError, TypeError):
            continue
    return out


def test_kill_9_then_restart_each_event_committed_once(
    broker, models_built, tmp_path, measured, monkeypatch
):
    # The restarted container of the same pod: the same worker id, so the same transactional
    # id, and the new worker's init_transactions aborts the killed one's open transaction.
    monkeypatch.setenv("STREAMING_WORKER_ID", f"fraud-worker-{uuid.uuid4().hex[:4]}")
    path, cfg = write_config(tmp_path, broker.bootstrap, delivery="exactly-once")
    create_topics(cfg)
    first = start_worker(path, tmp_path)
    first.wait_for_log("assigned", 60)
    result: list[ProduceResult] = []
    producer = threading.Thread(
        target=lambda: result.append(
            produce_events(cfg, 30_000, rate=6_000, invalid_ratio=0.02, seed=77, keep=True)
        )
    )
    producer.start()
    wait_for_records(cfg, cfg.topics.predictions, 4_000)
    assert producer.is_alive(), "the producer finished before the kill: not mid-stream"
    first.signal(signal.SIGKILL)
    first.wait(10)
    killed_ms = int(time.time() * 1000)
    commit_point = committed_offsets(cfg, cfg.topics.partitions)
    producer.join()
    events = result[0].events
    second = start_worker(path, tmp_path, "--idle-exit", "4")
    assert second.wait(180) == 0, second.log()

    valid = [e for e in events if e.invalid_kind is None]
    invalid = [e for e in events if e.invalid_kind is not None]
    where = input_offsets(cfg, len(events))
    preds = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.predictions, len(valid))]
    dead = read_topic(cfg, cfg.topics.dead_letters, len(invalid))

    def committed(partition: int, offset: int, scored_ms: int) -> bool:
        # The restarted worker's outputs, or the killed one's before its commit point.
        return scored_ms > killed_ms or offset < commit_point[partition]

    kept = Counter(p["event_id"] for p in preds if committed(*where[p["event_id"]], p["scored_ms"]))
    assert set(kept) == {e.event_id for e in valid}, "an event lost"
    assert max(kept.values()) == 1, f"{sum(kept.values()) - len(kept)} committed twice"
    aborted = len(preds) - sum(kept.values())
    assert sum(commit_point.values()) > 0, "the killed worker never committed a transaction"
    # Dead letters: none lost (the same commit point governs them; their source offsets are
    # in their headers, but both workers share one id, so they are only counted here).
    assert Counter(r.value for r in dead).keys() == Counter(e.value for e in invalid).keys()
    # The per-card state: the restarted worker restored it from the changelog (its changes
    # committed with the offsets) before its first event, so every prediction, the aborted
    # ones included, has the score of an uninterrupted run; one that began with empty state
    # would score the cards' next events without their history.
    restored = [r for r in log_records(second) if "restored from" in r["msg"]]
    assert len(restored) == cfg.topics.partitions and sum(r["keys"] for r in restored) > 0
    want, _ = offline_scores(cfg, models_built, len(events))
    assert_scores_equal(read_topic(cfg, cfg.topics.predictions, len(valid)), want)
    measured(
        f"\n[exactly-once kill -9] {len(events):,} events; commit point at the kill "
        f"{sum(commit_point.values()):,} events; {len(preds):,} predictions on the topic, "
        f"{aborted:,} of them in the killed worker's open (aborted) transaction; the "
        f"committed ones hold each of the {len(valid):,} valid events exactly once; "
        f"{sum(r['keys'] for r in restored):,} keys of state restored (the longest "
        f"partition {max(r['restore_s'] for r in restored):.3f} s), every score equal to "
        "an uninterrupted run's"
    )


def test_a_replacement_under_the_same_id_unblocks_read_committed_readers(
    broker, models_built, tmp_path, measured
):
    """After kill -9, a replacement under the same worker id (a restarted container, a
    StatefulSet's pod: the chart's default under exactly-once) fences the killed worker's open
    transaction when it starts, so a read_committed reader has every event by id soon after the
    replacement wrote it, well within transaction.timeout.ms. Under a new id (a Deployment's
    rescheduled pod) the same run leaves the reader stuck behind the open transaction until
    the broker's timeout, and on the embedded broker for good (it never expires transactions):
    `loadtests.pod_replacement` measures both."""
    # The bound: half the transaction timeout, so a pass cannot be the broker's timeout at work
    # (Kafka's), and thirty commit intervals of room for a busy machine.
    bound_s = 15.0
    r = replacement_run(
        broker.bootstrap, tmp_path, same_id=True, events=4_000, rate=2_000, max_wait_s=bound_s
    )
    assert r.transaction_timeout_ms / 1000 >= 2 * bound_s
    assert r.fenced_s is not None, "the replacement never logged its transactions initialised"
    assert r.visible == r.events, f"read_committed had {r.visible:,} of {r.events:,} events"
    assert r.stall_s is not None and r.stall_s < bound_s
    measured(f"\n[pod replacement, same id] {describe(r)}")
