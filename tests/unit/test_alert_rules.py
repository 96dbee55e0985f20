"""The alert rules pass promtool's checks and its unit tests (each alert fires on a broken
SLO and stays silent on a healthy pipeline)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "helm" / "streaming-workers" / "files" / "alerts.rules.yml"
TESTS = ROOT / "tests" / "promtool"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make system-deps` installs Debian's prometheus package"
    return found


def test_rules_pass_promtool_check(promtool: str) -> None:
    done = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_and_they_pass(promtool: str) -> None:
    files = sorted(TESTS.glob("*.yml"))
    assert files
    done = subprocess.run(
        [promtool, "test", "rules", *map(str, files)], capture_output=True, text=True, cwd=TESTS
    )
    assert done.returncode == 0, done.stdout + done.stderr
    alerts = {
        r["alert"]
        for g in yaml.safe_load(RULES.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    tested = {
        t["alertname"]
        for f in files
        for group in yaml.safe_load(f.read_text())["tests"]
        for t in group.get("alert_rule_test", [])
        if t.get("exp_alerts")
    }
    assert alerts - tested == set(), f"alerts without a firing test: {sorted(alerts - tested)}"


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
                assert {"summary", "description", "runbook"} <= rule["annotations"].keys()
