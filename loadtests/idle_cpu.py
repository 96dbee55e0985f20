"""What a process costs with nothing to do: the worker and the passthrough, each joined to its
group on topics of its own with no events coming, CPU and wake-ups per second by thread.

    python -m loadtests.idle_cpu [-c CONFIG] [--seconds 20] [--rounds 2] [--bootstrap B]

Rounds alternate which side goes first. A thread that wakes on a timer while idle shows as
wake-ups (voluntary context switches) per second at no events; the figures come from /proc,
whose CPU clock ticks every 10 ms, so keep ``--seconds`` long enough for the totals to mean
something (20 s resolves 0.5 ms of CPU per second).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from loadtests.efficiency import PASSTHROUGH, WORKER
from loadtests.load import WorkerProc, prepare, remove_run_topics
from loadtests.thread_cpu import ThreadShare, per_event, snapshot
from streaming.config import PipelineConfig, load_config

SETTLE_S = 3.0
"""After the group join, before measuring: start-up work (model warm-up, first metadata) is
not idleness."""


def idle_per_second(
    cfg: PipelineConfig, workdir: Path, command: tuple[str, ...], seconds: float
) -> dict[str, ThreadShare]:
    """Per thread name, CPU microseconds and context switches per second while the process
    started by ``command`` sits idle for ``seconds``."""
    run_cfg, path = prepare(cfg, workdir, "idle")
    extra = () if command == WORKER else ("--events", str(10**9))
    proc = WorkerProc(path, workdir, 0, extra=extra, command=command)
    try:
        proc.wait_assigned()
        time.sleep(SETTLE_S)
        before, started = snapshot(proc.proc.pid), time.monotonic()
        time.sleep(seconds)
        after, elapsed = snapshot(proc.proc.pid), time.monotonic() - started
    finally:
        proc.stop()
        remove_run_topics(run_cfg)
    return per_event(before, after, elapsed)  # "per event" of one a second: per second


def describe(threads: dict[str, ThreadShare]) -> str:
    """Total, then each thread that used CPU or woke, largest first."""
    parts = [
        f"{name} {s.cpu_us / 1000:.2f} ms ({s.voluntary:.0f} wakes)"
        for name, s in threads.items()
        if s.cpu_us or s.voluntary >= 0.5
    ]
    return f"{_total_ms(threads):.2f} ms of CPU per second: " + ", ".join(parts)


def _total_ms(threads: dict[str, ThreadShare]) -> float:
    return sum(s.cpu_us for s in threads.values()) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="loadtests/plain_pipeline.yaml")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured, per run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--bootstrap", help="a cluster to use (default: an embedded broker)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rounds < 1:
        parser.error("--seconds must be above 0 and --rounds at least 1")

    from streaming.dev.broker import EmbeddedBroker

    broker = None if args.bootstrap else EmbeddedBroker().start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    cfg = load_config(args.config, bootstrap=bootstrap)
    totals: dict[str, list[float]] = {"worker": [], "passthrough": []}
    sides = {"worker": WORKER, "passthrough": PASSTHROUGH}
    print(f"idle {args.seconds:g} s a run; load at start {os.getloadavg()[0]:.2f}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="idle-") as tmp:
            for i in range(args.rounds):
                for name in sides if i % 2 == 0 else reversed(sides):
                    threads = idle_per_second(cfg, Path(tmp), sides[name], args.seconds)
                    totals[name].append(_total_ms(threads))
                    print(f"round {i + 1} {name}: {describe(threads)}", flush=True)
    finally:
        if broker is not None:
            broker.stop()
    for name, runs in totals.items():
        print(f"{name}: median {statistics.median(runs):.2f} ms of CPU per second idle")


if __name__ == "__main__":
    main()
