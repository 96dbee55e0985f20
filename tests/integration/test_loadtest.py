"""`streaming loadtest`: a short version of every scenario against the embedded broker; the
report has its sections, plots and baselines, and every event sent was matched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.report import MIN_INTERVALS
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


def test_every_scenario_short_with_report(broker, models_built, tmp_path: Path, capsys):
    out = tmp_path / "report"
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
    assert "replicas and at least" in report
    with capsys.disabled():
        print(
            f"\n[loadtest short] drain {results['drain']['events_per_s']:,.0f} ev/s "
            f"(passthrough {b['passthrough_events_per_s']:,.0f}, naive faust "
            f"{b['naive_faust_events_per_s']:,.0f}); knee {results['step']['knee_rate']}"
        )


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
