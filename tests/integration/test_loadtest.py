"""`streaming loadtest`: a short version of every scenario against the embedded broker; the
report has its sections, plots and baselines, and every event sent was matched. Nothing here
asserts a speed: a busy machine may meet no latency target, and the report must say so."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from loadtests.report import HEADROOM, MIN_INTERVALS, fmt
from tests.kafka_helpers import ROOT

pytestmark = pytest.mark.integration


def loadtest(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "streaming",
            "loadtest",
            "-c",
            "pipelines/fraud/pipeline.yaml",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def _loadtest_topics(bootstrap: str) -> set[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return {t for t in admin.list_topics(timeout=10).topics if t.startswith("loadtest-")}


def test_every_scenario_short_with_report(broker, models_built, tmp_path: Path, measured):
    out = tmp_path / "report"
    before = _loadtest_topics(broker.bootstrap)
    done = loadtest(
        "--bootstrap",
        broker.bootstrap,
        "--scenario",
        "all",
        "--events",
        "4000",
        "--rates",
        "1000",
        "--step-rates",
        "1000,3000",
        "--seconds",
        "2",
        "--soak-seconds",
        "4",
        "--max-workers",
        "2",
        "--peak-rate",
        "10000",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "scenario scale-out" in done.stdout  # progress lines while it runs
    # every run deleted the topics it made (a benchmark of many runs would fill the broker)
    assert _loadtest_topics(broker.bootstrap) == before
    report = (out / "report.md").read_text()
    for section in (
        "## Baselines",
        "## Drain",
        "## Steady",
        "## Step",
        "## Spike",
        "## Soak",
        "## Scale-out",
        "## Batch sizes",
        "## Capacity",
    ):
        assert section in report, section
    results = json.loads((out / "results.json").read_text())
    # Each plot is drawn when its run has enough points, else the report says so instead.
    points = {
        "steady.png": (len(results["steady@1000"]["series"]["t"]), MIN_INTERVALS),
        "step.png": (len(results["step"]["steps"]), 2),
        "spike.png": (len(results["spike"]["series"]["t"]), MIN_INTERVALS),
        "soak.png": (len(results["soak"]["series"]["t"]), MIN_INTERVALS),
        "batches.png": (
            sum(
                len(r.get("batch_size_means", [])) for r in results.values() if isinstance(r, dict)
            ),
            MIN_INTERVALS,
        ),
    }
    for png, (n, least) in points.items():
        if n >= least:
            data = (out / png).read_bytes()
            assert data.startswith(b"\x89PNG") and len(data) > 5_000, png
            assert f"]({png})" in report
        else:
            assert not (out / png).exists() and f"]({png})" not in report, png
            assert f"too few intervals to plot ({n} " in report, png
    b = results["baselines"]
    assert b["passthrough_events_per_s"] > 0 and b["naive_faust_events_per_s"] > 0
    assert all(v > 0 for v in b["model_rows_per_s"].values())
    runs = [v for k, v in results.items() if k not in ("meta", "baselines")]
    runs += results["scale-out"]["rows"]
    for r in runs:
        if "unmatched" in r:
            assert r["unmatched"] == 0, r  # every sent event was matched to its output
    assert results["drain"]["complete"] and results["drain"]["sent"] == 4000
    assert [s["rate"] for s in results["step"]["steps"]] == [1000, 3000]
    assert [r["workers"] for r in results["scale-out"]["rows"]] == [1, 2]
    _assert_capacity_consistent(report, results["step"], peak_rate=10_000)
    measured(
        f"\n[loadtest short] drain {results['drain']['events_per_s']:,.0f} ev/s "
        f"(passthrough {b['passthrough_events_per_s']:,.0f}, naive faust "
        f"{b['naive_faust_events_per_s']:,.0f}); knee {results['step']['knee_rate']}"
    )


def _assert_capacity_consistent(report: str, step: dict[str, Any], peak_rate: float) -> None:
    """What users read in the Capacity section agrees with the steps measured in the same run,
    whatever this machine's speed: a recommendation at the highest rate that met the p99 target,
    or, when none did, a plain statement of that (and no recommendation)."""
    target = step["target_p99_ms"]
    for st in step["steps"]:  # the Step table shows the measured figures
        within = "yes" if st["ok"] else "no"
        assert f"| {fmt(st['rate'])} | {fmt(st['p50_ms'])} | {fmt(st['p99_ms'])} | {within} |" in (
            report
        ), st
        if st["ok"]:
            assert st["p99_ms"] is not None and st["p99_ms"] <= target, st
    capacity = report.split("## Capacity", 1)[1]
    met = [st["rate"] for st in step["steps"] if st["ok"]]
    assert step["max_rate_within_target"] == (max(met) if met else None)
    if met:
        per_worker = max(met)
        replicas = max(1, math.ceil(peak_rate / (per_worker * HEADROOM)))
        assert (
            f"One worker: {fmt(per_worker, 'events/s')} (step (p99 <= {fmt(target, 'ms')}))."
            in capacity
        ), capacity
        assert f"{replicas} replicas and at least {max(2 * replicas, 4)} partitions" in capacity
    else:
        assert f"No step rate met p99 <= {fmt(target, 'ms')}" in capacity, capacity
        assert "One worker:" not in capacity and "replicas" not in capacity, capacity


def test_missing_cluster_is_a_clear_error(tmp_path: Path) -> None:
    done = loadtest(
        "--bootstrap",
        "127.0.0.1:1",
        "--scenario",
        "drain",
        "--no-baselines",
        "--out",
        str(tmp_path / "r"),
        timeout=120,
    )
    assert done.returncode == 2
    assert "cannot reach Kafka at 127.0.0.1:1" in done.stderr
    assert "right to create topics" in done.stderr
