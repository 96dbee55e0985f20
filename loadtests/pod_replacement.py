"""How long read_committed readers stall when an exactly-once worker's pod is replaced.

    python -m loadtests.pod_replacement [--events 20000] [--rate 2000] [--runs 1] [--max-wait 60]

Each run takes both cases, each on its own topics of one embedded broker. A worker
(``delivery: exactly-once``, worker id A) scores events produced at ``--rate``; a third of the
way in it is killed with SIGKILL, its last transaction left open, and a replacement starts at
once:

* ``same id``: the replacement runs as A again, as a restarted container or a StatefulSet's
  pod does; its ``init_transactions`` aborts the open transaction (fences it);
* ``new id``: the replacement runs as B, as a Deployment's rescheduled pod does; the open
  transaction stays until the broker's ``transaction.timeout.ms`` (Apache Kafka aborts it
  then, within its abort-check interval, 10 s by default).

Two readers follow the predictions topic from the start, one read_uncommitted and one
read_committed, and note when each event id first reaches each. The stall is how much later
the read_committed reader had every event than the read_uncommitted one: by then every output
was written, and only an open transaction held it back. A reader still missing events
``--max-wait`` s later is reported as stalled, with how many of the events it had.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from loadtests.scratch_config import write_scratch_config
from streaming.config import PipelineConfig, load_config
from streaming.dev.produce import ProduceResult, produce_events
from streaming.kafka import settings as kafka
from streaming.kafka.topics import create_topics

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "pipelines" / "fraud" / "pipeline.yaml"
FENCED = "transactions initialised"
"""The worker's log line once init_transactions returned (streaming/commit/committer.py)."""


class VisibilityWatch:
    """A reader of a topic from its start, on its own thread, that notes when each event id
    first arrived (monotonic seconds). The thread owns the consumer and is the only writer of
    ``first_seen``; other threads read it (a dict's item assignment is atomic)."""

    def __init__(self, cfg: PipelineConfig, topic: str, isolation: str) -> None:
        self.isolation = isolation
        self.first_seen: dict[str, float] = {}
        self._stop = threading.Event()
        # A long fetch wait: the embedded broker walks a partition's batches on every fetch
        # and returns nothing when a short wait runs out (README, Latency and the embedded
        # broker); latency to the half second is enough here.
        self._consumer = Consumer(
            kafka.reader_settings(
                cfg.kafka, f"watch-{uuid.uuid4().hex[:8]}", **{"isolation.level": isolation}
            )
        )
        meta = self._consumer.list_topics(topic, timeout=10)
        parts = meta.topics[topic].partitions
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self._thread = threading.Thread(target=self._run, name=f"watch-{isolation}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for m in self._consumer.consume(num_messages=5000, timeout=0.2):
                    if m.error() is None:
                        event_id = json.loads(m.value())["event_id"]
                        self.first_seen.setdefault(event_id, time.monotonic())
        finally:
            self._consumer.close()

    def seen(self, ids: set[str]) -> int:
        return len(ids & self.first_seen.keys())

    def all_at(self, ids: set[str]) -> float | None:
        """When the last of ``ids`` arrived, or None while some are missing."""
        if not ids <= self.first_seen.keys():
            return None
        return max(self.first_seen[i] for i in ids)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


@dataclass
class ReplacementResult:
    same_id: bool
    events: int
    transaction_timeout_ms: int
    fenced_s: float | None
    """From the kill to the replacement's transactions initialised (the killed worker's
    transaction aborted, if it had the same id)."""
    assigned_s: float | None
    """From the kill to the replacement's first assignment."""
    written_s: float
    """From the kill to the read_uncommitted reader having every event."""
    visible: int
    """Events the read_committed reader had at the end."""
    stall_s: float | None
    """How much later the read_committed reader had every event; None: still missing some
    ``waited_s`` after they were all written."""
    waited_s: float


def write_config(bootstrap: str, tmp: Path, **overrides: Any) -> tuple[Path, PipelineConfig]:
    """The fraud pipeline, exactly-once, with its own topics and group."""
    overrides.setdefault("delivery", "exactly-once")
    path = write_scratch_config(tmp, bootstrap, prefix="r", group="replace", **overrides)
    return path, load_config(path)


def _start_worker(path: Path, log_path: Path, worker_id: str, *args: str) -> subprocess.Popen[str]:
    with log_path.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streaming", "run", "-c", str(path), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "STREAMING_WORKER_ID": worker_id},
        )


