"""The load-test scenarios: drain, steady, step, spike, soak, scale-out.

Each runs on topics of its own (see ``load.prepare``) with worker processes it starts and
stops, and returns a plain dict (JSON-able) that the report turns into tables and plots.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.load import (
    Ledger,
    LoadTestError,
    Reader,
    Sender,
    WorkerProc,
    output_span,
    prepare,
    remove_run_topics,
    wait_drained,
)
from streaming.config import PipelineConfig

Progress = Callable[[str], None]


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values.size else None


def _series(ledger: Ledger, t0: float, t1: float) -> dict[str, list[float | None]]:
    """Per second of send time: sent, matched, p50 and p99 latency (ms)."""
    seconds = max(1, int(np.ceil(t1 - t0)))
    out: dict[str, list[float | None]] = {"t": [], "sent": [], "p50_ms": [], "p99_ms": []}
    with ledger.lock:
        sent = np.array(list(ledger.sent.values()))
        arrived = np.array(list(ledger.arrived.values()))
    for s in range(seconds):
        lat = ledger.latencies_ms(t0 + s, t0 + s + 1)
        out["t"].append(s)
        out["sent"].append(int(((sent >= t0 + s) & (sent < t0 + s + 1)).sum()))
        out["p50_ms"].append(_pct(lat, 50))
        out["p99_ms"].append(_pct(lat, 99))
    out["outputs_per_s"] = [
        int(((arrived >= t0 + s) & (arrived < t0 + s + 1)).sum()) for s in range(seconds)
    ]
    return out


class _Run:
    """Topics, reader and workers of one scenario; ``close()`` stops everything."""

    def __init__(self, cfg: PipelineConfig, workdir: Path, tag: str, invalid_ratio: float):
        self.cfg, self.path = prepare(cfg, workdir, tag)
        self.workdir = workdir
        self.ledger = Ledger()
        self.sender = Sender(self.cfg, self.ledger, random.randrange(1 << 30), invalid_ratio)
        self.reader = Reader(self.cfg, self.ledger)
        self.workers: list[WorkerProc] = []

    def start_reader(self) -> None:
        self.reader.start()
        if not self.reader.ready.wait(60):
            raise LoadTestError("the reader of the predictions topic got no assignment in 60 s")

    def add_workers(self, n: int, members: int = 1, **kwargs: Any) -> None:
        """Start n worker processes (``kwargs``: WorkerProc's ``command`` and ``extra``), and
        wait until each has ``members`` children with partitions (a pool: its processes)."""
        new = [
            WorkerProc(self.path, self.workdir, len(self.workers) + i, **kwargs) for i in range(n)
        ]
        self.workers += new
        for w in new:
            w.wait_assigned(members=members)

    def matched(self, timeout: float) -> bool:
        return self.reader.wait_matched(self.sender.sent, timeout)

    def close(self) -> dict[str, Any]:
        codes = [w.stop() for w in self.workers]
        self.reader.stop.set()
        self.reader.join(10)
        remove_run_topics(self.cfg)
        batches = [
            (r.get("batch_size_mean", 0), r.get("batches", 0)) for r in self.reader.telemetry
        ]
        return {
            "batch_size_means": [[m, n] for m, n in batches if n],
            "sent": self.sender.sent,
            "matched": len(self.ledger.arrived),
            "unmatched": self.ledger.unmatched(),
            "duplicates": self.ledger.duplicates,
            "worker_exit_codes": codes,
        }


def drain(
    cfg: PipelineConfig,
    workdir: Path,
    progress: Progress,
    events: int,
    workers: int = 1,
    processes: int = 1,
) -> dict[str, Any]:
    """A backlog of ``events``; the time from the workers' start until it is all scored.
    ``processes``: each worker is a pool of that many (``streaming run --processes``)."""
    if processes == 1:
        return _drain(cfg, workdir, progress, events, workers, "drain", 0.01)
    result = _drain(
        cfg,
        workdir,
        progress,
        events,
        workers,
        "drain",
        0.01,
        extra=("--processes", str(processes)),
        members=processes,
    )
    return {**result, "processes": processes}


def passthrough_drain(
    cfg: PipelineConfig, workdir: Path, progress: Progress, events: int
) -> dict[str, Any]:
    """The I/O ceiling measured as ``drain`` measures the worker: the passthrough (no model)
    in a process of its own, its outputs read and timed as the worker's are."""
    return _drain(
        cfg,
        workdir,
        progress,
        events,
        1,
        "passthrough",
        0.0,
        command=("-m", "loadtests.baselines"),
        extra=("--events", str(events)),
    )


def _drain(
    cfg: PipelineConfig,
    workdir: Path,
    progress: Progress,
    events: int,
    workers: int,
    name: str,
    invalid_ratio: float,
    members: int = 1,
    **process: Any,
) -> dict[str, Any]:
    """The outputs are read only once the drain is over, and timed by when they were
    produced (their records' timestamps). A reader during the drain takes the CPU that is
    measured: on 2 cores it spent 5.6 us per event against the worker's 10 and the broker's
    10, and a pool, which would use that CPU, lost more to it than one process did."""
    run = _Run(cfg, workdir, name, invalid_ratio)
    try:
        run.sender.send(events, None)
        progress(f"{name}: backlog of {events:,} sent; starting {workers} process(es)")
        started = time.time()
        run.add_workers(workers, members, **process)
        assigned = time.time()
        drained = wait_drained(
            run.cfg,
            run.workers,
            events,
            max(120.0, events / 500),
            by_exit="command" in process,
            progress=progress,
        )
        run.start_reader()
        ok = run.matched(timeout=max(60.0, events / 10_000)) and drained
        with run.ledger.lock:
            stamps = list(run.ledger.produced.values())
    finally:
        counts = run.close()
    if counts["matched"] and not stamps:
        raise LoadTestError(f"the {name} run's outputs carry no timestamps to time it by")
    if stamps and min(stamps) < started - 0.05:
        raise LoadTestError(
            f"an output of the {name} run carries a time from before its workers started "
            f"({started - min(stamps):.2f} s): the drain is timed by when outputs were produced "
            "(their records' timestamps), so outputs must not be stamped with event time"
        )
    first, done = output_span(stamps, assigned) if stamps else (assigned, time.time())
    span = max(done - first, 1e-3)
    return {
        "scenario": name,
        "events": events,
        "workers": workers,
        "complete": ok,
        "seconds_from_start": round(done - started, 2),
        "seconds_from_assigned": round(done - assigned, 2),
        "events_per_s": round(events / span, 1),
        **counts,
    }


def _latency_run(
    cfg: PipelineConfig,
    workdir: Path,
    tag: str,
    phases: list[tuple[float, float]],
    progress: Progress,
    sample_rss: bool = False,
) -> tuple[_Run, dict[str, Any], list[tuple[float, float, float]]]:
    """Send (rate, seconds) phases to one running worker; return the run, counts and the
    phase boundaries as (rate, start, end) wall times."""
    run = _Run(cfg, workdir, tag, 0.0)
    bounds: list[tuple[float, float, float]] = []
    rss: list[tuple[float, float]] = []
    stop = threading.Event()
    try:
        run.start_reader()
        run.add_workers(1)
        time.sleep(1.0)  # past the broker's start transient on fresh topics (README)

        def sample() -> None:
            while not stop.is_set():
                mb = run.workers[0].rss_mb()
                if mb is not None:
                    rss.append((time.time(), mb))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        if sample_rss:
            sampler.start()
        for rate, seconds in phases:
            start = time.time()
            progress(f"{tag}: {rate:,.0f} events/s for {seconds:.0f} s")
            run.sender.send(int(rate * seconds), rate)
            bounds.append((rate, start, time.time()))
        run.matched(timeout=60)
    finally:
        stop.set()
        counts = run.close()
    counts["rss"] = [(round(t - bounds[0][1], 1), round(mb, 1)) for t, mb in rss] if bounds else []
    return run, counts, bounds


def steady(
    cfg: PipelineConfig, workdir: Path, progress: Progress, rate: float, seconds: float
) -> dict[str, Any]:
    run, counts, bounds = _latency_run(cfg, workdir, "steady", [(rate, seconds)], progress)
    _, t0, t1 = bounds[0]
    lat = run.ledger.latencies_ms(t0, t1)
    return {
        "scenario": "steady",
        "rate": rate,
        "seconds": seconds,
        "achieved_per_s": round(run.sender.sent / max(t1 - t0, 1e-6), 1),
        "p50_ms": _pct(lat, 50),
        "p99_ms": _pct(lat, 99),
        "max_ms": _pct(lat, 100),
        "series": _series(run.ledger, t0, t1 + 2),
        **counts,
    }


def step(
    cfg: PipelineConfig,
    workdir: Path,
    progress: Progress,
    rates: list[float],
    seconds: float,
    target_p99_ms: float,
) -> dict[str, Any]:
    """Rising rates, each on fresh topics and a fresh worker: the knee is the first rate whose
    p99 breaks the target (or that the worker cannot keep up with). Fresh topics per step keep
    a growing log out of the figure (the embedded broker's fetch walks it; see README)."""
    steps: list[dict[str, Any]] = []
    counts: dict[str, Any] = {"sent": 0, "matched": 0, "unmatched": 0, "duplicates": 0}
    batches: list[list[float]] = []
    for rate in rates:
        run, c, bounds = _latency_run(cfg, workdir, f"step{rate:g}", [(rate, seconds)], progress)
        for k in ("sent", "matched", "unmatched", "duplicates"):
            counts[k] += c[k]
        batches += c["batch_size_means"]
        _, t0, t1 = bounds[0]
        lat = run.ledger.latencies_ms(t0, t1)
        p99 = _pct(lat, 99)
        kept_up = run.sender.sent / max(t1 - t0, 1e-6) >= 0.95 * rate and c["unmatched"] == 0
        ok = kept_up and p99 is not None and p99 <= target_p99_ms
        steps.append({"rate": rate, "p50_ms": _pct(lat, 50), "p99_ms": p99, "ok": ok})
        if len(steps) >= 2 and not steps[-1]["ok"] and not steps[-2]["ok"]:
            break  # two failing rates in a row: past the knee, higher rates only take longer
    sustained = [s["rate"] for s in steps if s["ok"]]
    # The knee: the first failing rate above the highest that met the target (a single noisy
    # step below a passing one does not make a knee).
    top = max(sustained, default=0.0)
    knee = next((s["rate"] for s in steps if not s["ok"] and s["rate"] > top), None)
    return {
        "scenario": "step",
        "target_p99_ms": target_p99_ms,
        "steps": steps,
        "knee_rate": knee,
        "max_rate_within_target": max(sustained) if sustained else None,
        "batch_size_means": batches,
        **counts,
    }


def spike(
    cfg: PipelineConfig,
    workdir: Path,
    progress: Progress,
    rate: float,
    factor: float,
    seconds: float,
    target_p99_ms: float,
) -> dict[str, Any]:
    """Steady, a burst of ``factor`` times the rate, steady again: how long until the p99 of
    each second is back within the target. One topic throughout: on the embedded broker the
    growing log itself slows fetches (README), so recovery there reads worse than on Kafka."""
    phases = [(rate, seconds), (rate * factor, max(1.0, seconds / 2)), (rate, seconds * 2)]
    run, counts, bounds = _latency_run(cfg, workdir, "spike", phases, progress)
    t0, burst_end, t_end = bounds[0][1], bounds[1][2], bounds[2][2]
    series = _series(run.ledger, t0, t_end + 2)
    burst_p99 = _pct(run.ledger.latencies_ms(bounds[1][1], burst_end), 99)
    recovery: float | None = 0.0
    if burst_p99 is None or burst_p99 > target_p99_ms:
        # the first whole second after the burst whose p99 is back within the target
        recovery = None
        for s in range(int(np.ceil(burst_end - t0)), len(series["t"])):
            p99 = series["p99_ms"][s]
            if p99 is not None and p99 <= target_p99_ms:
                recovery = max(0.0, s + 1 - (burst_end - t0))
                break
    return {
        "scenario": "spike",
        "rate": rate,
        "factor": factor,
        "burst_p99_ms": burst_p99,
        "recovery_s": round(recovery, 1) if recovery is not None else None,
        "series": series,
        **counts,
    }


def soak(
    cfg: PipelineConfig, workdir: Path, progress: Progress, rate: float, seconds: float
) -> dict[str, Any]:
    """A long steady run: RSS and latency drift between its first and last fifth."""
    run, counts, bounds = _latency_run(
        cfg, workdir, "soak", [(rate, seconds)], progress, sample_rss=True
    )
    _, t0, t1 = bounds[0]
    fifth = (t1 - t0) / 5
    first = run.ledger.latencies_ms(t0, t0 + fifth)
    last = run.ledger.latencies_ms(t1 - fifth, t1)
    rss = [mb for _, mb in counts["rss"]]
    return {
        "scenario": "soak",
        "rate": rate,
        "seconds": seconds,
        "p99_first_fifth_ms": _pct(first, 99),
        "p99_last_fifth_ms": _pct(last, 99),
        "rss_start_mb": rss[0] if rss else None,
        "rss_end_mb": rss[-1] if rss else None,
        "rss_max_mb": max(rss) if rss else None,
        "series": _series(run.ledger, t0, t1 + 2),
        **counts,
    }


def scale_out(
    cfg: PipelineConfig,
    workdir: Path,
    progress: Progress,
    events: int,
    max_workers: int = 3,
    pool: bool = False,
) -> dict[str, Any]:
    """The same backlog drained by 1, 2, ... workers in one group: throughput per worker.
    ``pool``: by one worker of 1, 2, ... processes (``--processes``) instead."""
    if pool and max_workers > cfg.topics.partitions:
        raise LoadTestError(
            f"scale-out of a pool up to {max_workers} processes needs at least as many "
            f"partitions (topics.partitions is {cfg.topics.partitions})"
        )
    rows = []
    for n in range(1, max_workers + 1):
        if pool:
            progress(f"scale-out: one pool of {n} process(es)")
            result = drain(cfg, workdir, progress, events, processes=n)
        else:
            progress(f"scale-out: {n} worker(s)")
            result = drain(cfg, workdir, progress, events, workers=n)
        rows.append(
            {
                "workers": 1 if pool else n,
                "processes": n if pool else 1,
                "events_per_s": result["events_per_s"],
                "per_worker": round(result["events_per_s"] / n, 1),  # per process in a pool
                "complete": result["complete"],
                "unmatched": result["unmatched"],
                "duplicates": result["duplicates"],
            }
        )
    base = rows[0]["events_per_s"] or 1.0
    for r in rows:
        r["speedup"] = round(r["events_per_s"] / base, 2)
    return {"scenario": "scale-out", "events": events, "pool": pool, "rows": rows}
