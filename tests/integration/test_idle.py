"""An idle worker sleeps: with nothing to do, its feeding thread waits out long polls and its
delivery threads park, instead of waking on 50 ms timers (20 times a second each), and it
still scores what arrives next and stops on SIGTERM. Counted in the worker's threads' own
wake-ups (voluntary context switches, /proc), which a busy machine does not add to."""

from __future__ import annotations

import json
import signal
import time
from collections import Counter

import pytest

from loadtests.thread_cpu import per_event, snapshot
from streaming.dev.produce import produce_events
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import read_topic, start_worker, write_config

pytestmark = pytest.mark.integration

MEASURED_S = 2.0


def test_an_idle_worker_sleeps_and_still_scores_what_comes(broker, models_built, tmp_path):
    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    first = produce_events(cfg, 50, seed=3, keep=True)
    worker = start_worker(path, tmp_path)
    try:
        # scored and acked: every delivery thread has had work, and then nothing is in flight
        read_topic(cfg, cfg.topics.predictions, 50)
        time.sleep(1.0)  # past the last commit and the delivery threads' last 50 ms poll
        before = snapshot(worker.proc.pid)
        time.sleep(MEASURED_S)
        after = snapshot(worker.proc.pid)
        woke = per_event(before, after, MEASURED_S)  # switches per second, by thread name
        threads = Counter(t.name for t in after.values())
        # a thread each: the predictions' producer and the state changelog's own
        assert threads["delivery"] == 2, threads
        per_thread = {n: woke[n].voluntary / threads[n] for n in ("main", "delivery")}
        # 20 a second each with the 50 ms timers; 5 polls a second, and parked threads that
        # check in once a second, now
        assert per_thread["main"] <= 10, (per_thread, woke)
        assert per_thread["delivery"] <= 3, (per_thread, woke)

        second = produce_events(cfg, 50, seed=4, keep=True)
        preds = read_topic(cfg, cfg.topics.predictions, 100)
        expected = Counter(e.event_id for e in (*first.events, *second.events))
        assert Counter(json.loads(r.value)["event_id"] for r in preds) == expected
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log()
    finally:
        worker.stop()