def _wait_for(what: str, done: Any, timeout: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{what} not within {timeout} s; worker log:\n{tail}")
        time.sleep(0.05)


def replacement_run(
    bootstrap: str,
    tmp: Path,
    *,
    same_id: bool,
    events: int = 20_000,
    rate: float = 2_000.0,
    seed: int = 1,
    max_wait_s: float = 60.0,
) -> ReplacementResult:
    """One case (see the module docstring)."""
    path, cfg = write_config(bootstrap, tmp)
    create_topics(cfg)
    first_id = f"pod-{uuid.uuid4().hex[:6]}"
    logs = tmp / f"first-{first_id}.log", tmp / f"replacement-{first_id}.log"
    first = _start_worker(path, logs[0], first_id)
    replacement: subprocess.Popen[str] | None = None
    uncommitted = VisibilityWatch(cfg, cfg.topics.predictions, "read_uncommitted")
    committed = VisibilityWatch(cfg, cfg.topics.predictions, "read_committed")
    produced: list[ProduceResult] = []
    try:
        _wait_for(
            "the first worker's assignment", lambda: "assigned" in logs[0].read_text(), 90, logs[0]
        )
        producer = threading.Thread(
            target=lambda: produced.append(
                produce_events(cfg, events, rate=rate, seed=seed, keep=True)
            )
        )
        producer.start()
        _wait_for(
            "a third of the predictions",
            lambda: len(uncommitted.first_seen) >= events // 3,
            120,
            logs[0],
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        killed = time.monotonic()
        replacement_id = first_id if same_id else f"pod-{uuid.uuid4().hex[:6]}"
        replacement = _start_worker(path, logs[1], replacement_id, "--idle-exit", "5")
        marks: dict[str, float] = {}

        def note_marks() -> None:
            text = logs[1].read_text(errors="replace")
            for mark, needle in (("fenced", FENCED), ("assigned", "assigned")):
                if mark not in marks and needle in text:
                    marks[mark] = time.monotonic()

        deadline = time.monotonic() + events / rate * 3 + 60
        while producer.is_alive() and time.monotonic() < deadline:
            note_marks()  # the log is read every 50 ms: the marks are that precise
            time.sleep(0.05)
        ids = {e.event_id for e in produced[0].events}
        deadline = time.monotonic() + 180
        while uncommitted.all_at(ids) is None:
            note_marks()
            if time.monotonic() > deadline or replacement.poll() not in (None, 0):
                raise RuntimeError(
                    "the replacement did not score every event:\n"
                    + logs[1].read_text(errors="replace")[-3000:]
                )
            time.sleep(0.05)
        written = uncommitted.all_at(ids)
        assert written is not None
        while committed.all_at(ids) is None and time.monotonic() - written < max_wait_s:
            note_marks()
            time.sleep(0.1)
        visible_at = committed.all_at(ids)
        waited = time.monotonic() - written
        note_marks()
        return ReplacementResult(
            same_id=same_id,
            events=len(ids),
            transaction_timeout_ms=kafka.transaction_timeout_ms(cfg),
            fenced_s=marks["fenced"] - killed if "fenced" in marks else None,
            assigned_s=marks["assigned"] - killed if "assigned" in marks else None,
            written_s=written - killed,
            visible=committed.seen(ids),
            stall_s=None if visible_at is None else max(visible_at - written, 0.0),
            waited_s=waited,
        )
    finally:
        uncommitted.stop()
        committed.stop()
        for proc in (first, replacement):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)


def describe(r: ReplacementResult) -> str:
    case = "same id" if r.same_id else "new id "
    head = (
        f"{case}: replacement's transactions initialised {r.fenced_s or 0:.1f} s and "
        f"partitions assigned {r.assigned_s or 0:.1f} s after the kill, every "
        f"event written {r.written_s:.1f} s after it; read_committed "
    )
    if r.stall_s is not None:
        return head + f"had every event {r.stall_s:.1f} s later ({r.visible:,} of {r.events:,})"
    return head + (
        f"STALLED: {r.visible:,} of {r.events:,} events visible {r.waited_s:.0f} s later "
        f"(transaction.timeout.ms {r.transaction_timeout_ms:,})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2_000.0, help="events/s produced")
    parser.add_argument("--runs", type=int, default=1, help="each run takes both cases")
    parser.add_argument(
        "--max-wait",
        type=float,
        default=60.0,
        help="seconds to wait for the read_committed reader after every event was written",
    )
    args = parser.parse_args()
    from streaming.dev.broker import EmbeddedBroker

    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="replace-") as tmp:
        for i in range(args.runs):
            for same_id in (True, False):
                r = replacement_run(
                    broker.bootstrap,
                    Path(tmp),
                    same_id=same_id,
                    events=args.events,
                    rate=args.rate,
                    seed=i + 1,
                    max_wait_s=args.max_wait,
                )
                print(f"run {i + 1} {describe(r)}", flush=True)


if __name__ == "__main__":
    main()
