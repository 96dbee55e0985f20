"""Model versions on the real broker: weighted sticky routing, live weight changes through the
control topic, refused control records, and shadows that never touch the primary path."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from streaming.config import PipelineConfig
from streaming.dev.produce import ProduceResult, produce_events
from streaming.kafka.settings import reader_settings
from streaming.kafka.topics import create_topics
from streaming.runtimes.base import sha256_file
from tests.kafka_helpers import (
    ROOT,
    log_records,
    read_topic,
    start_worker,
    wait_for_records,
    wait_for_split,
    write_config,
)

pytestmark = pytest.mark.integration


def versions(*specs: dict) -> dict:  # type: ignore[type-arg]
    return {
        "model.versions": [{"runtime": "onnx", "device": "cpu", "threads": 1, **s} for s in specs]
    }


def by_version(records) -> Counter[str]:  # type: ignore[no-untyped-def]
    return Counter(json.loads(r.value)["version"] for r in records)


def test_weighted_split_is_binomial_and_sticky(broker, models_built, tmp_path, measured):
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **versions({"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}),
    )
    create_topics(cfg)
    produced = produce_events(cfg, 20_000, seed=71, keep=True)
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    assert worker.wait(120) == 0, worker.log()
    preds = read_topic(cfg, cfg.topics.predictions, 20_000)
    assert len(preds) == 20_000
    share = by_version(preds)["v2"] / len(preds)
    sigma = (0.1 * 0.9 / len(preds)) ** 0.5
    measured(
        f"\n[split] 90/10 over {len(preds):,} events: v2 share {share:.4f} "
        f"(expected 0.1000 +- {4 * sigma:.4f})"
    )
    assert abs(share - 0.10) < 4 * sigma * 1.3  # 1.3: events of one card move together
    seen: dict[bytes, set[str]] = defaultdict(set)
    for r in preds:
        seen[r.key].add(json.loads(r.value)["version"])
    assert all(len(v) == 1 for v in seen.values()), "a card was scored by two versions"
    assert len(produced.events) == 20_000


def route(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streaming", "route", "-c", str(config), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def _control_written_ms(cfg: PipelineConfig) -> list[int]:
    """The timestamps of the control topic's records for this model, as the broker has them
    (the same the workers measure their lag from)."""
    consumer = Consumer(reader_settings(cfg.kafka, f"reader-{uuid.uuid4().hex[:8]}"))
    consumer.assign([TopicPartition(cfg.topics.control, 0, OFFSET_BEGINNING)])
    out: list[int] = []
    last_new = time.monotonic()
    deadline = last_new + 30
    try:
        while time.monotonic() < deadline and not (out and time.monotonic() - last_new > 1.5):
            batch = consumer.consume(100, timeout=0.5)
            if batch:
                last_new = time.monotonic()
            out += [
                m.timestamp()[1]
                for m in batch
                if not m.error() and m.key() == cfg.model.name.encode()
            ]
    finally:
        consumer.close()
    return out


def test_live_weight_change_applied_by_two_workers_without_loss(
    broker, models_built, tmp_path, measured
):
    """Before and after are decided per event from the run's own time stamps, not from the
    test's clock: an event scored before the control record was written was routed by the old
    weights; an event created after its worker applied the record (written time + the lag it
    logged) was routed by the new ones. Events in between are left out of both shares."""
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **versions({"version": "v1", "weight": 90}, {"version": "v2", "weight": 10}),
    )
    create_topics(cfg)
    # Both start at once: started one after the other, the first idled out (no events yet)
    # while the second was still starting on a busy machine, and its leaving in the middle of
    # the second's join stalled the embedded broker's group (nothing assigned in 7 minutes).
    first = start_worker(path, tmp_path, "--idle-exit", "6")
    second = start_worker(path, tmp_path, "--idle-exit", "6")
    wait_for_split([first, second], cfg.topics.partitions)
    result: list[ProduceResult] = []
    producer = threading.Thread(
        target=lambda: result.append(produce_events(cfg, 40_000, rate=5_000, seed=73, keep=True))
    )
    producer.start()
    wait_for_records(cfg, cfg.topics.predictions, 8_000)
    out = route(path, "--set", "v1=50", "--set", "v2=50")
    assert out.returncode == 0, out.stderr
    producer.join()
    assert first.wait(120) == 0 and second.wait(120) == 0, first.log() + second.log()

    events = result[0].events
    preds = read_topic(cfg, cfg.topics.predictions, len(events))
    got = Counter(json.loads(r.value)["event_id"] for r in preds)
    assert set(got) == {e.event_id for e in events}, "events were lost"
    duplicates = sum(got.values()) - len(got)
    written = _control_written_ms(cfg)
    assert len(written) == 1, written
    changed_ms = written[0]
    lags = {
        r["worker"]: r["control_lag_ms"]
        for w in (first, second)
        for r in log_records(w)
        if r["msg"].startswith("control record applied")
    }
    assert len(lags) == 2, "both workers must apply the change"
    applied_ms = {worker: changed_ms + lag for worker, lag in lags.items()}
    bodies = [json.loads(r.value) for r in preds]
    before = [b for b in bodies if b["scored_ms"] < changed_ms]
    after = [b for b in bodies if b["ts_ms"] > applied_ms[b["worker"]]]
    share_before = sum(b["version"] == "v2" for b in before) / len(before)
    share_after = sum(b["version"] == "v2" for b in after) / len(after)
    workers_after = {b["worker"] for b in after}
    measured(
        f"\n[live change] 90/10 -> 50/50 with 2 workers: applied after "
        f"{sorted(lags.values())} ms; v2 share {share_before:.3f} before "
        f"({len(before):,} events), {share_after:.3f} after ({len(after):,}); "
        f"{len(bodies) - len(before) - len(after):,} in between left out; "
        f"{len(events):,} events, lost 0, duplicates {duplicates}"
    )
    assert duplicates == 0
    assert max(lags.values()) < 1500  # the contract: "within about a second"
    assert abs(share_before - 0.10) < 0.03 and abs(share_after - 0.50) < 0.05
    assert len(workers_after) == 2  # both workers scored after the change


def test_malformed_control_records_are_refused_and_the_weights_stay(broker, models_built, tmp_path):
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **versions({"version": "v1", "weight": 100}, {"version": "v2", "weight": 0}),
    )
    create_topics(cfg)
    worker = start_worker(path, tmp_path)
    worker.wait_for_log("assigned", 60)
    p = Producer({"bootstrap.servers": broker.bootstrap})
    for bad in (
        b"not json",
        b'{"weights": {"v9": 100}}',
        b'{"weights": {"v1": 0, "v2": 0}}',
        b'{"weights": {"v1": 1}, "extra": 1}',
        b'{"weights": {"v2": 1}, "shadows": {"v1": 7}}',
    ):
        p.produce(cfg.topics.control, bad, b"fraud")
    p.flush(10)
    worker.wait_for_log("control record refused", 30)
    time.sleep(1)
    produce_events(cfg, 2_000, seed=75)
    wait_for_records(cfg, cfg.topics.predictions, 2_000)
    assert route(path, "--set", "v1=0", "--set", "v2=100").returncode == 0
    worker.wait_for_log("control record applied", 30)
    produce_events(cfg, 2_000, seed=76)
    wait_for_records(cfg, cfg.topics.predictions, 4_000)
    worker.signal(signal.SIGTERM)
    assert worker.wait(60) == 0, worker.log()
    log = worker.log()
    assert log.count("control record refused") == 5
    assert "unknown version(s) v9" in log and "every weight is 0" in log
    assert "extra: unknown key" in log and "shadow shares must lie in 0..1" in log
    preds = read_topic(cfg, cfg.topics.predictions, 4_000)
    assert len(preds) == 4_000
    assert by_version(preds) == {"v1": 2_000, "v2": 2_000}
    bad_cli = route(path, "--set", "v7=1")
    assert bad_cli.returncode == 2 and "unknown version(s) v7" in bad_cli.stderr


class _FailsOnRealData(torch.nn.Module):
    """Passes warm-up (all zeros), raises on every real batch: a broken shadow."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x != 0).any()):
            raise RuntimeError("shadow model failure")
        return torch.sigmoid(self.lin(x))


