"""Small chunks scored on the feeding thread (worker.inline_max_rows), with the real fraud
pipeline and ONNX model in process: which thread scored what, every event once and in order,
and telemetry still sent when the inference thread itself scored nothing."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from streaming.config import PipelineConfig, load_config
from streaming.dev.inprocess import InMemoryMessage, InstantSink
from streaming.engine.engine import Engine
from streaming.engine.inline import inline_scoring_allowed
from streaming.pipeline import load_pipeline

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "pipelines" / "fraud" / "pipeline.yaml"


@pytest.fixture(scope="module")
def models_built() -> None:
    assert (ROOT / "models" / "fraud" / "v1" / "metadata.json").exists(), "run `make models`"


def _messages(cfg: PipelineConfig, n: int) -> list[InMemoryMessage]:
    events = load_pipeline(cfg.pipeline.module).make_generator(5).batch(n, int(time.time() * 1000))
    return [InMemoryMessage(e.value, b"card-%d" % (i % 7), i) for i, e in enumerate(events)]


class _Run:
    """An engine whose scoring calls note the thread that made them."""

    def __init__(self, cfg: PipelineConfig) -> None:
        self.sink = InstantSink(keep=True)
        self.engine = Engine(cfg, self.sink)
        self.rows_by_thread: Counter[str] = Counter()
        scorer = self.engine._scorer
        score_batch = scorer._score_batch

        def noted(version: Any, chunks: list[Any]) -> None:
            name = threading.current_thread().name
            self.rows_by_thread[name] += sum(len(c) for c in chunks)
            score_batch(version, chunks)

        scorer._score_batch = noted  # type: ignore[method-assign]
        self.engine.start()

    def feed(self, msgs: list[InMemoryMessage], size: int, gap_s: float = 0.0) -> None:
        for i in range(0, len(msgs), size):
            time.sleep(gap_s)  # a poll that waited for its events (a low rate), or none
            self.engine.submit(msgs[i : i + size])
        assert self.engine.offsets.wait_drained(60)

    def outputs(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(v) for t, v, _h in self.sink.records if t == topic and v is not None]


def test_small_chunks_are_scored_by_the_feeding_thread_and_large_ones_by_the_lane(
    models_built,
) -> None:
    cfg = load_config(BASE)
    assert inline_scoring_allowed(cfg) and cfg.worker.inline_max_rows == 64
    run = _Run(cfg)
    try:
        msgs = _messages(cfg, 500)
        run.feed(msgs[:100], 5, gap_s=0.003)  # a low rate's polls: a few events each
        assert dict(run.rows_by_thread) == {threading.current_thread().name: 100}
        run.feed(msgs[100:300], 200, gap_s=0.003)  # large chunks go through the lane
        assert run.rows_by_thread["infer-v2"] == 200
        # small chunks back to back (a drain whose fetch came short) take the lane too; the
        # policy's clock stopped, so that no GIL switch or busy core puts a gap between them
        run.engine._inline.clock = lambda: 0.0
        run.feed(msgs[300:], 5)
        assert run.rows_by_thread["infer-v2"] == 400
        assert sum(run.rows_by_thread.values()) == 500
        preds = run.outputs(cfg.topics.predictions)
    finally:
        run.engine.close()
    ids = [p["event_id"] for p in preds]
    sent = [json.loads(m.value())["event_id"] for m in msgs]  # type: ignore[arg-type]
    assert Counter(ids) == Counter(sent)  # each once
    assert ids == sent  # and in order (one key's events share one order with all the others)


def test_a_small_fetch_polled_in_parts_back_to_back_is_scored_by_the_feeding_thread(
    models_built,
) -> None:
    """At a low rate librdkafka often hands one fetch over as a few polls, a partition's part
    each, one right after the other: still a burst of a few events, scored inline; a burst
    that grows past inline_max_rows goes to the lane from the chunk that takes it past."""
    # telemetry not due within the test: the inference thread stays asleep, its turn free
    cfg = load_config(BASE).with_overrides(**{"worker.telemetry_interval_s": 600})
    run = _Run(cfg)
    feeder = threading.current_thread().name
    try:
        msgs = _messages(cfg, 205)
        run.feed(msgs[:5], 5, gap_s=0.003)  # the interval's first score wakes the inference
        time.sleep(0.2)  # thread (to time its telemetry): let it fall asleep again
        now = [0.0]
        run.engine._inline.clock = lambda: now[0]  # back to back: no time passes in a burst
        for start in range(5, 85, 20):  # four fetches of 20 events, in four polls of 5
            now[0] += 0.010  # the feeding thread waited 10 ms for this fetch
            run.feed(msgs[start : start + 20], 5)
        assert dict(run.rows_by_thread) == {feeder: 85}
        now[0] += 0.010
        run.feed(msgs[85:], 30)  # one fetch of 120 in four polls of 30
        assert run.rows_by_thread[feeder] == 85 + 60  # bursts of 30 and 60: inline
        assert run.rows_by_thread["infer-v2"] == 60  # 90 and 120: past 64, the lane
        preds = run.outputs(cfg.topics.predictions)
    finally:
        run.engine.close()
    ids = [p["event_id"] for p in preds]
    assert ids == [json.loads(m.value())["event_id"] for m in msgs]  # type: ignore[arg-type]


def test_telemetry_is_sent_when_only_the_feeding_thread_scored(models_built) -> None:
    cfg = load_config(BASE).with_overrides(**{"worker.telemetry_interval_s": 0.2})
    run = _Run(cfg)
    try:
        run.feed(_messages(cfg, 3), 3, gap_s=0.003)
        assert dict(run.rows_by_thread) == {threading.current_thread().name: 3}
        # the inference thread was asleep with nothing to report (it sleeps up to 5 s then);
        # the feeding thread's score woke it, so it sends the interval when it is due
        deadline = time.monotonic() + 3.0
        while not run.outputs(cfg.topics.telemetry) and time.monotonic() < deadline:
            time.sleep(0.05)
        telemetry = run.outputs(cfg.topics.telemetry)
    finally:
        run.engine.close()
    assert telemetry, "no telemetry within 3 s of an inline score (interval 0.2 s)"
    assert sum(t["events"] for t in telemetry) == 3


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"worker.inline_max_rows": 0}, "turned off"),
        (
            {
                "model.versions": [
                    {"version": "v2", "weight": 50},
                    {"version": "v1", "weight": 50},
                ]
            },
            "two versions: a hang on the feeding thread would stop both",
        ),
    ],
)
def test_no_inline_scoring_where_it_is_not_allowed(models_built, overrides, why) -> None:
    cfg = load_config(BASE).with_overrides(**overrides)
    assert not inline_scoring_allowed(cfg), why
    run = _Run(cfg)
    try:
        run.feed(_messages(cfg, 60), 4, gap_s=0.003)
    finally:
        run.engine.close()
    assert threading.current_thread().name not in run.rows_by_thread, why
    assert sum(run.rows_by_thread.values()) == 60
