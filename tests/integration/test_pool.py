"""The worker pool (`streaming run --processes 2`) on the real broker: a child killed with
kill -9 under load is replaced and nothing is lost; SIGTERM to the supervisor drains every
child, exits 0, and a later worker picks up exactly where they committed (no duplicates).
/metrics sums the children; /healthz and /readyz name them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition

from streaming.dev.broker import free_port
from streaming.kafka.settings import reader_settings
from streaming.kafka.topics import create_topics
from tests.integration.test_http import get as http_get
from tests.integration.test_http import metric
from tests.kafka_helpers import (
    WorkerProcess,
    log_records,
    produce_in_background,
    read_topic,
    start_worker,
    wait_for_records,
    write_config,
)

pytestmark = pytest.mark.integration

POD = "pool-test"
CHILDREN = (f"{POD}-0", f"{POD}-1")


def _probe(port: int, path: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code, body = http_get(port, path)
    return code, json.loads(body)


def _wait_ready(pool: WorkerProcess, port: int, timeout: float = 90.0) -> dict:  # type: ignore[type-arg]
    """Both children warm and holding partitions: /readyz says 200."""
    deadline = time.monotonic() + timeout
    body: dict = {}  # type: ignore[type-arg]
    while time.monotonic() < deadline:
        assert pool.proc.poll() is None, pool.log()
        try:
            code, body = _probe(port, "/readyz")
        except OSError:
            code = 0
        if code == 200:
            return body
        time.sleep(0.2)
    raise AssertionError(f"the pool was not ready in {timeout} s: {body}\n{pool.log()[-3000:]}")


def _accounted(cfg, events) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Assert no event lost (by event id); return (duplicate predictions, duplicate dead)."""
    valid = {e.event_id for e in events if e.invalid_kind is None}
    invalid = Counter(e.value for e in events if e.invalid_kind is not None)
    # Until every valid event has a prediction: the replaced child may still be scoring the
    # tail, and duplicates alone can make up the count (timeout: the loss is then reported).
    preds = [
        json.loads(r.value)
        for r in read_topic(
            cfg,
            cfg.topics.predictions,
            len(valid),
            timeout=120,
            done=lambda rs: len({json.loads(r.value)["event_id"] for r in rs}) >= len(valid),
        )
    ]
    dead = read_topic(
        cfg,
        cfg.topics.dead_letters,
        sum(invalid.values()),
        timeout=120,
        done=lambda rs: {r.value for r in rs} >= set(invalid),
    )
    got = Counter(p["event_id"] for p in preds)
    assert set(got) == valid, f"{len(valid - set(got))} events lost"
    got_dead = Counter(r.value for r in dead)
    assert set(got_dead) == set(invalid), "dead letters lost"
    workers = {p["worker"] for p in preds}
    assert set(CHILDREN) <= workers, workers  # predictions carry the child's worker id
    return sum(got.values()) - len(got), sum(got_dead.values()) - len(got_dead)


