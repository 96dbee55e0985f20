"""What tracing costs: worker drain throughput with tracing on (defaults) vs off, in pairs.

    python -m loadtests.trace_cost [--events 100000] [--pairs 6] [--new-trace-header]

One embedded broker, one backlog; each pair drains it twice in fresh consumer groups, once
with tracing off and once on (``tracing.ratio`` and ``tracing.slow_ms`` at their defaults,
spans sent to a local OTLP/HTTP receiver), the order alternating from pair to pair so that
neither side always runs on a warmer machine. The ratio on/off per pair, and their median,
is the figure (target >= 0.95). Each drain's events are all slow by event time (a backlog),
so ``slow_ms: auto`` (the current p99) is what keeps the slow share at about 1%.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import threading
from pathlib import Path

from loadtests.drain_ratio import fill_backlog, process_cpu_s
from streaming.config import PipelineConfig, load_config
from streaming.dev.broker import EmbeddedBroker
from streaming.worker import Worker


def _drain(cfg: PipelineConfig, group: str, tracing: dict[str, object]) -> tuple[float, str]:
    worker = Worker(cfg.with_overrides(**{"kafka.group": group, **tracing}), idle_exit_s=1.0)
    # CPU from the first event consumed (start-up and its imports left out) to the end
    marks: list[float] = []
    done = threading.Event()

    def _mark() -> None:
        while worker.stats.first_consumed is None and not done.wait(0.001):
            pass
        marks.append(process_cpu_s())

    watcher = threading.Thread(target=_mark, daemon=True)
    watcher.start()
    stats = worker.run()
    done.set()
    watcher.join()
    cpu_us = (process_cpu_s() - marks[0]) / max(stats.consumed, 1) * 1e6
    note = f" ({cpu_us:4.1f} us cpu/event, drain and idle exit)"
    if worker.engine is not None and worker.engine.tracer is not None:
        t = worker.engine.tracer
        note += f"  traced {t.kept}, spans sent {t.export.sent:,} dropped {t.export.dropped:,}"
    return stats.rate(), note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument(
        "--new-trace-header",
        action="store_true",
        help="tracing on with tracing.new_trace_header: true (a traceparent on every prediction)",
    )
    args = parser.parse_args()
    # The receiver runs in a process of its own, as a collector would: decoding spans in
    # this process would be charged to the worker's drain.
    port = _free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "streaming.dev.otlp_receiver", "--port", str(port), "--quiet"],
        stdout=subprocess.PIPE,
        text=True,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _measure(args, endpoint)
        collector_cpu = _cpu_s(receiver.pid)
    finally:
        receiver.terminate()
        out, _ = receiver.communicate(timeout=30)
    lines = out.strip().splitlines()
    print(
        f"collector: {lines[-1] if len(lines) > 1 else 'no spans counted yet'}, "
        f"{collector_cpu:.2f} s of CPU in its own process over the whole run"
    )


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of another process so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _measure(args: argparse.Namespace, endpoint: str) -> None:
    ratios = []
    with EmbeddedBroker() as broker:
        cfg = load_config(args.config, bootstrap=broker.bootstrap)
        fill_backlog(cfg, args.events)
        on: dict[str, object] = {"tracing.enabled": True, "tracing.endpoint": endpoint}
        if args.new_trace_header:
            on["tracing.new_trace_header"] = True
        header = True if args.new_trace_header else cfg.tracing.new_trace_header
        print(
            f"backlog of {args.events:,} events; tracing on = ratio "
            f"{cfg.tracing.ratio:g}, slow_ms {cfg.tracing.slow_ms}, max_per_s "
            f"{cfg.tracing.max_per_s:g}, new_trace_header {header}, "
            f"to {endpoint}",
            flush=True,
        )
        for i in range(args.pairs):
            order = [("off", {}), ("on", on)]
            if i % 2:
                order.reverse()
            rates: dict[str, float] = {}
            for name, tracing in order:
                rates[name], note = _drain(cfg, f"trace-cost-{i}-{name}", tracing)
                print(f"pair {i + 1} tracing {name:3}: {rates[name]:>9,.0f} ev/s{note}", flush=True)
            ratio = rates["on"] / rates["off"]
            ratios.append(ratio)
            print(f"pair {i + 1}: on/off {ratio:.3f}", flush=True)
    print(
        f"tracing on / off: median {statistics.median(ratios):.3f}, "
        f"min {min(ratios):.3f}, max {max(ratios):.3f} over {len(ratios)} pairs"
    )


if __name__ == "__main__":
    main()
