"""The monitor's decisions without Kafka: PSI, windows, verdicts, rollback streaks."""

from __future__ import annotations

import numpy as np
import pytest

from streaming.config import MonitorConfig, PipelineConfig, load_config
from streaming.observability.drift import DriftBaseline, FeatureSketch, Histogram, psi
from streaming.rollout.control import RoutingUpdate
from streaming.rollout.monitor.rollout import RolloutMonitor
from streaming.rollout.monitor.windows import WindowStore
from tests.kafka_helpers import BASE_CONFIG

EDGES = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
BASE = DriftBaseline(
    features={"amount": Histogram(np.array(EDGES) * 100, np.full(10, 100.0))},
    score=Histogram(np.array(EDGES) / 5, np.full(10, 100.0)),  # training scores in 0..0.2
)


def test_psi_is_zero_for_the_same_shape_and_large_for_a_collapse() -> None:
    assert psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert psi([100] * 10, [0] * 9 + [1000]) > 3
    with pytest.raises(ValueError, match="bins differ"):
        psi([1, 2], [1, 2, 3])


def test_bin_counts_put_outliers_in_the_edge_bins_and_drop_nan() -> None:
    h = Histogram(np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0]))
    assert h.bin_counts(np.array([-5, 0.5, 1.5, 99, np.nan])).tolist() == [2, 2]


def test_feature_sketch_samples_each_chunk_and_resets_on_take() -> None:
    class Rec:
        def __init__(self, amount: float) -> None:
            self.amount = amount

    sketch = FeatureSketch(BASE, sample=5)
    sketch.add([Rec(5.0)] * 10)
    assert sum(sketch.take()["amount"]) == 5
    assert sketch.take() == {}


def test_feature_sketch_binned_in_bulk_counts_what_each_chunk_binned_alone_did() -> None:
    class Rec:
        def __init__(self, amount: object) -> None:
            self.amount = amount

    rng = np.random.default_rng(4)
    chunks = [
        [Rec(float(a)) for a in rng.uniform(-20, 130, int(rng.integers(1, 40)))] for _ in range(200)
    ]
    chunks.append([Rec(float("nan")), Rec("junk"), Rec(None), Rec(50)])
    hist = BASE.features["amount"]
    expected = np.zeros(10, np.int64)
    for c in chunks:
        values = np.array(
            [float(r.amount) if isinstance(r.amount, float | int) else np.nan for r in c[:16]]
        )
        expected += hist.bin_counts(values)
    # flush_at small: part of it is binned on the way (memory stays bounded), part at take
    sketch = FeatureSketch(BASE, sample=16, flush_at=100)
    for c in chunks:
        sketch.add(c)
    assert sketch.take()["amount"] == expected.tolist()
    assert sketch.take() == {}


def config(**monitor: object) -> PipelineConfig:
    base = load_config(BASE_CONFIG)
    data = base.model_dump()
    data["model"]["versions"] = [
        {**data["model"]["versions"][0], "version": "v1", "weight": 90},
        {**data["model"]["versions"][0], "version": "v2", "weight": 10},
    ]
    data["monitor"] = {**MonitorConfig().model_dump(), "window_s": 10, "grace_s": 1, **monitor}
    return PipelineConfig.model_validate(data)


def predictions(version: str, n: int, scores: np.ndarray, t0: int, latency: int = 20) -> list:
    return [
        {
            "version": version,
            "score": float(s),
            "scored_ms": t0 + i % 9000,
            "ts_ms": t0 + i % 9000 - latency,
        }
        for i, s in zip(range(n), scores, strict=False)
    ]


def feed(mon: RolloutMonitor, t0: int, canary_scores: np.ndarray, n: int = 1000) -> None:
    rng = np.random.default_rng(t0)
    mon.store.add_predictions(predictions("v1", n, rng.uniform(0, 0.2, n), t0))
    mon.store.add_predictions(predictions("v2", n, canary_scores, t0))


