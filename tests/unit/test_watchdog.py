"""A hung model call: the claim (exactly one party answers each row), the failed lane, and the
watchdog, on a fake clock; then a real inference thread on a model that blocks until told."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streaming.commit.ledger import OffsetTracker, PartitionLedger
from streaming.config import PipelineConfig, load_config
from streaming.dev.inprocess import InstantSink
from streaming.engine.batching import BatchPolicy
from streaming.engine.breaker import OPEN, CircuitBreaker
from streaming.engine.calls import CallWatch
from streaming.engine.dead_letters import DeadLetters
from streaming.engine.lane import Lane
from streaming.engine.outcomes import Outcomes
from streaming.engine.output_variants import PrimaryOutput, ShadowOutput
from streaming.engine.scoring import Scorer
from streaming.engine.types import Chunk
from streaming.engine.versions import ModelVersion
from streaming.engine.watchdog import Watchdog
from streaming.errors import Faults, Health
from streaming.kafka.limits import OutputLimits
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import WorkerStats

BASE = Path(__file__).resolve().parents[2] / "pipelines" / "fraud" / "pipeline.yaml"
TOPICS = ("predictions", "dead_letters")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class BlockingRuntime:
    """A model whose calls block until ``release`` is set (a hang we can end)."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.release.wait(30), "the test never released the model"
        return np.full(features.shape[0], 0.9, dtype=np.float32)


def chunk(ledger: PartitionLedger, offsets: list[int], shadow: bool = False) -> Chunk:
    if not shadow:
        ledger.register_many(offsets)
    n = len(offsets)
    return Chunk(
        features=np.ones((n, 3), dtype=np.float32),
        event_ids=[f"e{o}" for o in offsets],
        ts_ms=[0] * n,
        keys=[f"k{o}".encode() for o in offsets],
        values=[f"v{o}".encode() for o in offsets],
        headers=[None] * n,
        ledgers=[ledger] * n,
        offsets=offsets,
        enqueued=0.0,
        shadow=shadow,
    )


class Rig:
    """One version with a fake clock, an in-memory sink, a ledger and a watchdog."""

    def __init__(self, timeout_s: float = 1.0, max_queued: int | None = None) -> None:
        self.cfg: PipelineConfig = load_config(BASE)
        self.clock = Clock()
        self.sink = InstantSink(keep=True)
        self.faults, self.health, self.stats = Faults(), Health(), WorkerStats()
        self.metrics = WorkerMetrics("fraud")
        outcomes = Outcomes(self.cfg, self.stats, self.metrics, self.faults)
        self.dead_letters = DeadLetters(
            self.cfg, "w", self.sink, outcomes, OutputLimits.unlimited()
        )
        self.runtime = BlockingRuntime()
        self.version = ModelVersion(
            self.cfg.model.versions[0],
            self.runtime,  # type: ignore[arg-type]
            None,  # type: ignore[arg-type]
            Lane(BatchPolicy(max_batch_size=64, max_delay_s=0.0), max_queued),
            CircuitBreaker(5, 30.0),
            self.metrics.predictions.labels("fraud", "fraud", "v2"),
            CallWatch("v2", timeout_s, self.clock),
        )
        self.watchdog = Watchdog(
            [self.version], self.dead_letters, self.health, "fraud", self.clock
        )
        self.ledger = OffsetTracker().ledger("in", 0)
        self.scorer = Scorer(
            self.cfg,
            "w",
            self.sink,
            PrimaryOutput(
                self.cfg,
                self.sink,
                self.dead_letters,
                outcomes,
                self.metrics,
                OutputLimits.unlimited(),
            ),
            ShadowOutput(self.cfg, self.sink, OutputLimits.unlimited()),
            self.faults,
        )

    def answers(self) -> Counter[tuple[str, bytes | None]]:
        """(topic kind, value or event) of every record, to count each row's answers."""
        out: Counter[tuple[str, Any]] = Counter()
        for topic, value, headers in self.sink.records:
            if topic == self.cfg.topics.dead_letters:
                out["dead", value] += 1
                assert headers["dead_letter.stage"] == b"inference"
                assert headers["dead_letter.reason_class"] == b"timeout"
            elif topic == self.cfg.topics.predictions:
                out["pred", value] += 1
        return out


# ---------------------------------------------------------------- the claim, on a fake clock


