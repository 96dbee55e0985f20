"""Labels joined to predictions by the monitor on the real broker: its quality counts equal an
offline join of the same topics, across a kill -9 of the monitor; a canary that catches less
fraud is rolled back on labels alone, a better one kept. Small versions of
``python -m loadtests.labels`` (which runs them at 100,000 events, three times)."""

from __future__ import annotations

import pytest

from loadtests.labels import join_run

pytestmark = pytest.mark.integration


def test_quality_equals_an_offline_join_across_a_kill_9(broker, models_built, tmp_path, capsys):
    r = join_run(broker.bootstrap, tmp_path, events=6_000, rate=2_000, kill=True)
    assert r.equal, "\n".join(r.diff[:20])
    assert r.windows >= 2 and r.predictions == 6_000
    # The injected labels were seen and counted by reason, once each.
    assert r.monitor_counts["unknown_id"] == r.injected["unknown"]
    assert r.monitor_counts["past_horizon"] == r.injected["late"]
    assert r.monitor_counts["duplicates"] >= r.injected["duplicated"]
    with capsys.disabled():
        print(
            f"\n[labels] {r.predictions} predictions, {r.labels} labels, {r.windows} windows: "
            f"monitor == offline join {r.seconds_to_equal:.1f} s after the last label; {r.injected}"
        )