def test_a_noisy_canary_fails_twice_then_is_rolled_back() -> None:
    mon = RolloutMonitor(config(auto_rollback=True, min_events=100), {"v1": BASE, "v2": BASE})
    rng = np.random.default_rng(1)
    feed(mon, 1_000_000, rng.uniform(0, 1, 1000))
    first = mon.tick(1_011_001)
    assert [(v["version"], v["verdict"]) for v in first.verdicts] == [
        ("v1", "baseline"),
        ("v2", "fail"),
    ]
    assert first.update is None  # one failing window is not enough
    feed(mon, 1_010_000, rng.uniform(0, 1, 1000))
    second = mon.tick(1_021_001)
    assert second.update is not None
    assert second.update.weights == {"v1": 90, "v2": 0}
    (alert,) = second.alerts
    assert alert["kind"] == "rollback" and alert["failed_windows_start_ms"] == [
        1_000_000,
        1_010_000,
    ]
    assert mon.weights["v2"] == 0 and mon.canaries() == []
    # Windows it scored before the workers applied the rollback, judged after it (a monitor
    # reading behind the workers), fail too but roll nothing back again.
    for t0 in (1_020_000, 1_030_000):
        feed(mon, t0, rng.uniform(0, 1, 1000))
    late = mon.tick(1_041_001)
    assert [v["verdict"] for v in late.verdicts if v["version"] == "v2"] == ["fail", "fail"]
    assert late.update is None and late.alerts == [] and len(mon.rollbacks) == 1

    # The config's routing read back late from the control topic (written before the
    # rollback) must not bring v2 back; a record written after it (an operator's) does.
    stale = RoutingUpdate(weights={"v1": 90, "v2": 10})
    assert not mon.follow(stale, produced_ms=1_000_500)
    assert mon.canaries() == []
    assert mon.follow(stale, produced_ms=1_021_002)
    assert mon.canaries() == ["v2"]


def test_a_good_canary_passes_and_a_thin_window_is_not_judged() -> None:
    mon = RolloutMonitor(config(auto_rollback=True, min_events=500), {"v1": BASE, "v2": BASE})
    rng = np.random.default_rng(2)
    for t0 in (1_000_000, 1_010_000, 1_020_000):
        feed(mon, t0, rng.uniform(0, 0.2, 1000))
    result = mon.tick(1_031_001)
    assert [v["verdict"] for v in result.verdicts if v["version"] == "v2"] == ["ok"] * 3
    assert result.update is None and not result.alerts
    feed(mon, 1_030_000, rng.uniform(0, 1, 1000), n=100)
    thin = mon.tick(1_041_001)
    assert [v["verdict"] for v in thin.verdicts if v["version"] == "v2"] == ["insufficient"]


def telemetry(version: str, t0: int, amount_counts: list[int]) -> dict:
    return {"version": version, "ts_ms": t0, "feature_counts": {"amount": amount_counts}}


@pytest.mark.parametrize("inputs", ["as_trained", "drifted", "unseen"])
def test_score_drift_fails_a_canary_only_while_its_inputs_look_as_trained(inputs: str) -> None:
    mon = RolloutMonitor(config(min_events=100, bad_windows=1), {"v1": BASE, "v2": BASE})
    rng = np.random.default_rng(4)
    # The canary's scores sit in the upper half of its training range (PSI about 3), its
    # flagged share stays at the baseline's 0 (threshold 0.5): only score PSI could fail it.
    feed(mon, 1_000_000, rng.uniform(0.1, 0.2, 1000))
    amounts = {"as_trained": [50] * 10, "drifted": [0] * 9 + [500], "unseen": [10] * 10}
    for version in ("v1", "v2"):
        mon.store.add_telemetry(telemetry(version, 1_000_100, amounts[inputs]))
    (_, canary) = mon.tick(1_011_001).verdicts
    assert canary["score_psi"] > 1
    if inputs == "as_trained":
        assert canary["verdict"] == "fail" and "score PSI" in canary["reasons"][0]
        assert canary["notes"] == []
        return
    assert canary["verdict"] == "ok", canary
    (note,) = canary["notes"]
    if inputs == "drifted":
        assert "inputs drifted (amount PSI" in note
    else:  # 100 input samples cannot tell drift over 10 bins
        assert "too few input samples" in note


def test_drifted_inputs_leave_the_same_window_comparisons_in_force() -> None:
    mon = RolloutMonitor(config(min_events=100, bad_windows=1), {"v1": BASE, "v2": BASE})
    feed(mon, 1_000_000, np.full(1000, 0.9))  # every event flagged
    for version in ("v1", "v2"):
        mon.store.add_telemetry(telemetry(version, 1_000_100, [0] * 9 + [500]))
    (_, canary) = mon.tick(1_011_001).verdicts
    assert canary["verdict"] == "fail"
    assert [r.split(" ")[0] for r in canary["reasons"]] == ["flags"]


