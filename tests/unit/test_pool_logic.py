"""The pool's pure parts: how many cores `auto` means, when a dead child is restarted, and
how `worker.processes` / `--processes` are checked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from streaming.cli.parser import build_parser
from streaming.config import ConfigError, load_config
from streaming.pool.collector import EndToEndTotals
from streaming.pool.cores import allowed_cores, cgroup_quota
from streaming.pool.restarts import RestartPolicy
from streaming.pool.slots import Slot, describe_exit

BASE = Path(__file__).resolve().parents[2] / "pipelines" / "fraud" / "pipeline.yaml"


def _affinity() -> int:
    return len(os.sched_getaffinity(0))


def test_cgroup_v2_quota_is_rounded_up_and_capped_by_affinity(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    assert allowed_cores(tmp_path) == min(2, _affinity())
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None
    assert allowed_cores(tmp_path) == _affinity()


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path) -> None:
    v1 = tmp_path / "cpu,cpuacct"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 0.5
    assert allowed_cores(tmp_path) == 1  # half a core still runs one process
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path) is None
    assert cgroup_quota(tmp_path / "nothing-here") is None


def test_backoff_doubles_per_slot_and_the_budget_runs_out() -> None:
    policy = RestartPolicy(budget=3, window_s=60.0, backoff_s=1.0)
    assert policy.allow(0.0)
    assert policy.delay(0, 0.0) == 1.0
    assert policy.delay(0, 2.0) == 2.0  # the same slot died again soon: twice as long
    assert policy.delay(1, 3.0) == 1.0  # another slot starts at the base backoff
    assert not policy.allow(4.0)  # three restarts within the window
    assert policy.allow(61.0)  # the first one left the window
    assert policy.used(61.0) == 2


def test_backoff_is_capped_and_resets_after_a_quiet_window() -> None:
    policy = RestartPolicy(budget=100, window_s=10.0, backoff_s=1.0)
    delays = [policy.delay(0, float(t)) for t in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert policy.delay(0, 100.0) == 1.0  # ran a whole window since: start over


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(-9) == "killed by SIGKILL"


def _config(tmp_path: Path, processes: object) -> Path:
    raw = yaml.safe_load(BASE.read_text())
    raw.setdefault("worker", {})["processes"] = processes
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_worker_processes_takes_a_number_or_auto(tmp_path: Path) -> None:
    assert load_config(BASE).worker.processes == 1
    assert load_config(_config(tmp_path, 3)).worker.processes == 3
    assert load_config(_config(tmp_path, "auto")).worker.processes == "auto"
    for bad in (0, "many", 1000):
        with pytest.raises(ConfigError, match=r"worker\.processes"):
            load_config(_config(tmp_path, bad))


def test_the_processes_flag_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    assert parser.parse_args(["run", "--processes", "auto"]).processes == "auto"
    assert parser.parse_args(["run", "--processes", "2"]).processes == 2
    assert parser.parse_args(["run"]).processes is None
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "--processes", "0"])
    assert "--processes: must be 1..256" in capsys.readouterr().err


class _Proc:
    """Stands in for a Popen: describe() reads only its pid."""

    def __init__(self, pid: int) -> None:
        self.pid = pid


def _status(path: Path, pid: int, at: float, healthy: bool = True, ready: bool = True) -> None:
    path.write_text(
        json.dumps(
            {
                "pid": pid,
                "at": at,
                "healthz": {"ok": healthy, "fatal": None if healthy else "boom"},
                "readyz": {"ok": ready},
                "end_to_end": [["fraud", "v2", [1, 3], 4, 0.5]],
            }
        )
    )


def test_a_slot_says_what_its_child_is_doing(tmp_path: Path) -> None:
    path = tmp_path / "status-0.json"
    slot = Slot(0, "pod-0", path, proc=_Proc(41))  # type: ignore[arg-type]
    assert slot.describe(100.0)[:2] == (True, False)  # no status yet: starting
    _status(path, 40, 99.0)  # its predecessor's status: still starting
    assert slot.describe(100.0)[2]["state"] == "starting"
    _status(path, 41, 99.5)
    assert slot.describe(100.0)[:2] == (True, True)
    _status(path, 41, 99.5, healthy=False)
    healthy, _, detail = slot.describe(100.0)
    assert not healthy and detail["healthz"]["fatal"] == "boom"
    _status(path, 41, 60.0)  # silent for 40 s
    assert slot.describe(100.0)[:2] == (False, False)
    slot.proc, slot.restart_at = None, 102.0
    slot.exits.append("killed by SIGKILL")
    healthy, ready, detail = slot.describe(100.0)
    assert (healthy, ready) == (True, False)
    assert detail["state"] == "restarting in 2.0 s" and detail["last_exit"] == "killed by SIGKILL"


def test_end_to_end_counts_add_up_over_children_and_stay_after_one_ends() -> None:
    totals = EndToEndTotals()
    totals.add([["fraud", "v2", [1, 3], 4, 0.5]])  # a child that ended
    live = [[["fraud", "v2", [2, 2], 2, 0.25]], [["fraud", "v1", [0, 1], 1, 0.1]]]
    assert totals.with_live(live) == {
        ("fraud", "v2"): ([3, 5], 6, 0.75),
        ("fraud", "v1"): ([0, 1], 1, 0.1),
    }
    assert totals.with_live([]) == {("fraud", "v2"): ([1, 3], 4, 0.5)}  # not mutated
