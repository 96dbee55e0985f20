"""The load-test report's figures as people read them, and plots only where there is enough
to plot (loadtests/report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loadtests.report import MIN_INTERVALS, fmt, write_report


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (32525.5, "events/s", "32,526 events/s"),
        (4424183.0, "rows/s", "4.42 M rows/s"),
        (16402981.7, "rows/s", "16.4 M rows/s"),
        (999_999_999.0, "rows/s", "1 G rows/s"),
        (999_700.0, "rows/s", "1 M rows/s"),
        (999_400.0, "rows/s", "999,400 rows/s"),
        (2.5e12, "rows/s", "2,500 G rows/s"),
        (12.345, "ms", "12.3 ms"),
        (1.5, "ms", "1.5 ms"),
        (0.456, "ms", "0.456 ms"),
        (0.00004, "s", "0.00004 s"),
        (99.96, "ms", "100 ms"),
        (123.4, "ms", "123 ms"),
        (1000.0, "events/s", "1,000 events/s"),
        (4.0, "", "4"),
        (0.0, "ms", "0 ms"),
        (-0.8, "MB", "-0.8 MB"),
        (100_000, "", "100,000"),  # ints are counts: exact
        (12_345_678, "events", "12,345,678 events"),
        (None, "ms", "-"),
        (float("nan"), "ms", "-"),
        ("embedded broker", "", "embedded broker"),
    ],
)
def test_fmt(value: Any, unit: str, text: str) -> None:
    assert fmt(value, unit) == text


def _results(drain_intervals: int, seconds: int) -> dict[str, Any]:
    series = {
        "t": list(range(seconds)),
        "sent": [1000] * seconds,
        "p50_ms": [12.345] * seconds,
        "p99_ms": [45.678] * seconds,
        "outputs_per_s": [1000] * seconds,
    }
    return {
        "baselines": {
            "passthrough_events_per_s": 32525.5,
            "model_rows_per_s": {"256": 4424183.0},
            "naive_faust_events_per_s": 2709.8,
        },
        "drain": {
            "events": 4000,
            "workers": 1,
            "seconds_from_start": 3.5712,
            "events_per_s": 71329.6,
            "unmatched": 0,
            "duplicates": 0,
            "batch_size_means": [[255.97, 12]] * drain_intervals,
        },
        "steady@1000": {
            "rate": 1000.0,
            "seconds": float(seconds),
            "achieved_per_s": 999.9,
            "p50_ms": 48.5612,
            "p99_ms": 77.6149,
            "max_ms": 79.65,
            "unmatched": 0,
            "series": series,
        },
    }


META = {"pipeline": "fraud", "bootstrap": "embedded broker", "cpus": 2}


def test_the_report_writes_figures_for_people(tmp_path: Path) -> None:
    report = write_report(tmp_path, _results(5, 5), META, peak_rate=10_000).read_text()
    assert "| I/O ceiling: passthrough drain | 32,526 events/s |" in report
    assert "| model only, batch 256 | 4.42 M rows/s |" in report
    assert "| 4,000 | 1 | 3.57 | 71,330 | 2.19 | 26.3 | 0 | 0 |" in report
    assert "| 1,000 | 5 | 1,000 | 48.6 | 77.6 | 79.7 | 0 |" in report
    assert "One worker: 49,931 events/s (drain x 0.7)." in report
    for raw in ("32525.5", "4424183", "71329.6", "48.5612", "1000.0"):
        assert raw not in report, raw


def test_enough_intervals_are_plotted(tmp_path: Path) -> None:
    report = write_report(tmp_path, _results(MIN_INTERVALS, MIN_INTERVALS), META, None)
    assert "too few intervals" not in report.read_text()
    for png in ("batches.png", "steady.png"):
        assert f"]({png})" in report.read_text()
        assert (tmp_path / png).read_bytes().startswith(b"\x89PNG")


def test_too_few_intervals_are_said_not_plotted(tmp_path: Path) -> None:
    # a plot of an earlier run in the same folder must not stay beside a report without it
    write_report(tmp_path, _results(MIN_INTERVALS, MIN_INTERVALS), META, None)
    few = MIN_INTERVALS - 1
    text = write_report(tmp_path, _results(1, few), META, None).read_text()
    assert "*batch sizes: too few intervals to plot (1 telemetry intervals;" in text
    assert f"*steady: too few intervals to plot ({few} one-second intervals;" in text
    assert "](batches.png)" not in text and "](steady.png)" not in text
    assert not (tmp_path / "batches.png").exists() and not (tmp_path / "steady.png").exists()


def test_no_step_rate_within_the_target_is_said_with_no_recommendation(tmp_path: Path) -> None:
    """A slow or busy machine may meet no target: the report says so in so many words."""
    results = _results(5, 5)
    results["step"] = {
        "target_p99_ms": 100.0,
        "steps": [
            {"rate": 1000.0, "p50_ms": 80.25, "p99_ms": 140.5, "ok": False},
            {"rate": 3000.0, "p50_ms": 95.0, "p99_ms": 612.0, "ok": False},
        ],
        "knee_rate": 1000.0,
        "max_rate_within_target": None,
    }
    report = write_report(tmp_path, results, META, peak_rate=10_000).read_text()
    capacity = report.split("## Capacity", 1)[1]
    assert "| 1,000 | 80.2 | 140 | no |" in report
    assert "Knee: 1,000 events/s; highest rate within the target: none of these rates." in report
    assert "No step rate met p99 <= 100 ms" in capacity
    assert "One worker" not in capacity and "replicas" not in capacity