def test_score_psi_of_a_thin_sample_is_not_held_against_a_canary() -> None:
    mon = RolloutMonitor(config(min_events=100, bad_windows=1), {"v1": BASE, "v2": BASE})
    rng = np.random.default_rng(5)
    feed(mon, 1_000_000, rng.uniform(0.1, 0.2, 150), n=150)  # 10 bins need 200 events
    (_, canary) = mon.tick(1_011_001).verdicts
    assert canary["verdict"] == "ok" and canary["score_psi"] > 1
    assert canary["notes"] == ["score PSI not judged: 150 events < 200 (20 per bin of 10)"]


def test_without_auto_rollback_a_failing_canary_only_raises_an_alert() -> None:
    mon = RolloutMonitor(
        config(auto_rollback=False, min_events=100, bad_windows=1), {"v1": BASE, "v2": BASE}
    )
    feed(mon, 1_000_000, np.full(1000, 0.9))
    result = mon.tick(1_011_001)
    assert result.update is None
    assert [a["kind"] for a in result.alerts] == ["canary_failing"]
    assert mon.weights["v2"] == 10


def test_slow_or_failing_canary_is_worse_than_the_baseline() -> None:
    mon = RolloutMonitor(config(min_events=100, bad_windows=1), {"v1": BASE, "v2": BASE})
    rng = np.random.default_rng(3)
    mon.store.add_predictions(predictions("v1", 1000, rng.uniform(0, 0.2, 1000), 1_000_000))
    mon.store.add_predictions(
        predictions("v2", 1000, rng.uniform(0, 0.2, 1000), 1_000_000, latency=400)
    )
    for _ in range(50):
        mon.store.add_dead_letter(1_000_500, "inference", "v2")
    (_, canary) = mon.tick(1_011_001).verdicts
    assert canary["verdict"] == "fail"
    text = " ".join(canary["reasons"])
    assert "p99 latency" in text and "error rate" in text


def test_late_records_after_a_window_closed_are_counted_as_late() -> None:
    store = WindowStore(1000, 0, 0.5, {})
    store.add_dead_letter(5_500, "decode", None)
    assert [w.start_ms for w in store.close(6_000)] == [5_000]
    store.add_dead_letter(5_900, "decode", None)
    assert store.late == 1
    store.add_predictions(predictions("v1", 3, np.zeros(3), 5_100))
    assert store.late == 4  # records, not batches


def test_a_window_waits_for_a_reader_that_is_behind_and_closes_once_it_is_idle() -> None:
    store = WindowStore(2_000, 1_000, 0.5, {})

    def read(first_scored: int, read_at: int, n: int = 10) -> None:
        rows = [
            {"version": "v1", "score": 0.1, "scored_ms": first_scored + i, "ts_ms": first_scored}
            for i in range(n)
        ]
        store.add_predictions(rows, read_at_ms=read_at)

    # The reader is 4 s behind: at 15 s it has read what was scored until 11 s.
    read(10_000, 14_000)
    read(11_000, 15_000)
    assert store.close(15_000) == []  # the clock says 10-12 s is due, the reader does not
    read(13_100, 15_300)  # past the end plus grace of 10-12 s: it is whole now
    (w,) = store.close(15_300)
    assert (w.start_ms, w.version("v1").predictions) == ((10_000), 20)
    read(12_600, 15_400)
    assert store.late == 0
    # Nothing more to read: after idle_ms of quiet the clock alone closes 12-14 s.
    assert store.close(15_400 + store.idle_ms - 1) == []
    (last,) = store.close(15_400 + store.idle_ms)
    assert last.version("v1").predictions == 20


def test_monitor_baseline_must_be_a_version() -> None:
    with pytest.raises(ValueError, match=r"monitor.baseline 'v7' is not a model version"):
        config(baseline="v7")


def test_a_name_a_pydantic_record_lacks_counts_nothing_and_a_property_is_read() -> None:
    from pydantic import BaseModel

    class Plain(BaseModel):
        amount: float

    class WithProperty(BaseModel):
        amount: float

        @property
        def velocity(self) -> float:
            return self.amount / 100

    baseline = DriftBaseline(
        features={
            "amount": BASE.features["amount"],
            "velocity": Histogram(np.array(EDGES), np.full(10, 100.0)),
        },
        score=None,
    )
    sketch = FeatureSketch(baseline)
    sketch.add([Plain(amount=a) for a in (5.0, 15.0, 95.0)])
    assert sketch.take() == {"amount": [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]}
    sketch.add([WithProperty(amount=a) for a in (5.0, 15.0, 95.0)])
    counts = sketch.take()
    assert counts["velocity"] == counts["amount"] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
