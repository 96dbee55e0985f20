"""The parts every scenario uses: run-unique topics, a rate-limited producer that remembers
when each event was sent, a reader that notes when each output arrived (matched by event id),
and worker processes.

End-to-end latency here is the user's view: from the producer's send of an event to the
arrival of its prediction at a reader of the predictions topic, per event.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, Producer, TopicPartition

from streaming.config import PipelineConfig
from streaming.kafka import settings as kafka
from streaming.kafka.sink import produce_when_room
from streaming.kafka.topics import create_topics
from streaming.pipeline import load_pipeline


class LoadTestError(RuntimeError):
    """The load test cannot run; the message says what to fix."""


_GROUP_SUFFIX = "-workers"


def prepare(cfg: PipelineConfig, workdir: Path, tag: str) -> tuple[PipelineConfig, Path]:
    """A copy of the pipeline with topics and group of its own (nothing of earlier runs is
    read), its topics created, and the config file the workers are started with."""
    run = f"loadtest-{tag}-{uuid.uuid4().hex[:6]}"
    t = cfg.topics
    changes = {
        "kafka.group": f"{run}{_GROUP_SUFFIX}",
        "topics.input": f"{run}.{t.input}",
        "topics.predictions": f"{run}.{t.predictions}",
        "topics.dead_letters": f"{run}.{t.dead_letters}",
        "topics.telemetry": f"{run}.{t.telemetry}",
        "topics.control": f"{run}.{t.control}",
        "topics.shadow": None,
        "topics.verdicts": None,
        "topics.alerts": None,
        "models_dir": str(Path(cfg.models_dir).resolve()),
    }
    run_cfg = cfg.with_overrides(**changes)
    try:
        create_topics(run_cfg)
    except RuntimeError as exc:
        raise LoadTestError(
            f"{exc}. The load test creates topics of its own (prefix {run}); it needs a "
            "reachable cluster and the right to create topics"
        ) from None
    path = workdir / f"{run}.yaml"
    path.write_text(yaml.safe_dump(run_cfg.model_dump(mode="json")))
    return run_cfg, path


@dataclass
class Ledger:
    """Send and arrival times (seconds, wall clock) per event id."""

    sent: dict[str, float] = field(default_factory=dict)
    arrived: dict[str, float] = field(default_factory=dict)
    produced: dict[str, float] = field(default_factory=dict)
    """When each event's first output was produced: its record's timestamp (CreateTime, which
    the worker's producer sets at produce, or the broker's LogAppendTime if the topic says
    so). What a drain read after the fact is timed by."""
    duplicates: int = 0
    by_value: dict[bytes, str] = field(default_factory=dict)
    """Invalid events' bytes -> id (dead letters carry the original bytes, not an id)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latencies_ms(self, since: float = 0.0, until: float = float("inf")) -> np.ndarray:
        """Per matched event sent in [since, until): arrival minus send."""
        with self.lock:
            pairs = [
                (s, self.arrived[e])
                for e, s in self.sent.items()
                if since <= s < until and e in self.arrived
            ]
        if not pairs:
            return np.empty(0)
        arr = np.asarray(pairs)
        return (arr[:, 1] - arr[:, 0]) * 1000.0

    def unmatched(self) -> int:
        with self.lock:
            return sum(1 for e in self.sent if e not in self.arrived)


class Sender:
    """Sends generated events at a rate (or as fast as possible), noting each send time."""

    def __init__(self, cfg: PipelineConfig, ledger: Ledger, seed: int, invalid_ratio: float):
        self.cfg = cfg
        self.ledger = ledger
        self.generator = load_pipeline(cfg.pipeline.module).make_generator(seed)
        self.invalid_ratio = invalid_ratio
        self.producer = Producer(
            {
                **kafka.producer_settings(cfg.kafka, "loadtest-sender"),
                "linger.ms": 5,
                "batch.num.messages": 10_000,
            }
        )
        self.sent = 0
        self.failed = 0

    def _failed(self, err: object, _msg: object) -> None:
        if err is not None:
            self.failed += 1

    def send(self, n: int, rate: float | None, stop: threading.Event | None = None) -> float:
        """Send ``n`` events at ``rate``/s (None: at once); return the seconds it took."""
        started = time.monotonic()
        chunk = 200 if rate is None else max(1, min(200, int(rate / 100)))
        done = 0
        topic = self.cfg.topics.input

        def poll() -> None:
            self.producer.poll(0.01)

        while done < n and not (stop is not None and stop.is_set()):
            size = min(chunk, n - done)
            now = time.time()
            events = self.generator.batch(size, int(now * 1000), self.invalid_ratio)
            with self.ledger.lock:
                for e in events:
                    self.ledger.sent[e.event_id] = time.time()
                    if e.invalid_kind is not None:
                        self.ledger.by_value[e.value] = e.event_id
            for e in events:
                produce_when_room(self.producer, topic, e.value, e.key, None, self._failed, poll)
            self.producer.poll(0)
            done += size
            self.sent += size
            if rate is not None:
                ahead = started + done / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        self.producer.flush(30)
        return time.monotonic() - started


