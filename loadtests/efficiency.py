"""One worker process against the passthrough, in alternating pairs: drain rate, CPU per event
(draining and at an offered rate) and p99 end-to-end at that rate.

    python -m loadtests.efficiency [-c CONFIG] [--events 100000] [--rate 2000] [--seconds 10]
                                   [--pairs 5] [--threads] [--baseline passthrough|model]
                                   [--subject worker|model] [--bootstrap B]

Each side is a process of its own (``streaming run``, or the passthrough of
``loadtests.baselines``), started on topics of its own, its outputs read and matched by event
id: a drain's once it is over (timed by the outputs' own timestamps), a rate run's as they
arrive (the latency is the point there). Its CPU is read from /proc every 10 ms, so the figure
covers only the work measured: in a drain, from its first output to its last (start-up, model
load and group join left out);
at the offered rate, from the first send to the last output (idle wake-ups included, which is
the point). Pairs alternate which side goes first, so a machine that gets busier or quieter
during a run favours neither; the medians of the per-pair ratios are the figures to quote,
each with the interval that holds the true median at least 90% of the time and a verdict
against its target: met, missed, or undecided by that many pairs (loadtests.pair_verdict).

``--baseline model`` pairs the worker with the model passthrough instead (the passthrough plus
the pipeline's validation, state, preprocessing and model call, a poll batch at a time:
loadtests.baselines), so that the ratios show the worker's own cost over that pipeline's floor.
``--subject model`` measures that floor itself against the passthrough, under the same
targets: how close any worker running this pipeline and model could come to them here.

``--threads`` adds, for the runs at the offered rate, each side's CPU and context switches per
event by thread (loadtests.thread_cpu), from the first send until every output has arrived.
"""

from __future__ import annotations

import argparse
import bisect
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loadtests.load import (
    Ledger,
    Reader,
    Sender,
    WorkerProc,
    output_span,
    prepare,
    remove_run_topics,
    wait_drained,
)
from loadtests.pair_verdict import target_line
from loadtests.thread_cpu import (
    ThreadSampler,
    ThreadShare,
    cpu_seconds,
    describe,
    medians,
    per_event,
)
from streaming.config import PipelineConfig, load_config

PASSTHROUGH = ("-m", "loadtests.baselines")
BASELINES = {"passthrough": PASSTHROUGH, "model": (*PASSTHROUGH, "--model")}
WORKER = ("-m", "streaming", "run")


class CpuSampler(threading.Thread):
    """A process's CPU seconds (user + system, all threads) over wall time, from /proc."""

    def __init__(self, pid: int, every_s: float = 0.01) -> None:
        super().__init__(name="cpu-sampler", daemon=True)
        self._path = Path(f"/proc/{pid}/stat")
        self._every = every_s
        self._halt = threading.Event()
        self.times: list[float] = []
        self.cpu: list[float] = []

    def _read(self) -> float | None:
        try:
            return cpu_seconds(self._path.read_text())
        except (OSError, IndexError):
            return None

    def run(self) -> None:
        while not self._halt.is_set():
            cpu = self._read()
            if cpu is not None:
                self.times.append(time.time())
                self.cpu.append(cpu)
            self._halt.wait(self._every)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def at(self, when: float) -> float:
        """CPU seconds used by ``when`` (the last sample at or before it)."""
        i = bisect.bisect_right(self.times, when) - 1
        return self.cpu[max(i, 0)] if self.cpu else 0.0


@dataclass
class Side:
    """One run of one side."""

    rate: float = 0.0
    cpu_us: float = 0.0
    p99_ms: float = 0.0
    unmatched: int = 0
    threads: dict[str, ThreadShare] = field(default_factory=dict)
    """At the offered rate, with ``--threads``: CPU and switches per event by thread."""


