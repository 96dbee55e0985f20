"""CPU and context switches per thread of a process, from /proc: which of its threads a
process's CPU per event comes from (``loadtests.efficiency --threads``).

The worker names its threads in the OS (streaming.observability.threads), librdkafka names its
own (``rdk:main``, ``rdk:broker<id>``); the process's first thread is reported as ``main``.
"""

from __future__ import annotations

import os
import re
import statistics
import threading
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_BROKER_ID = re.compile(r"^(rdk:broker).*")


@dataclass(frozen=True)
class ThreadTimes:
    """One thread's counters at one instant."""

    name: str
    cpu_s: float
    voluntary: int
    """Context switches the thread asked for (it waited: a lock, a queue, a socket)."""
    involuntary: int
    """Context switches the scheduler forced (its time slice was up)."""


def cpu_seconds(stat: str) -> float:
    """User + system CPU seconds from the text of a /proc ``stat`` file (a process's or a
    thread's)."""
    fields = stat.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / _TICK  # fields 14 and 15: utime, stime


def _name(pid: int, tid: int, comm: str) -> str:
    if tid == pid:
        return "main"
    return _BROKER_ID.sub(r"\1", comm)  # one librdkafka thread per broker: summed


def snapshot(pid: int) -> dict[int, ThreadTimes]:
    """Every live thread of ``pid`` by thread id (threads that end in between are skipped)."""
    out: dict[int, ThreadTimes] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        switches = dict(
            line.split(":\t", 1) for line in status.splitlines() if "_ctxt_switches" in line
        )
        tid = int(task.name)
        out[tid] = ThreadTimes(
            _name(pid, tid, comm),
            cpu_seconds(stat),
            int(switches.get("voluntary_ctxt_switches", 0)),
            int(switches.get("nonvoluntary_ctxt_switches", 0)),
        )
    return out


class ThreadSampler(threading.Thread):
    """Snapshots of a process every ``every_s`` while every thread of the first one lives.

    A process that exits once done (the passthrough stops after its last output) is thus read
    up to its last moments, not after its threads are gone: the last snapshot is at most
    ``every_s`` old, and the work of closing its clients is left out."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        super().__init__(name="thread-sampler", daemon=True)
        self._pid = pid
        self._every = every_s
        self._halt = threading.Event()
        self.first = snapshot(pid)
        self.last = self.first

    def run(self) -> None:
        while not self._halt.wait(self._every):
            try:
                now = snapshot(self._pid)
            except OSError:  # the process is gone
                return
            if not self.first.keys() <= now.keys():
                return
            self.last = now

    def stop(self) -> tuple[dict[int, ThreadTimes], dict[int, ThreadTimes]]:
        """(first, last) snapshots."""
        self._halt.set()
        self.join(5)
        return self.first, self.last


@dataclass
class ThreadShare:
    """What one named thread (or group of them) spent per event between two snapshots."""

    cpu_us: float = 0.0
    voluntary: float = 0.0
    involuntary: float = 0.0


def per_event(
    before: dict[int, ThreadTimes], after: dict[int, ThreadTimes], events: int
) -> dict[str, ThreadShare]:
    """Per thread name, CPU microseconds and context switches per event, largest CPU first.
    A thread born in between counts from zero."""
    shares: dict[str, ThreadShare] = {}
    for tid, now in after.items():
        then = before.get(tid, ThreadTimes(now.name, 0.0, 0, 0))
        share = shares.setdefault(now.name, ThreadShare())
        share.cpu_us += (now.cpu_s - then.cpu_s) / events * 1e6
        share.voluntary += (now.voluntary - then.voluntary) / events
        share.involuntary += (now.involuntary - then.involuntary) / events
    return dict(sorted(shares.items(), key=lambda kv: -kv[1].cpu_us))


def describe(shares: dict[str, ThreadShare], min_us: float = 0.5) -> str:
    """``name cpu us/ev (switches/ev)`` for every thread above ``min_us``."""
    return ", ".join(
        f"{name} {s.cpu_us:.1f} ({s.voluntary + s.involuntary:.2f} sw)"
        for name, s in shares.items()
        if s.cpu_us >= min_us
    )


def medians(runs: list[dict[str, ThreadShare]], min_us: float = 0.5) -> str:
    """The median CPU per event of each thread name over runs (a run without it counts 0)."""
    names = {name for run in runs for name in run}
    med = {n: statistics.median(r[n].cpu_us if n in r else 0.0 for r in runs) for n in names}
    return ", ".join(
        f"{name} {us:.1f}"
        for name, us in sorted(med.items(), key=lambda kv: -kv[1])
        if us >= min_us
    )