class Reader(threading.Thread):
    """Reads predictions and dead letters, noting the first arrival of each event's output."""

    def __init__(self, cfg: PipelineConfig, ledger: Ledger) -> None:
        super().__init__(name="loadtest-reader", daemon=True)
        self.ledger = ledger
        self.cfg = cfg
        self.consumer = Consumer(
            kafka.reader_settings(
                cfg.kafka,
                f"loadtest-reader-{uuid.uuid4().hex[:6]}",
                # latency is measured here: a short wait (README, Latency and the embedded broker)
                **{"fetch.wait.max.ms": 10},
            )
        )
        self.consumer.subscribe(
            [cfg.topics.predictions, cfg.topics.dead_letters, cfg.topics.telemetry]
        )
        self.telemetry: list[dict] = []
        self.stop = threading.Event()
        self.outputs = 0
        self.ready = threading.Event()

    def run(self) -> None:
        predictions, telemetry = self.cfg.topics.predictions, self.cfg.topics.telemetry
        ledger = self.ledger
        try:
            while not self.stop.is_set():
                msgs = self.consumer.consume(num_messages=5000, timeout=0.05)
                if self.consumer.assignment():
                    self.ready.set()
                now = time.time()
                ids = []
                stamps = []
                for m in msgs:
                    if m.error():
                        continue
                    if m.topic() == telemetry:
                        with contextlib.suppress(ValueError, TypeError):
                            self.telemetry.append(json.loads(m.value()))
                        continue
                    if m.topic() == predictions:
                        try:
                            ids.append(json.loads(m.value())["event_id"])
                        except (ValueError, KeyError, TypeError):
                            continue
                    else:
                        with ledger.lock:
                            event_id = ledger.by_value.get(m.value() or b"")
                        if event_id is None:
                            try:
                                event_id = json.loads(m.value())["event_id"]
                            except (ValueError, KeyError, TypeError):
                                continue
                        ids.append(event_id)
                    kind, ms = m.timestamp()
                    stamps.append(None if kind == TIMESTAMP_NOT_AVAILABLE else ms / 1000.0)
                with ledger.lock:
                    for event_id, stamp in zip(ids, stamps, strict=True):
                        if event_id in ledger.arrived:
                            ledger.duplicates += 1
                        else:
                            ledger.arrived[event_id] = now
                            if stamp is not None:
                                ledger.produced[event_id] = stamp
                self.outputs += len(ids)
        finally:
            self.consumer.close()

    def wait_matched(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.ledger.lock:
                if len(self.ledger.arrived) >= n:
                    return True
            time.sleep(0.05)
        return False


def remove_run_topics(cfg: PipelineConfig) -> None:
    """Delete the topics ``prepare`` made for this run (every name under its prefix): a
    benchmark of many runs would otherwise leave each run's events in the broker, and the
    embedded broker, which keeps everything in memory, spent 9 us of CPU per event on its
    first drain and 19 on its tenth. A cluster that refuses is told about, not fatal."""
    prefix = cfg.kafka.group.removesuffix(_GROUP_SUFFIX) + "."
    admin = kafka.admin_client(kafka.admin_settings(cfg.kafka))
    try:
        names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
        for future in admin.delete_topics(names, operation_timeout=10).values():
            future.result()
    except Exception as exc:  # noqa: BLE001 - left topics cost space, never the result
        print(f"could not delete this run's topics ({prefix}*): {exc}", file=sys.stderr)


def output_span(produced: list[float], assigned: float) -> tuple[float, float]:
    """A drain's first and last output times (``produced``, not empty). When every output
    came within 50 ms (a short backlog) first to last is no measure, so the first is the
    workers' assignment instead: a lower bound on the rate (it was 4,000,000,000 ev/s in the
    short suite run)."""
    first, last = min(produced), max(produced)
    if last - first < 0.05:
        first = assigned
    return first, last


class CommitPoint:
    """How many input events a worker group is done with, read without joining the group:
    its committed offsets summed over the input's partitions. On topics of a run's own
    (offsets from 0) that is a count, and the worker commits an offset only once the event's
    outputs are acknowledged, so it counts events whose outputs are durable."""

    def __init__(self, cfg: PipelineConfig) -> None:
        # a consumer of the workers' group that never subscribes: it asks, it never joins
        self._consumer = Consumer(kafka.reader_settings(cfg.kafka, cfg.kafka.group))
        self._partitions = [
            TopicPartition(cfg.topics.input, p) for p in range(cfg.topics.partitions)
        ]

    def events(self) -> int:
        got = self._consumer.committed(self._partitions, timeout=10)
        return sum(tp.offset for tp in got if tp.offset >= 0)

    def close(self) -> None:
        self._consumer.close()


def wait_drained(
    cfg: PipelineConfig,
    workers: list[WorkerProc],
    events: int,
    timeout: float,
    by_exit: bool,
    progress: Callable[[str], None] = lambda _text: None,
) -> bool:
    """Until ``workers`` are done with ``events`` input events, reading none of their outputs
    meanwhile (a reader beside a drain takes the CPU being measured): a baseline that exits
    when done (``by_exit``) by its exit, workers by their group's commit point. False on
    timeout, or when a worker exits first."""
    deadline = time.monotonic() + timeout
    said = time.monotonic()
    point = None if by_exit else CommitPoint(cfg)
    try:
        while time.monotonic() < deadline:
            if point is None:
                if all(w.exited() for w in workers):
                    return True
            else:
                done = point.events()
                if done >= events:
                    return True
                if any(w.exited() for w in workers):
                    return False
                if time.monotonic() - said >= 5.0:
                    progress(f"{done:,} of {events:,} events done (the group's commits)")
                    said = time.monotonic()
            time.sleep(0.1)
        return False
    finally:
        if point is not None:
            point.close()


def _assigned_members(log: str) -> int:
    """Distinct workers that logged an assignment (a line that is not JSON counts as one)."""
    workers: set[object] = set()
    for line in log.splitlines():
        if '"assigned' in line:
            try:
                workers.add(json.loads(line).get("worker"))
            except (ValueError, AttributeError):
                workers.add(None)
    return len(workers)


class WorkerProc:
    """``streaming run`` as a child process, with its RSS readable from /proc.

    ``command`` runs another consumer in its place (the passthrough baseline): anything that
    takes ``-c CONFIG`` and logs a line with ``"assigned`` once it has partitions.
    """

    def __init__(
        self,
        config: Path,
        workdir: Path,
        index: int,
        extra: tuple[str, ...] = (),
        command: tuple[str, ...] = ("-m", "streaming", "run"),
    ):
        self.log_path = workdir / f"worker-{index}-{uuid.uuid4().hex[:4]}.log"
        self._log = self.log_path.open("w")
        # The run's config already names the cluster (--embedded, --bootstrap or the env);
        # an inherited STREAMING_BOOTSTRAP would override it and point the worker elsewhere.
        env = {k: v for k, v in os.environ.items() if k != "STREAMING_BOOTSTRAP"}
        self.proc = subprocess.Popen(
            [sys.executable, *command, "-c", str(config), *extra],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**env, "PYTHONUNBUFFERED": "1", "STREAMING_WORKER_ID": f"lt-{index}"},
        )

    def wait_assigned(self, timeout: float = 90.0, members: int = 1) -> None:
        """Until ``members`` distinct workers logged an assignment (a pool of N: N children)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _assigned_members(self.log_path.read_text(errors="replace")) >= members:
                return
            if self.proc.poll() is not None:
                raise LoadTestError(
                    f"a worker exited with {self.proc.returncode} at start; its log: "
                    f"{self.log_path}\n{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.1)
        raise LoadTestError(f"a worker got no partitions within {timeout:.0f} s: {self.log_path}")

    def exited(self) -> bool:
        return self.proc.poll() is not None

    def rss_mb(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def stop(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode or 0)