class _Session:
    """Topics, reader and one process of one run; closes everything."""

    def __init__(self, cfg: PipelineConfig, workdir: Path, tag: str, seed: int) -> None:
        self.cfg, self.path = prepare(cfg, workdir, tag)
        self.workdir = workdir
        self.ledger = Ledger()
        self.sender = Sender(self.cfg, self.ledger, seed, invalid_ratio=0.0)
        self.reader = Reader(self.cfg, self.ledger)
        self.proc: WorkerProc | None = None
        self.sampler: CpuSampler | None = None

    def start_reader(self) -> None:
        self.reader.start()
        if not self.reader.ready.wait(60):
            raise RuntimeError("the reader got no assignment in 60 s")

    def start(self, command: tuple[str, ...], events: int) -> None:
        extra = ("--events", str(events)) if command != WORKER else ()
        self.proc = WorkerProc(self.path, self.workdir, 0, extra=extra, command=command)
        self.sampler = CpuSampler(self.proc.proc.pid)
        self.sampler.start()
        self.proc.wait_assigned()

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.stop()
        if self.proc is not None:
            self.proc.stop()
        self.reader.stop.set()
        self.reader.join(10)
        remove_run_topics(self.cfg)


def drain(cfg: PipelineConfig, workdir: Path, command: tuple[str, ...], events: int) -> Side:
    """A backlog of ``events``: rate and CPU per event from the first output to the last,
    timed by the outputs' own timestamps and read only once the drain is over (as the load
    test's drains are: a reader beside it would take the CPU being measured)."""
    s = _Session(cfg, workdir, "eff-drain", seed=1)
    try:
        s.sender.send(events, None)
        s.start(command, events)
        assigned = time.time()
        assert s.proc is not None
        wait_drained(s.cfg, [s.proc], events, max(120.0, events / 500), by_exit=command != WORKER)
        s.start_reader()
        s.reader.wait_matched(events, timeout=max(60.0, events / 10_000))
        with s.ledger.lock:
            produced = list(s.ledger.produced.values())
        unmatched = s.ledger.unmatched()
    finally:
        s.close()
    assert s.sampler is not None
    if not produced:
        return Side(unmatched=unmatched)
    first, last = output_span(produced, assigned)
    span = max(last - first, 1e-3)
    cpu = s.sampler.at(last) - s.sampler.at(first)
    return Side(rate=events / span, cpu_us=cpu / events * 1e6, unmatched=unmatched)


def offered(
    cfg: PipelineConfig,
    workdir: Path,
    command: tuple[str, ...],
    rate: float,
    seconds: float,
    per_thread: bool = False,
) -> Side:
    """``rate`` events/s for ``seconds``: CPU per event from the first send to the last output,
    and p99 end-to-end of the events sent after the first second (the broker's start)."""
    n = int(rate * seconds)
    s = _Session(cfg, workdir, "eff-rate", seed=2)
    threads: dict[str, ThreadShare] = {}
    try:
        s.start_reader()
        s.start(command, n)
        time.sleep(1.0)  # past the broker's start transient on fresh topics (README)
        assert s.proc is not None
        by_thread = ThreadSampler(s.proc.proc.pid) if per_thread else None
        if by_thread is not None:
            by_thread.start()
        t0 = time.time()
        s.sender.send(n, rate)
        t1 = time.time()
        s.reader.wait_matched(n, timeout=60)
        if by_thread is not None:
            threads = per_event(*by_thread.stop(), n)
        with s.ledger.lock:
            last = max(s.ledger.arrived.values(), default=t1)
        unmatched = s.ledger.unmatched()
    finally:
        s.close()
    assert s.sampler is not None
    lat = s.ledger.latencies_ms(t0 + 1.0, t1)
    cpu = s.sampler.at(last) - s.sampler.at(t0)
    p99 = float(np.percentile(lat, 99)) if lat.size else float("nan")
    return Side(cpu_us=cpu / n * 1e6, p99_ms=p99, unmatched=unmatched, threads=threads)


def _pair(
    run: Callable[[tuple[str, ...]], Side],
    first_worker: bool,
    baseline: tuple[str, ...],
    subject: tuple[str, ...] = WORKER,
) -> tuple[Side, Side]:
    """(baseline, subject), run in the given order."""
    if first_worker:
        w = run(subject)
        return run(baseline), w
    p = run(baseline)
    return p, run(subject)


