"""The label join, quality per window, the recall test and the label schedule, without Kafka."""

from __future__ import annotations

import numpy as np
import pytest

from streaming.config import MonitorConfig
from streaming.dev.labels import LabelQueue, plan_labels
from streaming.pipeline import SyntheticEvent
from streaming.rollout.monitor.label_verdicts import CaughtUp, LabelJudge, SettledWindows
from streaming.rollout.monitor.labeljoin import LabelError, LabelJoin, QualityWindow
from streaming.rollout.monitor.quality import RecallTest, average_precision, window_quality

H = 10_000  # horizon ms
W = 1_000  # window ms


def join() -> LabelJoin:
    return LabelJoin({}, {}, window_ms=W, horizon_ms=H)


def pred(eid: str, score: float, t: int, version: str = "v1") -> dict:
    return {"event_id": eid, "version": version, "score": score, "scored_ms": t}


def label(eid: str, y: int, ts: int) -> dict:
    return {"event_id": eid, "label": y, "label_ts_ms": ts, "source": "chargeback"}


def counts(j: LabelJoin) -> dict:
    (w,) = j.windows.values()
    q = window_quality(w, 0.5, final=False)
    return {k: q[k] for k in ("predictions", "labelled", "tp", "fp", "fn", "tn")}


def test_labels_before_and_after_their_prediction_both_join() -> None:
    j = join()
    j.add_label(label("a", 1, 50))  # before its prediction: waits
    j.add_prediction(pred("a", 0.9, 100))
    j.add_prediction(pred("b", 0.9, 110))
    j.add_prediction(pred("c", 0.1, 120))
    j.add_label(label("b", 0, 500))
    j.add_label(label("c", 1, 600))
    assert counts(j) == {"predictions": 3, "labelled": 3, "tp": 1, "fp": 1, "fn": 1, "tn": 0}
    assert j.label_counts()["matched"] == 3 and j.label_counts()["waiting"] == 0


def test_a_duplicate_label_counts_once_and_the_last_wins() -> None:
    j = join()
    j.add_prediction(pred("a", 0.9, 100))
    j.add_label(label("a", 0, 200))
    j.add_label(label("a", 1, 300))
    j.add_label(label("a", 1, 300))  # a replay after a restart changes nothing
    assert counts(j) == {"predictions": 1, "labelled": 1, "tp": 1, "fp": 0, "fn": 0, "tn": 0}
    assert j.label_counts()["duplicates"] == 1


def test_a_label_replayed_after_a_restart_is_not_a_duplicate() -> None:
    j = join()
    j.add_label(label("a", 1, 50), (0, 7))  # waits for its prediction
    j.add_label(label("a", 1, 50), (0, 7))  # replayed: the same log position
    j.add_prediction(pred("a", 0.9, 100))
    j.add_label(label("a", 1, 50), (0, 7))
    j.add_label(label("b", 1, 150 + H), (1, 3))
    j.add_prediction(pred("b", 0.9, 100))
    j.add_label(label("b", 1, 150 + H), (1, 3))  # a late one replayed
    assert j.label_counts()["duplicates"] == 0 and j.label_counts()["past_horizon"] == 1
    j.add_label(label("a", 0, 60), (2, 9))  # a real second label: the last wins
    assert j.label_counts()["duplicates"] == 1 and counts(j)["fp"] == 1


def test_a_duplicated_prediction_is_counted_once() -> None:
    j = join()
    j.add_prediction(pred("a", 0.9, 100))
    j.add_label(label("a", 1, 200))
    j.add_prediction(pred("a", 0.9, 100))  # the worker is at-least-once
    assert counts(j)["predictions"] == 1 and counts(j)["tp"] == 1


def test_unknown_and_late_labels_are_counted_by_reason_never_dropped() -> None:
    j = join()
    j.add_prediction(pred("a", 0.9, 100))
    j.add_label(label("a", 1, 100 + H + 1))  # past the horizon: not used
    j.add_label(label("ghost", 1, 200))  # no prediction ever comes
    assert j.label_counts()["waiting"] == 1
    assert counts(j)["labelled"] == 0
    assert j.label_counts()["past_horizon"] == 1
    assert j.expire(W + H - 1) == []  # the ghost's wait is over; the window not yet final
    assert j.label_counts()["unknown_id"] == 1
    finals = j.expire(W + H)
    assert [w.version for w in finals] == ["v1"]  # the window is final and leaves memory
    c = j.label_counts()
    assert (c["unknown_id"], c["past_horizon"], c["waiting"]) == (1, 1, 0)
    assert j.preds == {} and j.windows == {}
    j.add_label(label("ghost", 1, 200))  # once counted as unknown, it stays counted once
    assert j.label_counts()["unknown_id"] == 1 and j.label_counts()["waiting"] == 0
    j.expire(200 + 2 * H + 1)  # forgotten after a second horizon
    assert j.pending == {}


