"""The pod's /metrics, /healthz and /readyz, served by the supervisor for all its children.

/metrics: prometheus' multiprocess collector sums the children's counters and histograms (and
their gauges, each by its ``multiprocess_mode``); streaming_end_to_end_seconds comes from the
children's status files, plus what children that ended had reported, so it never goes back;
streaming_pool_processes and streaming_pool_restarts_total describe the pool itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from streaming.observability.metrics import LATENCY_BUCKETS
from streaming.pool.slots import Slot
from streaming.pool.status import read_status

if TYPE_CHECKING:
    from streaming.pool.supervisor import Supervisor

Totals = dict[tuple[str, str], tuple[list[int], int, float]]


class EndToEndTotals:
    """Latency counts of children that ended, per (model, version). The supervisor's loop
    adds to it; the HTTP thread reads it: both under the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._totals: Totals = {}

    def add(self, snapshot: list[list[Any]]) -> None:
        with self._lock:
            _merge(self._totals, snapshot)

    def with_live(self, snapshots: list[list[list[Any]]]) -> Totals:
        """These totals plus the running children's snapshots."""
        with self._lock:
            out = {k: (list(b), c, s) for k, (b, c, s) in self._totals.items()}
        for snapshot in snapshots:
            _merge(out, snapshot)
        return out


def _merge(into: Totals, snapshot: list[list[Any]]) -> None:
    for model, version, buckets, count, seconds in snapshot:
        old_b, old_c, old_s = into.get((model, version), ([0] * len(buckets), 0, 0.0))
        into[(model, version)] = (
            [a + b for a, b in zip(old_b, buckets, strict=True)],
            old_c + count,
            old_s + seconds,
        )


def retire(supervisor: Supervisor, slot: Slot) -> None:
    """A child ended: keep what it last reported (its latencies stay in the sums)."""
    status = read_status(slot.status_path)
    if status and slot.proc is not None and status.get("pid") == slot.proc.pid:
        supervisor.end_to_end.add(status.get("end_to_end") or [])
        slot.status_path.unlink(missing_ok=True)


class _PoolCollector(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self._sup = supervisor

    def collect(self) -> Iterator[Any]:
        sup = self._sup
        pipeline = sup.config.name
        live = []
        for slot in list(sup.slots):
            proc = slot.proc
            status = read_status(slot.status_path) if proc is not None else None
            if status and proc is not None and status.get("pid") == proc.pid:
                live.append(status.get("end_to_end") or [])
        e2e = HistogramMetricFamily(
            "streaming_end_to_end_seconds",
            "Event timestamp to acknowledged prediction.",
            labels=("pipeline", "model", "version"),
        )
        for (model, version), (buckets, count, seconds) in sorted(
            sup.end_to_end.with_live(live).items()
        ):
            pairs = [(repr(float(b)), c) for b, c in zip(LATENCY_BUCKETS, buckets, strict=True)]
            pairs.append(("+Inf", count))
            e2e.add_metric([pipeline, model, version], pairs, seconds)
        yield e2e
        running = GaugeMetricFamily(
            "streaming_pool_processes", "Worker processes running in this pod.", labels=["pipeline"]
        )
        running.add_metric([pipeline], sum(1 for s in sup.slots if s.proc is not None))
        yield running
        restarts = CounterMetricFamily(
            "streaming_pool_restarts", "Children started again after dying.", labels=["pipeline"]
        )
        restarts.add_metric([pipeline], sup.restarts)
        yield restarts


def pool_registry(supervisor: Supervisor) -> CollectorRegistry:
    """The registry the supervisor serves on /metrics."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(supervisor.metrics_dir))
    registry.register(_PoolCollector(supervisor))
    return registry


def healthz(supervisor: Supervisor) -> tuple[bool, dict[str, object]]:
    """Alive unless a running child is unhealthy (its own /healthz) or silent; names it."""
    return _check(supervisor, 0)


def readyz(supervisor: Supervisor) -> tuple[bool, dict[str, object]]:
    """Ready when every child is ready (models warm, partitions assigned, polls answered)."""
    return _check(supervisor, 1)


def _check(supervisor: Supervisor, which: int) -> tuple[bool, dict[str, object]]:
    now = time.monotonic()
    children: dict[str, object] = {}
    unwell = []
    for slot in list(supervisor.slots):
        result = slot.describe(now)
        children[slot.worker_id] = result[2]
        if not result[which]:
            unwell.append(slot.worker_id)
    return not unwell, {"unwell": unwell, "processes": children}
