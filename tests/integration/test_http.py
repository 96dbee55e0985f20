"""The worker's HTTP port: /healthz, /readyz and /metrics of a real worker process."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request

import pytest

from streaming.dev.broker import free_port
from streaming.dev.produce import produce_events
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import start_worker, wait_for_records, write_config

pytestmark = pytest.mark.integration


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        named = line.startswith((name + "{", name + " "))
        if named and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_probes_and_metrics_of_a_running_worker(broker, models_built, tmp_path):
    path, cfg = write_config(tmp_path, broker.bootstrap)
    create_topics(cfg)
    port = free_port()
    worker = start_worker(path, tmp_path, "--metrics-port", str(port))
    deadline = time.monotonic() + 60
    while True:  # the port opens before the models are warm: alive, not yet ready
        try:
            status, body = get(port, "/healthz")
            break
        except OSError:
            assert time.monotonic() < deadline, worker.log()
            time.sleep(0.1)
    assert status == 200 and json.loads(body)["ok"] is True
    worker.wait_for_log("assigned", 60)
    status, body = get(port, "/readyz")
    assert status == 200, body
    assert json.loads(body) | {"last_poll_age_s": 0} == {
        "ok": True,
        "models_warm": True,
        "assigned": True,
        "last_poll_age_s": 0,
    }

    produce_events(cfg, 3_000, invalid_ratio=0.05, seed=81)
    wait_for_records(cfg, cfg.topics.predictions, 2_700)
    labels = {"pipeline": "fraud", "model": "fraud", "version": "v2"}
    # Until the counters have every event (not a sleep that guesses how long that takes).
    deadline = time.monotonic() + 30
    while True:
        status, text = get(port, "/metrics")
        assert status == 200
        predicted = metric(text, "streaming_predictions_total", **labels)
        dead = metric(text, "streaming_dead_letters_total", pipeline="fraud")
        if predicted + dead >= 3_000 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert predicted + dead == 3_000 and dead > 50
    assert metric(text, "streaming_events_consumed_total") == 3_000
    assert metric(text, "streaming_batch_size_count", **labels) > 0
    e2e_count = metric(text, "streaming_end_to_end_seconds_count", **labels)
    assert e2e_count == predicted
    inf_bucket = metric(text, "streaming_end_to_end_seconds_bucket", le="+Inf", **labels)
    assert inf_bucket == predicted
    assert re.search(r'streaming_routing_weight\{.*version="v2"\} 1\.0', text)
    # lag is set per assigned partition (its value is unreliable on the embedded broker)
    lag_partitions = set(re.findall(r'streaming_consumer_lag\{.*partition="(\d)".*\}', text))
    assert lag_partitions == {"0", "1", "2", "3"}
    assert get(port, "/nope")[0] == 404

    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0