def test_the_index_is_rebuilt_from_the_tables_after_a_restart() -> None:
    j = join()
    for i in range(20):
        j.add_prediction(pred(f"e{i}", i / 20, 100 + i * 100, "v1" if i % 2 else "v2"))
        j.add_label(label(f"e{i}", int(i % 3 == 0), 5_000))
    before = {k: window_quality(w, 0.5, final=False) for k, w in j.windows.items()}
    again = LabelJoin(j.preds, j.pending, window_ms=W, horizon_ms=H)
    again.rebuild()
    after = {k: window_quality(w, 0.5, final=False) for k, w in again.windows.items()}
    assert after == before and len(after) == 5  # v1 in 3 windows, v2 in 2


def test_a_label_that_breaks_the_contract_says_which_field() -> None:
    j = join()
    with pytest.raises(LabelError, match="label must be 0 or 1"):
        j.add_label({"event_id": "a", "label": 2, "label_ts_ms": 1})
    with pytest.raises(LabelError, match="label_ts_ms"):
        j.add_label({"event_id": "a", "label": 1, "label_ts_ms": "yesterday"})
    assert j.invalid == 2


def test_average_precision_matches_the_step_sum_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    y = np.array([1, 0, 1, 0])
    # thresholds: 0.9 -> P 1, R .5; 0.7 -> P 2/3, R 1: AP = .5*1 + .5*2/3
    assert average_precision(scores, y) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # ties enter together: both at 0.5, one fraud -> P .5 at R 1
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    assert average_precision(scores, np.zeros(4, int)) is None


def test_window_quality_counts_only_labelled_predictions() -> None:
    w = QualityWindow("v1", 0, W, {"a": (0.9, 1), "b": (0.9, None), "c": (0.2, 0)})
    q = window_quality(w, 0.5, final=True)
    assert (q["predictions"], q["labelled"], q["tp"], q["tn"], q["flagged"]) == (3, 2, 1, 1, 2)
    assert (q["precision"], q["recall"], q["pr_auc"], q["final"]) == (1.0, 1.0, 1.0, True)


def quality(tp: int, fn: int, flagged: int = 100, n: int = 10_000) -> dict:
    return {
        "tp": tp,
        "fn": fn,
        "flagged": flagged,
        "predictions": n,
        "window_end_ms": 1,
        "recall": tp / (tp + fn),
        "labelled": n,
        "final": False,
    }


def test_recall_test_fails_a_real_drop_not_a_chance_one_and_needs_labels() -> None:
    t = RecallTest(max_drop=0.1, confidence=0.95, min_labels=30)
    assert t.judge(quality(140, 60), quality(80, 120))[0] == "ok"  # canary better
    assert t.judge(quality(73, 77), quality(105, 45))[0] == "fail"  # 0.49 vs 0.70, 150 each
    assert t.judge(quality(13, 7), quality(14, 6))[0] == "insufficient"
    # A drop of 0.21 on only 30 frauds each is within what chance explains at 95%
    assert t.judge(quality(15, 15), quality(21, 9))[0] == "ok"


def test_label_judge_rolls_back_after_bad_windows_and_not_at_other_flag_rates() -> None:
    judge = LabelJudge(MonitorConfig(bad_windows=2, min_labels=30, max_recall_drop=0.1))
    q = {
        ("v1", 0): quality(70, 30),
        ("v2", 0): quality(40, 60),
        ("v1", 1): quality(70, 30),
        ("v2", 1): quality(40, 60, flagged=2_000),  # recall lost with far fewer flags
    }
    got = judge.judge(q, list(q), model="m", baseline="v1", canaries=["v2"])
    assert [(v["window_start_ms"], v["verdict"]) for v in got] == [(0, "fail"), (1, "insufficient")]
    assert judge.failing_streak("v2") is None
    q[("v2", 2)], q[("v1", 2)] = quality(40, 60), quality(70, 30)
    judge.judge(q, [("v2", 2)], model="m", baseline="v1", canaries=["v2"])
    assert judge.failing_streak("v2") == [0, 2]


def test_a_window_is_judged_on_labels_only_once_its_predictions_stopped_coming() -> None:
    now = [100.0]
    settled = SettledWindows(5.0, clock=lambda: now[0])
    assert settled.settled(0)  # no prediction of it seen: nothing to wait for
    settled.saw([0, 1_000])
    now[0] = 104.0
    settled.saw([1_000])  # a monitor reading a backlog: window 1,000 is still coming in
    now[0] = 105.0
    assert settled.settled(0) and not settled.settled(1_000)
    now[0] = 109.0
    assert settled.settled(1_000)
    settled.saw([2_000])
    settled.keep([2_000])  # 0 and 1,000 went past the horizon
    assert list(settled.last) == [2_000] and not settled.settled(2_000)


def event(i: int, y: int | None) -> SyntheticEvent:
    return SyntheticEvent(b"k", b"{}", f"e{i}", y, None if y is not None else "x", None)


