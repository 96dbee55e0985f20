"""Acceptance of the label join on the embedded broker, full size.

    python -m loadtests.labels [--events 100000] [--runs 3] [--rate 8000] [--keep DIR]

Two scenarios, each run ``--runs`` times on one broker:

* join: the worker scores ``--events`` events, ``streaming produce --labels`` sends their
  truth after compressed chargeback delays, then duplicated, unknown and late labels are
  added; the monitor is killed with SIGKILL mid-run and restarted. Its last quality record
  per version and window must equal an offline join (numpy) of the same predictions and
  labels topics, tp/fp/fn/tn exactly, and the unmatched labels by reason too.
* canary: a baseline, a better canary (the unbroken model) and a canary blind on a share of
  events (same flag share, same scores, PSI passes, about 30% less fraud caught); the bad
  one must be rolled back on labels alone, the better one kept.

The suite (tests/integration/test_labels.py) runs both small; this command is the full size.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from loadtests.scratch_config import write_scratch_config
from streaming.config import PipelineConfig, load_config
from streaming.dev.produce import ProduceResult, produce_events
from streaming.kafka import settings as kafka
from streaming.kafka.topics import create_topics
from streaming.pipeline import PipelineSpec

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "pipelines" / "fraud" / "pipeline.yaml"
FIELDS = ("predictions", "labelled", "tp", "fp", "fn", "tn")


# ---------------------------------------------------------------------------- plumbing


def write_config(bootstrap: str, tmp: Path, overrides: dict[str, Any]) -> tuple[Path, Any]:
    """The fraud pipeline with unique topics and group, dotted-key overrides, as a file."""
    path = write_scratch_config(tmp, bootstrap, prefix="l", group="labels", **overrides)
    return path, load_config(path)


@dataclass
class Child:
    """A ``streaming`` subcommand in a child process, its output in a file."""

    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Child:
        with self.log_path.open("a") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streaming", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


def read_all(cfg: PipelineConfig, topic: str, settle: float = 2.0) -> list[tuple[Any, ...]]:
    """(partition, offset, key, value) of every record of ``topic``, once nothing more comes
    for ``settle`` seconds. Partitions are assigned, not subscribed: no group join to wait
    for (and the embedded broker's high watermark cannot say where the end is)."""
    consumer = Consumer(kafka.reader_settings(cfg.kafka, f"reader-{uuid.uuid4().hex[:8]}"))
    meta = consumer.list_topics(topic, timeout=10)
    parts = meta.topics[topic].partitions if topic in meta.topics else {}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out = []
    last = time.monotonic()
    try:
        while time.monotonic() - last < settle:
            batch = consumer.consume(num_messages=10_000, timeout=0.5)
            for m in batch:
                if m.error() is None:
                    out.append((m.partition(), m.offset(), m.key(), m.value()))
            if batch:
                last = time.monotonic()
    finally:
        consumer.close()
    out.sort(key=lambda r: (r[0], r[1]))
    return out


# ---------------------------------------------------------------------------- offline join


def offline_join(
    preds: list[dict[str, Any]],
    labels: list[dict[str, Any]],
    *,
    window_ms: int,
    horizon_ms: int,
    threshold: float,
) -> tuple[dict[tuple[str, int], dict[str, int]], dict[str, int]]:
    """Quality counts per (version, window start) and unmatched labels by reason, computed
    from the topics directly (labels in log order: the last in-time label of an event wins;
    a prediction seen twice counts once)."""
    first: dict[str, dict[str, Any]] = {}
    for p in preds:
        first.setdefault(p["event_id"], p)
    truth: dict[str, int] = {}
    late: set[str] = set()
    unknown: set[str] = set()
    seen: Counter[str] = Counter()
    for lab in labels:
        eid = lab["event_id"]
        seen[eid] += 1
        p = first.get(eid)
        if p is None:
            unknown.add(eid)
        elif lab["label_ts_ms"] > p["scored_ms"] + horizon_ms:
            late.add(eid)
        else:
            truth[eid] = lab["label"]
    ids = list(first)
    version = np.array([first[e]["version"] for e in ids])
    scored = np.array([first[e]["scored_ms"] for e in ids], dtype=np.int64)
    flagged = np.array([first[e]["score"] for e in ids]) >= threshold
    y = np.array([truth.get(e, -1) for e in ids])
    start = scored - scored % window_ms
    out: dict[tuple[str, int], dict[str, int]] = {}
    for v, s in sorted(set(zip(version.tolist(), start.tolist(), strict=True))):
        m = (version == v) & (start == s)
        yl, fl = y[m], flagged[m]
        out[(v, s)] = {
            "predictions": int(m.sum()),
            "labelled": int((yl >= 0).sum()),
            "tp": int((fl & (yl == 1)).sum()),
            "fp": int((fl & (yl == 0)).sum()),
            "fn": int((~fl & (yl == 1)).sum()),
            "tn": int((~fl & (yl == 0)).sum()),
        }
    counts = {
        "unknown_id": len(unknown),
        "past_horizon": len(late),
        "duplicates": sum(1 for n in seen.values() if n > 1),
    }
    return out, counts


def monitor_quality(
    records: list[dict[str, Any]],
) -> tuple[dict[tuple[str, int], dict[str, int]], dict[str, int]]:
    """The records in force on the quality topic: the last per (version, window), and the
    last label counts."""
    windows: dict[tuple[str, int], dict[str, int]] = {}
    counts: dict[str, int] = {}
    for r in records:
        if r.get("kind") == "window":
            windows[(r["version"], r["window_start_ms"])] = {k: r[k] for k in FIELDS}
        elif r.get("kind") == "labels":
            counts = {k: r[k] for k in ("unknown_id", "past_horizon", "duplicates")}
    return windows, counts


# ---------------------------------------------------------------------------- scenarios


@dataclass
class JoinResult:
    events: int
    predictions: int
    labels: int
    injected: dict[str, int]
    equal: bool
    seconds_to_equal: float
    """From the last injected label to the monitor agreeing with the offline join."""
    seconds_total: float
    """From the first event produced to the monitor agreeing (its join rate's lower bound)."""
    windows: int
    offline_counts: dict[str, int]
    monitor_counts: dict[str, int]
    diff: list[str] = field(default_factory=list)


def _send_labels(cfg: PipelineConfig, rows: list[tuple[bytes, dict[str, Any]]]) -> None:
    producer = Producer({**kafka.producer_settings(cfg.kafka, "labels-inject"), "linger.ms": 50})
    for key, value in rows:
        producer.produce(cfg.topics.labels_topic, json.dumps(value).encode(), key)
        producer.poll(0)
    if producer.flush(30):
        raise RuntimeError("injected labels were not all delivered")


def _decode(rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    return [json.loads(r[3]) for r in rows]


def join_run(
    bootstrap: str,
    tmp: Path,
    *,
    events: int,
    rate: float,
    seed: int = 3,
    kill: bool = True,
    horizon_s: float = 3_600.0,
    timeout_s: float | None = None,
    log_level: str = "WARNING",
) -> JoinResult:
    """One join run (see the module docstring); ``equal`` says whether the monitor agreed."""
    path, cfg = write_config(
        bootstrap,
        tmp,
        {
            "model.versions": [{"version": "v2", "weight": 70}, {"version": "v1", "weight": 30}],
            "monitor.labels": True,
            "monitor.window_s": 1,
            "monitor.grace_s": 1,
            "monitor.quality_interval_s": 0.5,
            "monitor.label_horizon_s": horizon_s,
        },
    )
    create_topics(cfg)
    worker = Child(["run", "-c", str(path), "--idle-exit", "3"], tmp / "worker.log").start()
    monitor = Child(
        ["monitor", "-c", str(path), "--log-level", log_level], tmp / "monitor.log"
    ).start()
    result: list[ProduceResult] = []
    # The monitor joins about 2,000 records/s on a shared 2-core machine (faust, a changelog
    # write per event): give it time in proportion.
    timeout_s = timeout_s if timeout_s is not None else 60 + events * 0.004
    run_started = time.monotonic()
    try:
        producer = threading.Thread(
            target=lambda: result.append(
                produce_events(cfg, events, rate=rate, seed=seed, labels=True, label_time_scale=2e6)
            )
        )
        producer.start()
        if kill:
            _wait_for_quality(cfg, monitor, 60)  # mid-run: the monitor has joined some labels
            monitor.stop(signal.SIGKILL)
            monitor.start()
        producer.join(600)
        if worker.wait(600) != 0:  # it idles out 3 s after the last event
            raise RuntimeError("worker failed:\n" + worker.log()[-3000:])
        rows = read_all(cfg, cfg.topics.predictions, 1.0)
        preds = _decode(rows)
        keys = {p["event_id"]: r[2] for p, r in zip(preds, rows, strict=True)}
        sent = _decode(read_all(cfg, cfg.topics.labels_topic, 1.0))
        injected = _inject(cfg, preds, keys, sent, np.random.default_rng(seed), horizon_s)
        labels = _decode(read_all(cfg, cfg.topics.labels_topic, 1.0))
        m = cfg.monitor
        want, want_counts = offline_join(
            preds,
            labels,
            window_ms=int(m.window_s * 1000),
            horizon_ms=int(m.label_horizon_s * 1000),
            threshold=cfg.model.threshold,
        )
        started = time.monotonic()
        got: dict[tuple[str, int], dict[str, int]] = {}
        got_counts: dict[str, int] = {}
        while time.monotonic() - started < timeout_s:
            got, got_counts = monitor_quality(_decode(read_all(cfg, cfg.topics.quality_topic, 1)))
            if got == want and got_counts == want_counts:
                break
            if monitor.proc is not None and monitor.proc.poll() is not None:
                raise RuntimeError("monitor died:\n" + monitor.log()[-3000:])
        seconds = time.monotonic() - started
        total_s = time.monotonic() - run_started
    finally:
        monitor.stop()
        worker.stop(signal.SIGKILL, 10)
    diff = [
        f"{k}: monitor {got.get(k)} offline {want.get(k)}"
        for k in sorted(set(got) | set(want))
        if got.get(k) != want.get(k)
    ]
    if got_counts != want_counts:
        diff.append(f"label counts: monitor {got_counts} offline {want_counts}")
    return JoinResult(
        events,
        len({p["event_id"] for p in preds}),
        len(labels),
        injected,
        not diff,
        seconds,
        total_s,
        len(want),
        want_counts,
        got_counts,
        diff,
    )


def _wait_for_quality(cfg: PipelineConfig, monitor: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if monitor.proc is not None and monitor.proc.poll() is not None:
            raise RuntimeError("monitor died:\n" + monitor.log()[-3000:])
        records = _decode(read_all(cfg, cfg.topics.quality_topic, 0.5))
        if any(r.get("kind") == "window" and r["labelled"] > 0 for r in records):
            return
    raise RuntimeError(f"no quality record with labels on {cfg.topics.quality_topic}")


def _inject(
    cfg: PipelineConfig,
    preds: list[dict[str, Any]],
    key_of: dict[str, bytes],
    sent: list[dict[str, Any]],
    rng: np.random.Generator,
    horizon_s: float,
) -> dict[str, int]:
    """Duplicated (same and flipped), unknown and late labels, about 1% of events each."""
    by_id = {p["event_id"]: p for p in preds}
    labelled = sorted({lab["event_id"] for lab in sent if lab["event_id"] in by_id})
    unlabelled = sorted(set(by_id) - {lab["event_id"] for lab in sent})
    n = max(10, len(preds) // 100)
    now = int(time.time() * 1000)
    horizon_ms = int(horizon_s * 1000)
    last = {lab["event_id"]: lab for lab in sent}
    rows: list[tuple[bytes, dict[str, Any]]] = []
    for eid in rng.choice(labelled, size=min(n, len(labelled)), replace=False).tolist():
        old = last[eid]
        flip = bool(rng.random() < 0.5)
        value = {**old, "label": 1 - old["label"] if flip else old["label"], "source": "analyst"}
        rows.append((key_of[eid], value))
    dup = len(rows)
    for i in range(n):
        # Known long ago and never matched: waits no longer than the horizon.
        value = {"event_id": f"ghost-{i}", "label": 1, "label_ts_ms": now - horizon_ms - 1_000}
        rows.append((f"ghost-{i}".encode(), {**value, "source": "chargeback"}))
    for eid in rng.choice(unlabelled, size=min(n, len(unlabelled)), replace=False).tolist():
        p = by_id[eid]
        value = {"event_id": eid, "label": 1, "label_ts_ms": p["scored_ms"] + horizon_ms + 1_000}
        rows.append((key_of[eid], {**value, "source": "chargeback"}))
    _send_labels(cfg, rows)
    return {"duplicated": dup, "unknown": n, "late": len(rows) - dup - n}


@dataclass
class CanaryResult:
    events: int
    rolled_back: list[str]
    """Versions rolled back on labels (from the alerts topic)."""
    other_rollbacks: list[str]
    """Versions rolled back for any other reason (must stay empty: PSI and flags pass)."""
    last_verdicts: dict[str, str]
    recall: dict[str, float | None]
    flagged_share: dict[str, float]
    labelled_frauds: dict[str, int]
    seconds_to_rollback: float | None
    """From the first event produced to the rollback alert."""
    reasons: list[str]
    predictions: dict[str, int]
    """Per version, in the judged window: what ``flagged_share`` is a share of."""

    def flag_shares_alike(self, sigmas: float = 4.0) -> bool:
        """Every two versions flag the same share up to sampling: within ``sigmas`` standard
        errors of a two-proportion difference (the canaries flag alike by construction, and
        a fixed bound would fail by chance once the flag rate is a few per cent)."""
        shares = list(self.flagged_share.items())
        for i, (a, pa) in enumerate(shares):
            for b, pb in shares[i + 1 :]:
                na, nb = self.predictions[a], self.predictions[b]
                pooled = (pa * na + pb * nb) / (na + nb)
                se = (pooled * (1 - pooled) * (1 / na + 1 / nb)) ** 0.5
                if abs(pa - pb) > sigmas * se + 1e-12:
                    return False
        return True


def _with_fraud_rate(rate: float | None) -> PipelineSpec | None:
    if rate is None:
        return None
    from pipelines.fraud import PIPELINE
    from pipelines.fraud.generator import FraudGenerator

    return dataclasses.replace(
        PIPELINE, make_generator=lambda seed: FraudGenerator(seed, fraud_rate=rate)
    )


def build_canaries(tmp: Path, models: Path, bad_share: float = 0.43) -> dict[str, Path]:
    """The baseline blind on 10% of events, the unbroken model (better), and a canary blind on
    ``bad_share`` (about 30% less fraud caught than the baseline with the default, measured
    25-31% on the state features; 37% gave 16-24%)."""
    from models.fraud.faulty import build_faulty

    return {
        "v2b": build_faulty("blind", models / "v2", tmp / "v2b", "v2b", blind_share=0.10),
        "v8": build_faulty("blind", models / "v2", tmp / "v8", "v8", blind_share=bad_share),
    }


def _judged_on(
    verdict: dict[str, Any] | None, latest: dict[str, dict[str, Any]], version: str, baseline: str
) -> bool:
    """The verdict was judged on the latest quality of the canary and of the baseline."""
    q, base = latest.get(version), latest.get(baseline)
    return (
        verdict is not None
        and q is not None
        and base is not None
        and verdict["labelled"] == q["labelled"]
        and verdict["baseline_recall"] == base["recall"]
    )


def canary_run(
    bootstrap: str,
    tmp: Path,
    *,
    events: int,
    rate: float | None,
    seed: int = 11,
    threshold: float = 0.2,
    min_labels: int = 30,
    max_recall_drop: float = 0.05,
    confidence: float = 0.9,
    fraud_rate: float | None = None,
    timeout_s: float | None = None,
) -> CanaryResult:
    """One canary run (see the module docstring): v2b baseline, v2 better, v8 worse."""
    paths = build_canaries(tmp, ROOT / "models" / "fraud")
    path, cfg = write_config(
        bootstrap,
        tmp,
        {
            "model.threshold": threshold,
            "decision.review_threshold": threshold,  # no review band: flagged is decline
            "model.versions": [
                {"version": "v2b", "weight": 40, "path": str(paths["v2b"])},
                {"version": "v2", "weight": 30},
                {"version": "v8", "weight": 30, "path": str(paths["v8"])},
            ],
            "monitor.labels": True,
            "monitor.baseline": "v2b",
            # One window for the whole run: every label of a version is judged together.
            "monitor.window_s": 3_600,
            "monitor.min_events": 100,
            "monitor.bad_windows": 1,
            "monitor.quality_interval_s": 0.5,
            "monitor.min_labels": min_labels,
            "monitor.max_recall_drop": max_recall_drop,
            "monitor.recall_confidence": confidence,
        },
    )
    create_topics(cfg)
    worker = Child(["run", "-c", str(path), "--idle-exit", "3"], tmp / "worker.log").start()
    monitor = Child(
        ["monitor", "-c", str(path), "--auto-rollback", "--log-level", "INFO"],
        tmp / "monitor.log",
    ).start()
    started = time.time()
    rollback_s = None
    timeout_s = timeout_s if timeout_s is not None else 60 + events * 0.004
    try:
        produced = produce_events(
            cfg,
            events,
            rate=rate,
            seed=seed,
            labels=True,
            label_time_scale=5e6,
            pipeline=_with_fraud_rate(fraud_rate),
        )
        if worker.wait(600) != 0:
            raise RuntimeError("worker failed:\n" + worker.log()[-3000:])
        # Every label is out; the monitor judges them within a few quality intervals.
        deadline = time.monotonic() + timeout_s
        last: dict[str, dict[str, Any]] = {}
        while time.monotonic() < deadline:
            if monitor.proc is not None and monitor.proc.poll() is not None:
                raise RuntimeError("monitor died:\n" + monitor.log()[-3000:])
            # Quality first: the verdicts of the same tick are published after it.
            labels_seen = _decode(read_all(cfg, cfg.topics.quality_topic, 0.5))
            verdicts = _decode(read_all(cfg, cfg.topics.verdicts_topic, 0.5))
            last = {
                v["version"]: v
                for v in verdicts
                if v.get("basis") == "labels" and v["verdict"] != "insufficient"
            }
            counts = [r for r in labels_seen if r.get("kind") == "labels"]
            # Every label sent is joined, and the verdicts in force were judged on all of them:
            # the monitor judges a window once its predictions are all in, so a verdict can
            # trail the last quality record by monitor.grace_s.
            joined = counts and counts[-1]["matched"] >= produced.labels
            latest = {r["version"]: r for r in labels_seen if r.get("kind") == "window"}
            if joined and all(_judged_on(last.get(v), latest, v, "v2b") for v in ("v2", "v8")):
                break
    finally:
        monitor.stop()
        worker.stop(signal.SIGKILL, 10)
    alerts = _decode(read_all(cfg, cfg.topics.alerts_topic, 1.0))
    rollbacks = [a for a in alerts if a.get("kind") == "rollback"]
    on_labels = [a["version"] for a in rollbacks if a.get("basis") == "labels"]
    if rollbacks:
        rollback_s = rollbacks[0]["ts_ms"] / 1000 - started
    quality = {
        r["version"]: r
        for r in _decode(read_all(cfg, cfg.topics.quality_topic, 1.0))
        if r.get("kind") == "window"
    }
    return CanaryResult(
        events,
        on_labels,
        [a["version"] for a in rollbacks if a.get("basis") != "labels"],
        {v: r["verdict"] for v, r in last.items()},
        {v: q["recall"] for v, q in quality.items()},
        {v: round(q["flagged"] / q["predictions"], 5) for v, q in quality.items()},
        {v: q["tp"] + q["fn"] for v, q in quality.items()},
        rollback_s,
        [r for v in last.values() for r in v["reasons"]],
        {v: q["predictions"] for v, q in quality.items()},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rate", type=float, default=8_000.0, help="events/s of the join runs")
    parser.add_argument(
        "--scenario", choices=("join", "canary", "both"), default="both", help="what to run"
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep each run's configs and worker and monitor logs (and the broker's) in this "
        "folder (default: a temporary one, removed at the end)",
    )
    parser.add_argument(
        "--monitor-log-level", default="WARNING", help="log level of the join runs' monitor"
    )
    args = parser.parse_args()
    from streaming.dev.broker import EmbeddedBroker

    failures = 0
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="labels-"))
        broker_log = Path(tmp) / "broker.log" if args.keep is not None else None
        broker = stack.enter_context(EmbeddedBroker(log_path=broker_log))
        for i in range(args.runs if args.scenario in ("join", "both") else 0):
            run_dir = Path(tmp) / f"join-{i}"
            run_dir.mkdir(exist_ok=args.keep is not None)
            r = join_run(
                broker.bootstrap,
                run_dir,
                events=args.events,
                rate=args.rate,
                seed=i,
                log_level=args.monitor_log_level,
            )
            failures += not r.equal
            print(
                f"join run {i + 1}: {r.predictions:,} predictions, {r.labels:,} labels "
                f"({r.injected}), {r.windows} windows, kill -9 mid-run: "
                f"{'EQUAL to' if r.equal else 'DIFFERENT from'} the offline join "
                f"{r.seconds_to_equal:.1f} s after the last label, {r.seconds_total:.0f} s after "
                f"the first event (>= {(r.predictions + r.labels) / r.seconds_total:,.0f} "
                f"records/s joined); unmatched {r.monitor_counts}",
                flush=True,
            )
            for line in r.diff[:10]:
                print(f"    {line}", flush=True)
        for i in range(args.runs if args.scenario in ("canary", "both") else 0):
            run_dir = Path(tmp) / f"canary-{i}"
            run_dir.mkdir(exist_ok=args.keep is not None)
            c = canary_run(broker.bootstrap, run_dir, events=args.events, rate=None, seed=20 + i)
            kept = c.last_verdicts.get("v2") == "ok"
            ok = (
                c.rolled_back == ["v8"] and not c.other_rollbacks and kept and c.flag_shares_alike()
            )
            failures += not ok
            print(
                f"canary run {i + 1}: rolled back on labels {c.rolled_back} "
                f"(other rollbacks {c.other_rollbacks}) {c.seconds_to_rollback or 0:.1f} s after "
                f"the first event; last label verdicts {c.last_verdicts}; recall {c.recall}; "
                f"flagged {c.flagged_share}; labelled frauds {c.labelled_frauds}: "
                f"{'PASS' if ok else 'FAIL'}",
                flush=True,
            )
            for reason in c.reasons:
                print(f"    {reason}", flush=True)
    print(f"{failures} failed run(s)")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