def _failing_model(models_built: Path, out: Path) -> Path:
    meta = json.loads((models_built / "v2" / "metadata.json").read_text())
    out.mkdir(parents=True)
    torch.jit.save(torch.jit.script(_FailsOnRealData(meta["input_dim"])), str(out / "model.pt"))
    meta.update(version="broken", files={"model.pt": sha256_file(out / "model.pt")})
    meta.pop("explain", None)  # no explanation artifacts: served with rule reasons only
    (out / "metadata.json").write_text(json.dumps(meta))
    return out


def test_shadows_never_reach_predictions_and_a_failing_shadow_breaks_nothing(
    broker, models_built, tmp_path, measured
):
    broken = _failing_model(models_built, tmp_path / "broken")
    path, cfg = write_config(
        tmp_path,
        broker.bootstrap,
        **versions(
            {"version": "v1", "weight": 100},
            {"version": "v2", "weight": 0, "shadow_share": 1.0},
            {
                "version": "broken",
                "weight": 0,
                "shadow_share": 1.0,
                "runtime": "torch",
                "path": str(broken),
            },
        ),
    )
    create_topics(cfg)
    worker = start_worker(path, tmp_path, "--idle-exit", "3")
    worker.wait_for_log("assigned", 60)
    produced = produce_events(cfg, 6_000, rate=3_000, seed=77, keep=True)
    assert worker.wait(120) == 0, worker.log()

    preds = read_topic(cfg, cfg.topics.predictions, 6_000)
    assert Counter(json.loads(r.value)["event_id"] for r in preds) == Counter(
        e.event_id for e in produced.events
    )
    assert by_version(preds) == {"v1": 6_000}
    shadow = read_topic(cfg, cfg.topics.shadow_topic, 6_000, timeout=30)
    shadow_versions = by_version(shadow)
    measured(
        f"\n[shadow] 6,000 events: predictions {dict(by_version(preds))}, shadow topic "
        f"{dict(shadow_versions)}"
    )
    assert set(shadow_versions) == {"v2"}  # the broken shadow published nothing
    assert shadow_versions["v2"] >= 0.95 * 6_000
    telemetry = [json.loads(r.value) for r in read_topic(cfg, cfg.topics.telemetry, 1, timeout=30)]
    assert sum(t["errors"] for t in telemetry if t["version"] == "broken") > 0
    dead = read_topic(cfg, cfg.topics.dead_letters, 0, timeout=5, settle=1.0)
    assert dead == []  # a shadow's failure is not the event's