def test_planned_labels_come_weeks_later_scaled_and_some_never() -> None:
    events = [event(i, int(i % 10 == 0)) for i in range(5_000)] + [event(9_999, None)]
    planned = plan_labels(events, np.random.default_rng(1), time_scale=86_400.0)
    ids = {p.event_id for p in planned}
    assert "e9999" not in ids  # invalid events have no truth
    frauds = [p for p in planned if p.label == 1]
    assert 0.8 < len(frauds) / 500 < 0.97 and 0.75 < (len(planned) - len(frauds)) / 4_500 < 0.95
    median_fraud_days = float(np.median([p.due_s for p in frauds]))  # one day = one second
    assert 10 < median_fraud_days < 40
    queue = LabelQueue()
    queue.add(100.0, planned)
    assert queue.due(100.5) == []  # the earliest label (an analyst's) takes a day
    first = queue.due(102.0)
    assert first and {p.source for p in first} == {"analyst"}
    rest = queue.due(1e9)
    assert len(first) + len(rest) == len(planned) and len(queue) == 0
    with pytest.raises(ValueError, match="label-time-scale"):
        plan_labels(events, np.random.default_rng(1), 0)


def test_label_counts_kept_in_step_equal_a_recount_from_the_tables() -> None:
    rng = np.random.default_rng(4)
    j = join()
    for step in range(3_000):
        eid = f"e{rng.integers(300)}"
        if rng.random() < 0.4:
            j.add_prediction(pred(eid, float(rng.random()), int(rng.integers(0, 5_000))))
        else:
            ts = int(rng.integers(0, 3 * H))
            j.add_label(label(eid, int(rng.random() < 0.3), ts), (0, step))
        if step % 500 == 499:
            j.expire(step * 10)
    again = LabelJoin(j.preds, j.pending, window_ms=W, horizon_ms=H)
    again.rebuild()
    again.past_horizon_expired = j.past_horizon_expired
    assert j.label_counts() == again.label_counts()
    assert sum(j.label_counts().values()) > 100


def test_a_label_read_before_its_prediction_was_restored_is_joined_at_the_rebuild() -> None:
    # Part of the partitions first: the prediction's entry is not restored yet.
    preds = {"a": {"v": "v1", "s": 0.9, "t": 100, "y": None}}
    partial = LabelJoin({}, {}, window_ms=W, horizon_ms=H)
    partial.add_label(label("a", 1, 200), (0, 5))  # waits, as if there were no prediction
    full = LabelJoin(preds, partial.pending, window_ms=W, horizon_ms=H)
    full.rebuild()  # the next assignment restored the entry
    assert counts(full)["tp"] == 1 and full.label_counts()["waiting"] == 0
    again = LabelJoin(full.preds, full.pending, window_ms=W, horizon_ms=H)
    again.rebuild()  # idempotent
    assert counts(again)["tp"] == 1 and again.label_counts()["duplicates"] == 0


def test_a_window_waits_until_the_monitor_read_what_the_topic_held_grace_s_ago() -> None:
    caught = CaughtUp(5.0)
    # no history yet: not caught up, whatever was read
    assert not caught.check(0.0, {"p0": 99}, {"p0": 100})
    # a backlog: the topic ended at 100 five seconds ago, the monitor has read up to 40
    assert not caught.check(5.0, {"p0": 40}, {"p0": 100})
    # it paused mid-backlog, quiet for longer than grace_s: still not caught up
    assert not caught.check(12.0, {"p0": 40}, {"p0": 100})
    # two records short of that end is not caught up ...
    assert not caught.check(12.5, {"p0": 97}, {"p0": 150})
    # read to what the topic held grace_s ago: caught up, though more came since
    assert caught.check(13.0, {"p0": 99}, {"p0": 180})
    # steady traffic, the monitor keeping up: the end of 5 s ago is always behind it
    assert caught.check(18.5, {"p0": 185}, {"p0": 260})
    # every partition counts; one never read, with records, holds the verdicts back
    caught = CaughtUp(5.0)
    caught.check(0.0, {"p0": 9, "p1": None}, {"p0": 10, "p1": 7})
    assert not caught.check(5.0, {"p0": 9, "p1": None}, {"p0": 10, "p1": 7})
    # empty partitions and unknown watermarks do not
    caught = CaughtUp(5.0)
    caught.check(0.0, {"p0": 9, "p1": None}, {"p0": 10, "p1": 0, "p2": None})
    assert caught.check(5.0, {"p0": 9, "p1": None}, {"p0": 10, "p1": 0, "p2": None})
    # offset 0 read is one record read
    caught = CaughtUp(5.0)
    caught.check(0.0, {"p0": 0}, {"p0": 1})
    assert caught.check(5.0, {"p0": 0}, {"p0": 1})
    # ... one short is: the last offset may be an exactly-once commit marker, never handed out
    caught = CaughtUp(5.0)
    caught.check(0.0, {"p0": 98}, {"p0": 100})
    assert caught.check(5.0, {"p0": 98}, {"p0": 100})
    # checks that stopped for a while: the ends of long ago say nothing of now
    caught = CaughtUp(5.0)
    caught.check(0.0, {"p0": 9}, {"p0": 10})
    assert not caught.check(1_000.0, {"p0": 9}, {"p0": 5_000})
    assert not caught.check(1_003.0, {"p0": 9}, {"p0": 5_000})
    assert caught.check(1_005.0, {"p0": 4_999}, {"p0": 6_000})
