"""The monitor on the real broker: a bad canary is rolled back by itself through the control
topic while a good canary keeps its traffic, and nothing is lost on the way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import pytest

from models.fraud.faulty import build_faulty
from streaming.dev.produce import ProduceResult, produce_events
from streaming.kafka.topics import create_topics
from tests.kafka_helpers import ROOT, read_topic, start_worker, write_config

pytestmark = pytest.mark.integration

RATE = 1_600
EVENTS = 16_000


def test_bad_canary_rolled_back_good_canary_kept(broker, models_built, tmp_path, measured):
    bad_dir = build_faulty("noisy", models_built / "v2", tmp_path / "v9", "v9")
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **{
            "model.versions": [
                {"version": "v2", "weight": 60},
                {"version": "v1", "weight": 20},
                {"version": "v9", "weight": 20, "path": str(bad_dir)},
            ],
            "monitor.window_s": 2,
            "monitor.grace_s": 1,
            "monitor.min_events": 100,
            "monitor.bad_windows": 2,
            "monitor.auto_rollback": True,
            # Latency is not what this test judges: on a busy machine one version's lane can
            # stall for a moment in a 2 s window, and the good canary must not fail for that.
            "monitor.min_p99_excess_ms": 60_000,
        },
    )
    create_topics(cfg)
    worker = start_worker(path, tmp_path, "--idle-exit", "5")
    monitor_log = tmp_path / "monitor.log"
    with monitor_log.open("w") as out:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "streaming", "monitor", "-c", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        worker.wait_for_log("assigned", 60)
        result: list[ProduceResult] = []
        producer = threading.Thread(
            target=lambda: result.append(
                produce_events(cfg, EVENTS, rate=RATE, invalid_ratio=0.01, seed=5, keep=True)
            )
        )
        producer.start()
        producer.join(120)
        assert worker.wait(120) == 0, worker.log()
        # The worker idled out 5 s after the last event: every window has closed by now.
        time.sleep(1)
        monitor.send_signal(signal.SIGTERM)
        assert monitor.wait(60) == 0, monitor_log.read_text()
    finally:
        for proc in (monitor, worker.proc):
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    produced = result[0]
    log = monitor_log.read_text()

    verdicts = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.verdicts_topic, 9)]
    alerts = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.alerts_topic, 1)]
    control = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.control, 1)]
    rollbacks = [a for a in alerts if a.get("kind") == "rollback"]
    assert [a["version"] for a in rollbacks] == ["v9"], log
    rollback = rollbacks[0]
    assert len(rollback["failed_windows_start_ms"]) == 2
    assert any("PSI" in r or "flags" in r for r in rollback["reasons"]), rollback
    assert control[-1]["weights"] == {"v2": 60, "v1": 20, "v9": 0}, control
    # The good canary is judged, passes, and is never the subject of an alert.
    v1 = [v for v in verdicts if v["version"] == "v1"]
    assert Counter(v["verdict"] for v in v1)["ok"] >= 2, v1
    # Kept: never two failing windows in a row (what a rollback takes), and none in the
    # middle of the stream. The edge windows may fail: at the stream's start every card is
    # new, its state features empty, and the logistic v1's scores move further from its
    # training scores than v2's (measured: PSI 0.271 in the first window against v2's 0.017);
    # the last window holds what the stream's end left in it, as few as min_events on a busy
    # machine (measured: PSI 0.309 there with a core kept busy).
    marks = "".join("F" if v["verdict"] == "fail" else "." for v in v1)
    assert "FF" not in marks and "F" not in marks[1:-1], [
        (v["verdict"], v.get("reasons")) for v in v1
    ]
    assert not [a for a in alerts if a["version"] == "v1" and a["kind"] != "input_drift"]
    failed_v9 = [v for v in verdicts if v["version"] == "v9" and v["verdict"] == "fail"]
    assert len(failed_v9) >= 2

    # Nothing lost: every event has a prediction or a dead letter; v9 stops within ~2 s.
    preds = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.predictions, EVENTS - 400)]
    dead = read_topic(cfg, cfg.topics.dead_letters, 1)
    expected = {e.event_id for e in produced.events if e.label is not None}
    assert {p["event_id"] for p in preds} == expected
    assert len(dead) >= produced.invalid
    late_v9 = [p for p in preds if p["version"] == "v9" and p["scored_ms"] > rollback["ts_ms"]]
    last_v9 = max((p["scored_ms"] for p in late_v9), default=rollback["ts_ms"])
    applied_ms = last_v9 - rollback["ts_ms"]
    assert applied_ms < 3_000, applied_ms
    after = Counter(p["version"] for p in preds if p["scored_ms"] > last_v9)
    assert after["v9"] == 0 and after["v1"] > 0

    failures = "".join(f"\n  {v['window_start_ms']}: {'; '.join(v['reasons'])}" for v in failed_v9)
    measured(
        f"[monitor] {len(verdicts)} verdicts; v9 failed in windows:{failures}\n"
        f"[monitor] rollback of v9 written {rollback['ts_ms'] - failed_v9[1]['window_end_ms']}"
        f" ms after the end of its 2nd failing window; last v9 prediction "
        f"{applied_ms} ms after the rollback; v1 verdicts: "
        f"{dict(Counter(v['verdict'] for v in v1))}; after: {dict(after)}"
    )