def _ratio(a: float, b: float) -> float:
    """a / b; NaN when either is 0 (a run too short for the 10 ms CPU clock)."""
    return a / b if a > 0 and b > 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-c", "--config", default="pipelines/fraud/pipeline.yaml")
    parser.add_argument("--events", type=int, default=100_000, help="drain backlog")
    parser.add_argument("--rate", type=float, default=2000.0, help="offered events/s")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the rate run")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument(
        "--threads", action="store_true", help="CPU per event by thread at the offered rate"
    )
    parser.add_argument(
        "--baseline",
        choices=sorted(BASELINES),
        default="passthrough",
        help="what the worker is paired with: the passthrough (the issue's targets) or the "
        "model passthrough (the pipeline's own work added: the worker's cost over its floor)",
    )
    parser.add_argument(
        "--subject",
        choices=("worker", "model"),
        default="worker",
        help="what is measured against the baseline: the worker, or the model passthrough "
        "(with the default baseline: the pipeline's own floor against the issue's targets)",
    )
    parser.add_argument("--bootstrap", help="a cluster to use (default: an embedded broker)")
    args = parser.parse_args()
    base, baseline = args.baseline, BASELINES[args.baseline]
    who = args.subject
    subject = WORKER if who == "worker" else BASELINES["model"]
    if subject == baseline:
        parser.error("--subject model needs --baseline passthrough: a side against itself")

    from streaming.dev.broker import EmbeddedBroker

    broker = None if args.bootstrap else EmbeddedBroker().start()
    bootstrap = args.bootstrap or broker.bootstrap  # type: ignore[union-attr]
    cfg = load_config(args.config, bootstrap=bootstrap)
    drain_ratio, drain_cpu, rate_cpu, p99 = [], [], [], []
    thread_runs: dict[str, list[dict[str, ThreadShare]]] = {base: [], who: []}
    try:
        with tempfile.TemporaryDirectory(prefix="efficiency-") as tmp:
            workdir = Path(tmp)
            print(
                f"{args.pairs} pairs, {who} against the {base} baseline; "
                f"drain {args.events:,} events; "
                f"offered {args.rate:,.0f}/s for {args.seconds:g} s; os.getloadavg at start "
                f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}",
                flush=True,
            )
            for i in range(args.pairs):
                first_worker = i % 2 == 1
                pd, wd = _pair(
                    lambda c: drain(cfg, workdir, c, args.events), first_worker, baseline, subject
                )
                pr, wr = _pair(
                    lambda c: offered(cfg, workdir, c, args.rate, args.seconds, args.threads),
                    first_worker,
                    baseline,
                    subject,
                )
                drain_ratio.append(_ratio(wd.rate, pd.rate))
                drain_cpu.append(_ratio(wd.cpu_us, pd.cpu_us))
                rate_cpu.append(_ratio(wr.cpu_us, pr.cpu_us))
                p99.append(_ratio(wr.p99_ms, pr.p99_ms))
                lost = pd.unmatched + wd.unmatched + pr.unmatched + wr.unmatched
                print(
                    f"pair {i + 1} ({who if first_worker else base} first): "
                    f"drain {pd.rate:,.0f} vs {wd.rate:,.0f} ev/s = {drain_ratio[-1]:.2f}; "
                    f"cpu {pd.cpu_us:.1f} vs {wd.cpu_us:.1f} us/ev = {drain_cpu[-1]:.2f}; "
                    f"at {args.rate:,.0f}/s cpu {pr.cpu_us:.1f} vs {wr.cpu_us:.1f} us/ev = "
                    f"{rate_cpu[-1]:.2f}, p99 {pr.p99_ms:.1f} vs {wr.p99_ms:.1f} ms = "
                    f"{p99[-1]:.2f}" + (f"; UNMATCHED {lost}" if lost else ""),
                    flush=True,
                )
                if args.threads:
                    for name, side in ((base, pr), (who, wr)):
                        thread_runs[name].append(side.threads)
                        print(
                            f"  {name} at {args.rate:,.0f}/s, us/ev by thread: "
                            f"{describe(side.threads)}",
                            flush=True,
                        )
    finally:
        if broker is not None:
            broker.stop()
    n = len(drain_ratio)
    print(f"{who} / {base} over {n} pairs:")
    for name, ratios, target, higher_is_better in (
        ("drain rate", drain_ratio, 0.90, True),
        ("cpu per event, drain", drain_cpu, 1.15, False),
        (f"cpu per event at {args.rate:,.0f}/s", rate_cpu, 1.30, False),
        (f"p99 at {args.rate:,.0f}/s", p99, 1.00, False),
    ):
        print("  " + target_line(name, ratios, target, higher_is_better))
    if args.threads and n:
        print(f"cpu per event at {args.rate:,.0f}/s by thread, medians (us):")
        for name, runs in thread_runs.items():
            print(f"  {name}: {medians(runs)}")


if __name__ == "__main__":
    main()
