"""Overload: the worker pauses its partitions instead of buffering, memory stays bounded, and
nothing is lost."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import pytest
import yaml

from models.fraud.faulty import build_faulty
from streaming.dev.produce import produce_events
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import BASE_CONFIG, read_topic, start_worker, write_config

pytestmark = pytest.mark.integration


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_overload_pauses_partitions_with_bounded_memory(broker, models_built, tmp_path, measured):
    # A backlog far larger than the in-flight limit, and a model whose first real batch takes
    # 3 s (a slow model, whatever the machine's speed): the source must pause, not buffer. The
    # lane's own bound is lifted so that only the in-flight limit holds the source back.
    slow = build_faulty("hanging", models_built / "v2", tmp_path / "v8", "v8", hang_s=3.0)
    base = yaml.safe_load(BASE_CONFIG.read_text())["kafka"]["consumer"]
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **{
            "model.versions": [
                {"version": "v8", "weight": 100, "runtime": "torch", "path": str(slow)}
            ],
            "batching.max_queued_events": 100_000,
            "worker.inference_timeout_s": 60.0,
            "worker.max_in_flight": 3000,
            # librdkafka's own prefetch is bounded too (its default is 64 MB)
            "kafka.consumer": {**base, "queued.max.messages.kbytes": 4096},
        },
    )
    create_topics(cfg)
    produced = produce_events(cfg, 60_000, seed=61, keep=True)
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set() and worker.proc.poll() is None:
            try:
                samples.append(rss_mb(worker.proc.pid))
            except OSError:
                return
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    worker.wait_for_log("assigned", 60)
    start_rss = rss_mb(worker.proc.pid)
    sampler.start()
    assert worker.wait(180) == 0, worker.log()
    stop.set()
    sampler.join()

    log = worker.log()
    pauses, resumes = log.count('"paused '), log.count('"resumed ')
    assert pauses >= 1, "the worker never paused its partitions under overload"
    # how many cycles depends on how fast the broker refills the fetch queue; what users
    # depend on is that every pause ends in a resume (else the backlog would never finish)
    assert resumes == pauses, f"{pauses} pauses but {resumes} resumes"
    peak = max(samples)
    measured(
        f"\n[overload] 60,000-event backlog, max_in_flight 3,000: {pauses} pauses and "
        f"resumes, RSS {start_rss:.0f} MB at start, peak {peak:.0f} MB"
    )
    # 60,000 events are ~20 MB of values alone, several times that as Python objects; with
    # pausing the worker never holds more than a few thousand of them.
    assert peak - start_rss < 60, f"RSS grew {peak - start_rss:.0f} MB"
    preds = read_topic(cfg, cfg.topics.predictions, 60_000)
    ids = Counter(json.loads(r.value)["event_id"] for r in preds)
    assert ids == Counter(e.event_id for e in produced.events)