@pytest.fixture
def pod_id(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("STREAMING_WORKER_ID", POD)
    return POD


def test_a_child_killed_under_load_is_replaced_and_nothing_is_lost(
    broker, models_built, tmp_path, pod_id, measured
):
    path, cfg = write_config(tmp_path, broker.bootstrap, **{"worker.restart_backoff_s": 0.5})
    create_topics(cfg)
    port = free_port()
    pool = start_worker(path, tmp_path, "--processes", "2", "--metrics-port", str(port))
    try:
        ready = _wait_ready(pool, port)
        victim = ready["processes"][CHILDREN[0]]["pid"]
        producer, result = produce_in_background(cfg, 15_000, 2_500, seed=41)
        wait_for_records(cfg, cfg.topics.predictions, 3_000)
        assert producer.is_alive(), "the producer finished before the kill"
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        pool.wait_for_log(f"{CHILDREN[0]} died (killed by SIGKILL): restarting it", 30)
        ready = _wait_ready(pool, port)
        replaced_s = time.monotonic() - killed_at
        child = ready["processes"][CHILDREN[0]]
        assert child["pid"] != victim and child["restarts"] == 1
        assert child["last_exit"] == "killed by SIGKILL"
        producer.join()
        events = result[0].events
        dup_preds, dup_dead = _accounted(cfg, events)
        code, text = http_get(port, "/metrics")
        assert code == 200
        consumed = metric(text, "streaming_events_consumed_total", topic=cfg.topics.input)
        predicted = metric(text, "streaming_predictions_total")
        dead = metric(text, "streaming_dead_letters_total")
        # summed over both children and the killed one: every event at least once
        assert consumed >= len(events)
        assert predicted + dead >= len(events)
        assert metric(text, "streaming_pool_restarts_total") == 1
        assert metric(text, "streaming_pool_processes") == 2
        # latencies come from the children's status files: every one is of an acked
        # prediction (the killed child's last second of them was never reported)
        latencies = metric(text, "streaming_end_to_end_seconds_count")
        assert 0 < latencies <= predicted
        pool.signal(signal.SIGTERM)
        assert pool.wait(60) == 0, pool.log()[-3000:]
    finally:
        pool.stop()
    measured(
        f"\n[pool kill -9] {len(events):,} events, 2 processes, one killed under load: "
        f"lost 0, duplicates {dup_preds} predictions, {dup_dead} dead letters; replaced "
        f"and ready again {replaced_s:.1f} s after the kill (process start, model load, "
        f"rebalance); /metrics: {consumed:,.0f} consumed over 3 processes"
    )


def _committed(cfg) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """The group's committed offset per input partition."""
    reader = Consumer(reader_settings(cfg.kafka, cfg.kafka.group))
    try:
        wanted = [TopicPartition(cfg.topics.input, p) for p in range(cfg.topics.partitions)]
        return {tp.partition: tp.offset for tp in reader.committed(wanted, timeout=30)}
    finally:
        reader.close()


def test_sigterm_drains_every_child_and_commits_exactly_what_it_produced(
    broker, models_built, tmp_path, pod_id, measured
):
    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    port = free_port()
    pool = start_worker(path, tmp_path, "--processes", "2", "--metrics-port", str(port))
    try:
        _wait_ready(pool, port)
        producer, result = produce_in_background(cfg, 20_000, 4_000, seed=43)
        wait_for_records(cfg, cfg.topics.predictions, 4_000)
        stopped_at = time.monotonic()
        pool.signal(signal.SIGTERM)  # mid-stream: events in flight in both children
        assert pool.wait(cfg.worker.drain_timeout_s + 15) == 0, pool.log()[-3000:]
        drained_s = time.monotonic() - stopped_at
    finally:
        pool.stop()
    stopped = {r["worker"] for r in log_records(pool) if r["msg"].startswith("stopped: ")}
    assert stopped == set(CHILDREN), stopped  # each child drained and logged its counts
    producer.join()
    events = result[0].events
    # Where each output's event sits in the input, by event id (dead letters say it).
    inputs = read_topic(cfg, cfg.topics.input, len(events))
    position = {}
    for r in inputs:
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            position[json.loads(r.value)["event_id"]] = (r.partition, r.offset)
    committed = _committed(cfg)
    done = Counter(
        position[json.loads(r.value)["event_id"]]
        for r in read_topic(cfg, cfg.topics.predictions, 1)
    )
    done.update(
        (int(r.headers["dead_letter.partition"]), int(r.headers["dead_letter.offset"]))
        for r in read_topic(cfg, cfg.topics.dead_letters, 1)
    )
    below = {(r.partition, r.offset) for r in inputs if r.offset < committed[r.partition]}
    # Every event below the commit point has its output, once; none above it has one, so a
    # worker starting from these offsets neither loses nor repeats an event.
    assert set(done) == below, (len(set(done) - below), len(below - set(done)))
    assert max(done.values()) == 1
    assert 4_000 <= len(below) < len(events)  # stopped mid-stream, with work done
    measured(
        f"\n[pool SIGTERM] 2 children drained and exited 0 in {drained_s:.1f} s, "
        f"mid-stream: {len(below):,} of {len(events):,} events committed, each with "
        "exactly one output, none past the commit (duplicates 0 on restart)"
    )


def test_a_child_that_fails_its_start_up_checks_stops_the_pool_with_exit_2(
    broker, tmp_path, pod_id
):
    path, cfg = write_config(tmp_path, broker.bootstrap)  # its topics were never created
    pool = start_worker(path, tmp_path, "--processes", "2")
    try:
        assert pool.wait(60) == 2, pool.log()[-3000:]
    finally:
        pool.stop()
    log = pool.log()
    assert cfg.topics.input in log  # the child's own error names what is missing
    assert "failed its start-up checks (exit 2): stopping the pool" in log
    assert "restarting it" not in log  # a restart would fail the same way
