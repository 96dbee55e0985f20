"""Shared helpers of the integration tests: configs per test, the worker as a subprocess,
reading a topic back. Everything talks to the real embedded broker."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from loadtests.scratch_config import write_scratch_config
from streaming.config import PipelineConfig, load_config
from streaming.dev.produce import ProduceResult, produce_events
from streaming.kafka.settings import reader_settings

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "pipelines" / "fraud" / "pipeline.yaml"


def write_config(tmp_path: Path, bootstrap: str, **overrides: Any) -> tuple[Path, PipelineConfig]:
    """The fraud pipeline with unique topics and group for one test; dotted-key overrides."""
    path = write_raw_config(tmp_path, bootstrap, **overrides)
    return path, load_config(path)


def write_raw_config(tmp_path: Path, bootstrap: str, **overrides: Any) -> Path:
    """Like write_config, without validating (for tests of bad configs)."""
    return write_scratch_config(tmp_path, bootstrap, **overrides)


@dataclass
class WorkerProcess:
    proc: subprocess.Popen[str]
    log_path: Path

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{needle!r} not in the worker's log after {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def log_records(worker: WorkerProcess) -> list[dict[str, Any]]:
    """The worker's JSON log lines (librdkafka's own lines and anything else are skipped)."""
    out = []
    for line in worker.log().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and "msg" in record:
                out.append(record)
    return out


def _assignment(worker: WorkerProcess) -> set[str]:
    """The partitions of the worker's latest assignment (empty after a revoke)."""
    held: set[str] = set()
    for record in log_records(worker):
        if record["msg"].startswith("assigned "):
            held = set(json.loads(record["msg"].removeprefix("assigned ")))
        elif record["msg"].startswith(("revoked ", "lost ")):
            held = set()
    return held


def wait_for_split(workers: list[WorkerProcess], partitions: int, timeout: float = 60) -> None:
    """Block until the group's rebalance has settled: every worker holds partitions, none
    twice, all of them held (read from the workers' own logs, not a sleep)."""
    deadline = time.monotonic() + timeout
    held: list[set[str]] = []
    while time.monotonic() < deadline:
        held = [_assignment(w) for w in workers]
        if all(held) and sum(map(len, held)) == len(set().union(*held)) == partitions:
            return
        time.sleep(0.1)
    raise AssertionError(f"no settled split of {partitions} partitions: {held}")


def start_worker(config: Path, tmp_path: Path, *args: str) -> WorkerProcess:
    """``streaming run`` in a child process, its log in a file."""
    log_path = tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streaming", "run", "-c", str(config), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return WorkerProcess(proc, log_path)


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    headers: dict[str, bytes]
    partition: int
    offset: int


def read_topic(
    cfg: PipelineConfig,
    topic: str,
    expected: int,
    timeout: float = 60.0,
    settle: float = 1.5,
    isolation: str = "read_uncommitted",
    done: Callable[[list[Record]], bool] | None = None,
) -> list[Record]:
    """Read a topic from the start until ``expected`` records came, ``done`` (if given) says
    the records read are complete (counting alone ends early when duplicates make up the count
    while a worker still scores the tail), and nothing more came for ``settle`` seconds (so
    duplicates beyond ``expected`` are seen too)."""
    consumer = Consumer(
        reader_settings(
            cfg.kafka, f"reader-{uuid.uuid4().hex[:8]}", **{"isolation.level": isolation}
        )
    )
    consumer.subscribe([topic])
    out: list[Record] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batch = consumer.consume(num_messages=5000, timeout=0.5)
            for msg in batch:
                if msg.error():
                    continue
                out.append(
                    Record(
                        msg.key(),
                        msg.value() or b"",
                        dict(msg.headers() or []),
                        msg.partition() or 0,
                        msg.offset() or 0,
                    )
                )
            if batch:
                last_new = time.monotonic()
            elif (
                len(out) >= expected
                and time.monotonic() - last_new >= settle
                and (done is None or done(out))
            ):
                break
    finally:
        consumer.close()
    return out


def produce_in_background(
    cfg: PipelineConfig, n: int, rate: float, seed: int, invalid_ratio: float = 0.02
) -> tuple[threading.Thread, list[ProduceResult]]:
    """Generated events at ``rate`` on a thread; the result (with the events) lands in the
    list when it is done."""
    out: list[ProduceResult] = []
    thread = threading.Thread(
        target=lambda: out.append(
            produce_events(cfg, n, rate=rate, invalid_ratio=invalid_ratio, seed=seed, keep=True)
        )
    )
    thread.start()
    return thread, out


def wait_for_records(cfg: PipelineConfig, topic: str, at_least: int, timeout: float = 60.0) -> int:
    """Block until ``topic`` holds at least ``at_least`` records (e.g. a worker is mid-stream)."""
    consumer = Consumer(
        reader_settings(cfg.kafka, f"probe-{uuid.uuid4().hex[:8]}", **{"fetch.wait.max.ms": 100})
    )
    consumer.subscribe([topic])
    seen = 0
    deadline = time.monotonic() + timeout
    try:
        while seen < at_least:
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic}: only {seen} records after {timeout} s")
            seen += sum(
                1 for m in consumer.consume(num_messages=5000, timeout=0.2) if not m.error()
            )
    finally:
        consumer.close()
    return seen