def test_a_call_that_returns_in_time_is_the_inference_threads_however_late_the_watchdog_looks():
    clock = Clock()
    watch = CallWatch("v7", 1.0, clock)
    call = watch.begin([], primary=True)
    assert call is not None and call.generation == 1
    clock.now = 0.99
    assert watch.expire(clock.now) is None  # not yet over
    assert watch.finish(call)  # returned: the thread claims it
    clock.now = 50.0
    assert watch.expire(clock.now) is None  # nothing left to time out
    assert watch.hung is None
    assert watch.begin([], primary=True).generation == 2  # type: ignore[union-attr]


def test_a_timed_out_call_is_the_watchdogs_and_its_late_return_is_discarded():
    clock = Clock()
    watch = CallWatch("v7", 1.0, clock)
    call = watch.begin([], primary=True)
    assert call is not None
    clock.now = 1.25
    assert watch.expire(clock.now) is call  # the watchdog claims it
    assert watch.expire(clock.now + 1) is None  # once
    assert not watch.finish(call)  # the late return finds its claim gone
    assert watch.begin([], primary=True) is None  # hung for good: no further calls
    assert watch.hung is not None
    assert (watch.hung.stage, watch.hung.reason_class, watch.hung.version) == (
        "inference",
        "timeout",
        "v7",
    )
    assert "v7" in watch.hung.reason and "1.25 s" in watch.hung.reason
    assert "worker.inference_timeout_s (1 s" in watch.hung.reason


def test_only_the_current_generation_can_claim():
    watch = CallWatch("v7", 1.0, Clock())
    first = watch.begin([], primary=True)
    assert first is not None and watch.finish(first)
    second = watch.begin([], primary=True)
    assert second is not None
    assert not watch.finish(first)  # a stale claim never takes a newer call
    assert watch.finish(second)


def test_the_claim_is_exclusive_under_contention():
    """Many rounds of finish and expire racing on one call: exactly one wins each."""
    clock = Clock()
    clock.now = 0.0
    for _ in range(300):
        watch = CallWatch("v7", 0.0, clock)  # already over: expire may claim at once
        call = watch.begin([], primary=True)
        assert call is not None
        wins: list[str] = []
        barrier = threading.Barrier(2)

        def thread_side(
            w: CallWatch = watch,
            c: Any = call,
            out: list[str] = wins,
            b: threading.Barrier = barrier,
        ) -> None:
            b.wait()
            if w.finish(c):
                out.append("thread")

        t = threading.Thread(target=thread_side)
        t.start()
        barrier.wait()
        if watch.expire(clock.now) is not None:
            wins.append("watchdog")
        t.join()
        assert len(wins) == 1, wins


# ---------------------------------------------------------------- the failed lane


def test_a_failed_lane_hands_out_its_queue_and_refuses_later_puts_even_a_waiting_one():
    lane = Lane(BatchPolicy(max_batch_size=64, max_delay_s=0.0), max_queued=4)
    ledger = OffsetTracker().ledger("in", 0)
    assert lane.put(chunk(ledger, [0, 1, 2, 3]))
    result: list[bool] = []
    waiting = threading.Thread(target=lambda: result.append(lane.put(chunk(ledger, [4]))))
    waiting.start()  # the lane is full: this put waits
    waiting.join(0.2)
    assert waiting.is_alive()
    queued = lane.fail()
    waiting.join(5)
    assert result == [False]  # woken and refused: the caller answers it
    assert [c.offsets for c in queued] == [[0, 1, 2, 3]]
    assert lane.queued_rows == 0 and not lane.put(chunk(ledger, [5]), timeout=0)
    assert lane.take(timeout=0) == []


# ---------------------------------------------------------------- the watchdog, fake clock


