"""Faults on the real broker: a model that raises goes to the dead letters batch by batch
while the worker goes on, and its circuit breaker stops calling it; a model that hangs is
timed out, its rows dead-lettered, and /healthz fails while the worker goes on."""

from __future__ import annotations

import http.client
import json
import random
import signal
import threading
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
from confluent_kafka import Consumer, TopicPartition

from models.fraud.faulty import build_faulty
from streaming.dev.broker import EmbeddedBroker, free_port
from streaming.dev.produce import produce_events
from streaming.kafka.settings import reader_settings
from streaming.kafka.topics import create_topics
from tests.integration.test_http import get as http_get
from tests.integration.test_http import metric
from tests.kafka_helpers import (
    Record,
    log_records,
    produce_in_background,
    read_topic,
    start_worker,
    wait_for_records,
    wait_for_split,
    write_config,
)
from tests.state_scores import assert_scores_equal, offline_scores

pytestmark = pytest.mark.integration


def test_a_raising_model_dead_letters_its_events_and_its_breaker_opens(
    broker, models_built, tmp_path, measured
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
    measured(
        f"\n[raising model] {len(produced.events):,} events: {len(preds):,} scored by v2, "
        f"{len(inference):,} of v7's dead-lettered ({dict(classes)}), "
        f"{len(invalid)} invalid dead-lettered; the worker exited 0"
    )


def _accounted(cfg, events) -> tuple[int, int, list[Record]]:  # type: ignore[no-untyped-def]
    """Assert no event lost; return (duplicate predictions, duplicate dead letters, the
    predictions read)."""
    valid = {e.event_id for e in events if e.invalid_kind is None}
    invalid = Counter(e.value for e in events if e.invalid_kind is not None)
    preds = read_topic(cfg, cfg.topics.predictions, len(valid))
    dead = read_topic(cfg, cfg.topics.dead_letters, sum(invalid.values()))
    got = Counter(json.loads(r.value)["event_id"] for r in preds)
    assert set(got) == valid, f"{len(valid - set(got))} events lost"
    got_dead = Counter(r.value for r in dead)
    assert set(got_dead) == set(invalid), "dead letters lost"
    return sum(got.values()) - len(got), sum(got_dead.values()) - len(got_dead), preds


def test_workers_joining_and_leaving_mid_stream_lose_nothing(
    broker, models_built, tmp_path, measured
):
    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    first = start_worker(path, tmp_path, "--idle-exit", "5")
    first.wait_for_log("assigned", 60)
    producer, result = produce_in_background(cfg, 80_000, 2_500, seed=91)
    wait_for_records(cfg, cfg.topics.predictions, 5_000)
    second = start_worker(path, tmp_path, "--idle-exit", "5")
    second.wait_for_log("assigned", 60)
    third = start_worker(path, tmp_path, "--idle-exit", "5")
    third.wait_for_log("assigned", 60)
    # the rebalance settles before a member leaves (see README, Tansu): read from the logs
    wait_for_split([first, second, third], cfg.topics.partitions)
    second.signal(signal.SIGTERM)  # a scale-down mid-stream
    assert second.wait(60) == 0, second.log()
    assert producer.is_alive(), "the producer finished before the members changed"
    producer.join()
    assert first.wait(180) == 0, first.log()
    assert third.wait(180) == 0, third.log()
    events = result[0].events
    dup_preds, dup_dead, preds = _accounted(cfg, events)
    revokes = sum(w.log().count('"revoked') for w in (first, second, third))
    # Each moved partition brought its per-card state (restored from the changelog by its
    # new owner): every prediction equals an uninterrupted run's score.
    restores = [r for w in (first, second, third) for r in log_records(w) if "restored" in r["msg"]]
    assert sum(r["keys"] for r in restores) > 0
    want, _ = offline_scores(cfg, models_built, len(events))
    assert_scores_equal(preds, want)
    measured(
        f"\n[rebalance] {len(events):,} events, 1 -> 2 -> 3 -> 2 workers ({revokes} "
        f"revokes, {len(restores)} partition state restores of "
        f"{sum(r['keys'] for r in restores):,} keys, the longest "
        f"{max(r['restore_s'] for r in restores):.3f} s): lost 0, duplicates "
        f"{dup_preds} predictions, {dup_dead} dead letters; every score equal to an "
        "uninterrupted run's"
    )
    # Revoked partitions are committed up to what was delivered: duplicates only from
    # events in flight at a revoke, never a whole backlog.
    assert dup_preds + dup_dead <= 3 * cfg.worker.poll_batch


def test_repeated_kill_9_under_load_loses_nothing(broker, models_built, tmp_path, measured):
    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    producer, result = produce_in_background(cfg, 90_000, 2_500, seed=97)
    kills = 0
    rng = random.Random(5)
    recoveries: list[float] = []  # from a kill to the replacement's partition assignment
    killed_at = None
    for _ in range(2):  # a replacement killed in turn: recovery from a recovery
        worker = start_worker(path, tmp_path)
        worker.wait_for_log("assigned", 60)
        if killed_at is not None:
            recoveries.append(time.monotonic() - killed_at)
        time.sleep(rng.uniform(1.5, 3.5))  # a random moment under load, not a commit boundary
        assert producer.is_alive(), f"the producer finished before kill {kills + 1}"
        worker.signal(signal.SIGKILL)
        worker.wait(10)
        killed_at = time.monotonic()
        kills += 1
    last = start_worker(path, tmp_path, "--idle-exit", "4")
    last.wait_for_log("assigned", 60)
    recoveries.append(time.monotonic() - killed_at)
    producer.join()
    assert last.wait(180) == 0, last.log()
    events = result[0].events
    dup_preds, dup_dead, preds = _accounted(cfg, events)
    # Each replacement restored the per-card state from the changelog before scoring: every
    # prediction, the duplicates of the events read again included, has the score of an
    # uninterrupted run (one that began with empty state would score without the histories).
    restores = [r for r in log_records(last) if "restored" in r["msg"]]
    assert sum(r["keys"] for r in restores) > 0
    want, _ = offline_scores(cfg, models_built, len(events))
    assert_scores_equal(preds, want)
    measured(
        f"\n[kill -9 x{kills}] {len(events):,} events: lost 0, duplicates {dup_preds} "
        f"predictions, {dup_dead} dead letters; kill to replacement assigned: "
        f"{', '.join(f'{r:.1f}' for r in recoveries)} s (incl. process start, model load "
        f"and the state restore: {sum(r['keys'] for r in restores):,} keys, the longest "
        f"partition {max(r['restore_s'] for r in restores):.3f} s); every score equal to "
        "an uninterrupted run's"
    )
    assert dup_preds + dup_dead <= kills * cfg.worker.max_in_flight


def test_a_frozen_broker_then_resumed_the_worker_recovers_by_itself(
    models_built, tmp_path, measured
):
    # Its own broker: freezing the session's would stall the other tests' clients.
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        path, cfg = write_config(tmp_path, broker.bootstrap)
        create_topics(cfg)
        worker = start_worker(path, tmp_path, "--idle-exit", "6")
        worker.wait_for_log("assigned", 60)
        producer, result = produce_in_background(cfg, 30_000, 3_000, seed=99)
        wait_for_records(cfg, cfg.topics.predictions, 4_000)
        assert broker.process is not None
        frozen_s = 9.0  # longer than session.timeout.ms (6 s)
        broker.process.send_signal(signal.SIGSTOP)
        time.sleep(frozen_s)
        broker.process.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        producer.join(120)
        assert worker.wait(240) == 0, worker.log()
        recovered_s = time.monotonic() - resumed
        events = result[0].events
        dup_preds, dup_dead, _ = _accounted(cfg, events)
    measured(
        f"\n[broker frozen {frozen_s:.0f} s] {len(events):,} events: lost 0, duplicates "
        f"{dup_preds} predictions, {dup_dead} dead letters; the worker finished "
        f"{recovered_s:.1f} s after the broker resumed (incl. its 6 s idle exit)"
    )


def _log_lines(text: str) -> list[dict]:  # type: ignore[type-arg]
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _unix(ts: str) -> float:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


class _Prober:
    """Polls /healthz and /readyz on a thread; notes (wall time, status, body) of each."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.healthz: list[tuple[float, int, str]] = []
        self.readyz: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for path, seen in (("/healthz", self.healthz), ("/readyz", self.readyz)):
                try:
                    status, body = http_get(self.port, path)
                except (OSError, http.client.HTTPException):  # the worker exiting mid-reply
                    continue
                seen.append((time.time(), status, body))

    def first_failure(self) -> tuple[float, int, str] | None:
        return next((h for h in self.healthz if h[1] != 200), None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_a_hanging_model_is_timed_out_its_rows_dead_lettered_and_healthz_fails(
    broker, models_built, tmp_path, measured
):
    hanging = build_faulty("hanging", models_built / "v2", tmp_path / "v8", "v8")
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **{
            "model.versions": [
                {"version": "v2", "weight": 50},
                {"version": "v8", "weight": 50, "runtime": "torch", "path": str(hanging)},
            ],
            "worker.inference_timeout_s": 1.0,
        },
    )
    create_topics(cfg)
    port = free_port()
    worker = start_worker(path, tmp_path, "--metrics-port", str(port))
    prober = None
    try:
        worker.wait_for_log("assigned", 90)
        prober = _Prober(port)
        produced = produce_events(cfg, 4_000, rate=1_000, invalid_ratio=0.02, seed=17, keep=True)
        deadline = time.monotonic() + 120
        while prober.first_failure() is None:
            assert time.monotonic() < deadline, worker.log()
            assert worker.proc.poll() is None, worker.log()
            time.sleep(0.1)

        # every event: exactly one prediction (v2) or dead letter, by event id
        valid = [e for e in produced.events if e.invalid_kind is None]
        invalid = [e for e in produced.events if e.invalid_kind is not None]
        preds = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.predictions, 1_000)]
        dead = read_topic(cfg, cfg.topics.dead_letters, len(valid) - len(preds) + len(invalid))
        assert {p["version"] for p in preds} == {"v2"}
        inference = [r for r in dead if r.headers["dead_letter.stage"] == b"inference"]
        scored = Counter(p["event_id"] for p in preds)
        timed_out = Counter(json.loads(r.value)["event_id"] for r in inference)
        assert scored.keys() | timed_out.keys() == {e.event_id for e in valid}
        assert not scored.keys() & timed_out.keys()
        assert max((scored + timed_out).values()) == 1
        assert len(dead) - len(inference) == len(invalid)
        assert len(inference) > 0
        assert {r.headers["dead_letter.version"] for r in inference} == {b"v8"}
        assert {r.headers["dead_letter.reason_class"] for r in inference} == {b"timeout"}
        reasons = {r.headers["dead_letter.reason"].decode() for r in inference}
        assert all("v8" in r and "worker.inference_timeout_s (1 s" in r for r in reasons)

        # not healthy, still ready and scraped; the body names the hung version
        at, status, body = prober.first_failure()  # type: ignore[misc]
        assert status == 503 and "fraud/v8 hung" in body, body
        assert worker.proc.poll() is None  # it goes on
        assert http_get(port, "/readyz")[0] == 200
        status, text = http_get(port, "/metrics")
        assert status == 200
        assert metric(text, "streaming_dead_letters_total", stage="inference", reason="timeout")
        assert http_get(port, "/healthz")[0] == 503

        # commits moved on over the dead letters: every input offset is committed
        ends = Counter()
        for r in read_topic(cfg, cfg.topics.input, len(produced.events)):
            ends[r.partition] = max(ends[r.partition], r.offset + 1)
        committed = _wait_committed(cfg, dict(ends), 60)
        assert committed == dict(ends), (committed, dict(ends))

        # a SIGTERM still drains and exits 0 though the model thread is stuck for good
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log()
    finally:
        if prober is not None:
            prober.stop()
        worker.stop()
    log_text = worker.log()
    assert "discarded" not in log_text  # the call never returned
    lines = _log_lines(log_text)
    (fired,) = [x for x in lines if x["msg"].startswith("inference timeout")]
    (opened,) = [x for x in lines if "circuit open for good" in x["msg"]]
    hang_at = _unix(fired["ts"]) - fired["running_s"]
    timeline = {
        "timeout fired": _unix(fired["ts"]) - hang_at,
        "breaker opened": _unix(opened["ts"]) - hang_at,
        "/healthz failed (first probe seen)": at - hang_at,
    }
    assert fired["running_s"] >= 1.0  # not before the timeout
    assert all(t >= 0 for t in timeline.values())
    measured(
        f"\n[hanging model, inference_timeout_s 1] {len(produced.events):,} events: "
        f"{len(preds):,} scored by v2, {len(inference):,} of v8's dead-lettered (timeout), "
        f"{len(invalid)} invalid; every offset committed; SIGTERM exit 0\n  seconds from "
        "the hang: " + ", ".join(f"{k} {v:.3f}" for k, v in timeline.items())
    )


def _wait_committed(cfg, ends: dict[int, int], timeout: float) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """The group's committed offsets, once they reach ``ends`` (or at the deadline)."""
    consumer = Consumer(reader_settings(cfg.kafka, cfg.kafka.group))
    try:
        deadline = time.monotonic() + timeout
        while True:
            tps = [TopicPartition(cfg.topics.input, p) for p in ends]
            got = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
            if got == ends or time.monotonic() > deadline:
                return got
            time.sleep(0.5)
    finally:
        consumer.close()
