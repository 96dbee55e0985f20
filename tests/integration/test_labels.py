"""Labels joined to predictions by the monitor on the real broker: its quality counts equal an
offline join of the same topics, across a kill -9 of the monitor; a canary that catches less
fraud is rolled back on labels alone, a better one kept. Small versions of
``python -m loadtests.labels`` (which runs them at 100,000 events, three times)."""

from __future__ import annotations

import pytest

from loadtests.labels import canary_run, join_run

pytestmark = pytest.mark.integration


def test_quality_equals_an_offline_join_across_a_kill_9(broker, models_built, tmp_path, measured):
    r = join_run(broker.bootstrap, tmp_path, events=6_000, rate=2_000, kill=True)
    assert r.equal, "\n".join(r.diff[:20])
    assert r.windows >= 2 and r.predictions == 6_000
    # The injected labels were seen and counted by reason, once each.
    assert r.monitor_counts["unknown_id"] == r.injected["unknown"]
    assert r.monitor_counts["past_horizon"] == r.injected["late"]
    assert r.monitor_counts["duplicates"] >= r.injected["duplicated"]
    measured(
        f"\n[labels] {r.predictions} predictions, {r.labels} labels, {r.windows} windows: "
        f"monitor == offline join {r.seconds_to_equal:.1f} s after the last label; {r.injected}"
    )


def test_a_canary_catching_less_fraud_is_rolled_back_on_labels_a_better_one_kept(
    broker, models_built, tmp_path, measured
):
    # Fraud at 5% instead of 0.5%, so that 12,000 events carry enough labelled frauds (about
    # 150 per version) for the test to see the drop (z about 3 against 0.84); python -m
    # loadtests.labels runs it at the real rate, over 100,000 events, at 90% confidence.
    r = canary_run(
        broker.bootstrap,
        tmp_path,
        events=12_000,
        rate=None,
        fraud_rate=0.05,
        max_recall_drop=0.02,
        confidence=0.8,
    )
    # Flags and scores alike: nothing but the labels tells the canaries apart ...
    assert r.other_rollbacks == [], r
    assert r.flag_shares_alike(), r
    # ... and the labels do: the blind one goes, the better one stays.
    assert r.rolled_back == ["v8"], r
    assert r.last_verdicts == {"v2": "ok", "v8": "fail"}, r
    assert r.recall["v8"] < r.recall["v2b"] < r.recall["v2"], r
    measured(
        f"\n[labels] rollback of v8 {r.seconds_to_rollback:.1f} s after the first event; "
        f"recall {r.recall}, flagged {r.flagged_share}, labelled frauds "
        f"{r.labelled_frauds}"
    )