def test_the_watchdog_answers_the_hung_call_and_the_queue_once_opens_the_breaker_for_good():
    rig = Rig(timeout_s=1.0)
    v = rig.version
    in_progress = [chunk(rig.ledger, [0, 1, 2])]
    call = v.watch.begin(in_progress, primary=True)  # as the inference thread would
    assert call is not None
    v.lane.put(chunk(rig.ledger, [3, 4]))
    v.lane.put(chunk(rig.ledger, [0], shadow=True))  # a shadow copy: nobody answers it
    rig.clock.now = 0.5
    assert rig.watchdog.check() == [] and rig.health.ok and not rig.sink.records
    assert rig.ledger.advance() is None  # nothing is committed while the call runs
    rig.clock.now = 1.5
    assert rig.watchdog.check() == ["v2"]
    answers = rig.answers()
    assert answers == Counter({("dead", f"v{o}".encode()): 1 for o in range(5)})
    assert rig.ledger.advance() == 5  # the dead letters are acked: commits move on
    assert v.breaker.state == OPEN and not v.breaker.allow()
    rig.clock.now = 1_000.0  # long past any cooldown: still open
    assert v.breaker.state == OPEN
    assert not rig.health.ok and "fraud/v2 hung" in rig.health.reasons[0]
    assert not rig.faults  # not fatal: the worker goes on
    assert not v.lane.put(chunk(rig.ledger, [5]))  # later rows: refused to the feeder
    assert rig.watchdog.check() == []  # once
    assert rig.stats.dead_letters["inference"] == 5


def test_a_hung_shadow_call_hangs_the_version_but_answers_no_shadow_row():
    rig = Rig(timeout_s=1.0)
    v = rig.version
    call = v.watch.begin([chunk(rig.ledger, [0, 1], shadow=True)], primary=False)
    assert call is not None
    v.lane.put(chunk(rig.ledger, [7]))
    rig.clock.now = 2.0
    assert rig.watchdog.check() == ["v2"]
    assert rig.answers() == Counter({("dead", b"v7"): 1})


# ---------------------------------------------------------------- a real inference thread


@pytest.mark.timeout(60)
def test_a_hung_call_that_returns_late_publishes_nothing_and_every_row_is_answered_once():
    rig = Rig(timeout_s=1.0)
    v = rig.version
    thread = threading.Thread(target=rig.scorer.run, args=(v,), daemon=True)
    thread.start()
    assert v.lane.put(chunk(rig.ledger, [0, 1, 2]))
    assert rig.runtime.entered.wait(10)  # the thread is inside the model now
    v.lane.put(chunk(rig.ledger, [3]))  # queued behind it
    rig.clock.now = 5.0
    assert rig.watchdog.check() == ["v2"]
    rig.runtime.release.set()  # the hung call returns, late
    v.lane.close()
    thread.join(10)
    assert not thread.is_alive()
    answers = rig.answers()
    assert answers == Counter({("dead", f"v{o}".encode()): 1 for o in range(4)}), answers
    assert not any(kind == "pred" for kind, _ in answers)  # the late scores were discarded
    assert rig.ledger.advance() == 4


@pytest.mark.timeout(60)
def test_a_call_that_returns_in_time_publishes_and_the_watchdog_stays_quiet():
    rig = Rig(timeout_s=1.0)
    v = rig.version
    rig.runtime.release.set()
    thread = threading.Thread(target=rig.scorer.run, args=(v,), daemon=True)
    thread.start()
    assert v.lane.put(chunk(rig.ledger, [0, 1]))
    v.lane.close()
    thread.join(10)
    rig.clock.now = 100.0
    assert rig.watchdog.check() == [] and rig.health.ok
    assert sum(1 for t, *_ in rig.sink.records if t == rig.cfg.topics.predictions) == 2
    assert rig.ledger.advance() == 2


def test_an_idle_inference_thread_sleeps_until_a_put_wakes_it_not_on_a_timer() -> None:
    rig = Rig()
    rig.runtime.release.set()
    lane = rig.version.lane
    takes: list[float] = []
    real_take = lane.take

    def counting_take(timeout: float = 0.1) -> list[Chunk] | None:
        takes.append(timeout)
        return real_take(timeout)

    lane.take = counting_take  # type: ignore[method-assign]
    thread = threading.Thread(target=rig.scorer.run, args=(rig.version,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not takes and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)
    assert len(takes) == 1, takes  # asleep, not waking every 100 ms to look
    assert lane.put(chunk(rig.ledger, [0, 1]))
    while rig.stats.predictions < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert rig.stats.predictions == 2  # the put woke it
    # something to report now: it wakes when the version's telemetry is due, no later
    assert len(takes) >= 2 and takes[-1] <= rig.cfg.worker.telemetry_interval_s
    lane.close()
    thread.join(10)
    assert not thread.is_alive()
