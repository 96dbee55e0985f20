"""How many cores this process may use: the cgroup's CPU quota, else the CPU affinity.

``os.cpu_count()`` reports the node's cores, not the container's: a pod limited to 2 CPUs on
a 64-core node would start 64 processes that the kernel then throttles to 2 cores' worth.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def allowed_cores(root: Path = CGROUP_ROOT) -> int:
    """Cores the cgroup quota allows (rounded up), never more than the affinity mask."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    cores = affinity or os.cpu_count() or 1
    quota = cgroup_quota(root)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return cores


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota in cores (cgroup v2 ``cpu.max``, else v1 ``cfs_quota_us``), or None."""
    v2 = root / "cpu.max"
    if v2.is_file():
        return _ratio(*v2.read_text().split()[:2])
    for v1 in (root / "cpu,cpuacct", root / "cpu"):
        quota, period = v1 / "cpu.cfs_quota_us", v1 / "cpu.cfs_period_us"
        if quota.is_file() and period.is_file():
            return _ratio(quota.read_text().strip(), period.read_text().strip())
    return None


def _ratio(quota: str, period: str = "100000") -> float | None:
    if quota in ("max", "-1"):
        return None
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None
