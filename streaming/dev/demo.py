"""``streaming demo``: everything, bounded, with a live view and a summary.

Two phases, so that each figure means one thing: a backlog drained as fast as the worker goes
(throughput), then events sent live at a steady rate (end-to-end latency, event time to
acknowledged prediction). Latency on the embedded broker depends on its fetch quirk: see
README, "Latency and the broker".
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from streaming.cli.progress import Progress
from streaming.config import ConfigError, load_config
from streaming.dev.broker import BrokerError, EmbeddedBroker
from streaming.dev.produce import ProduceResult, produce_events
from streaming.kafka.topics import create_topics
from streaming.observability.latency import LatencyRecorder
from streaming.worker import StartupError, Worker, WorkerStats


@dataclass(frozen=True)
class DemoOptions:
    config: Path
    bootstrap: str | None
    events: int = 200_000
    invalid_ratio: float = 0.01
    live_events: int = 20_000
    live_rate: float = 2_000.0
    seed: int = 1
    timeout_s: float = 600.0
    format: str = "json"
    """``avro``: events Confluent-framed Avro, on a dev schema registry started here."""


def _line(phase: str, stats: WorkerStats, target: int) -> str:
    dl = sum(stats.dead_letters.values())
    return (
        f"[{phase}] consumed {stats.consumed:,}/{target:,}  predictions {stats.predictions:,}"
        f"  dead letters {dl:,}  {stats.rate():,.0f} events/s"
    )


def _wait_outputs(
    worker: Worker,
    target: int,
    phase: str,
    progress: Progress,
    deadline: float,
    failed: threading.Event,
) -> bool:
    while worker.stats.outputs < target:
        if failed.is_set() or time.monotonic() > deadline:
            return False
        progress.update(_line(phase, worker.stats, target))
        time.sleep(0.1)
    progress.done(_line(phase, worker.stats, target))
    return True


def run_demo(opts: DemoOptions) -> int:
    if not 0 <= opts.live_events <= opts.events:
        print("streaming demo: --live-events must be between 0 and --events", file=sys.stderr)
        return 2
    out = sys.stdout
    broker: EmbeddedBroker | None = None
    registry = None
    try:
        if opts.bootstrap is None:
            broker = EmbeddedBroker(log_path=Path(".demo-broker.log")).start()
            print(f"embedded broker on {broker.bootstrap} (log: .demo-broker.log)", file=out)
        cfg = load_config(opts.config, bootstrap=opts.bootstrap or broker.bootstrap)  # type: ignore[union-attr]
        # A fresh group and topic names per run, so a reused cluster never mixes two demos.
        suffix = f"demo-{int(time.time())}"
        if opts.format != "json":
            from streaming.dev.registry import DevRegistry

            registry = DevRegistry().start()
            print(f"schema registry (dev) on {registry.url}: events in {opts.format}", file=out)
        cfg = cfg.with_overrides(
            **{
                **(
                    {
                        "pipeline.format": opts.format,
                        "schema_registry": {"url": registry.url},
                    }
                    if registry is not None
                    else {}
                ),
                "kafka.group": f"{cfg.kafka.group}-{suffix}",
                **{
                    f"topics.{k}": f"{getattr(cfg.topics, k)}.{suffix}"
                    for k in ("input", "predictions", "dead_letters", "telemetry", "control")
                },
            }
        )
        created = create_topics(cfg)
        print(f"topics: {', '.join(created)} ({cfg.topics.partitions} partitions)", file=out)
        return _run(cfg, opts, out)
    except (BrokerError, ConfigError, StartupError, RuntimeError) as exc:
        print(f"streaming demo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if registry is not None:
            registry.stop()
        if broker is not None:
            broker.stop()


def _run(cfg, opts: DemoOptions, out) -> int:  # type: ignore[no-untyped-def]
    progress = Progress()
    backlog = opts.events - opts.live_events
    started = time.monotonic()
    deadline = started + opts.timeout_s

    # Phase 1: a backlog, produced before the worker starts, then drained.
    produced = ProduceResult()
    if backlog:
        produced = produce_events(
            cfg,
            backlog,
            invalid_ratio=opts.invalid_ratio,
            seed=opts.seed,
            on_progress=lambda n, s: progress.update(f"[produce] {n:,}/{backlog:,} events"),
        )
        progress.done(
            f"[produce] {backlog:,} events ({produced.invalid:,} invalid) in "
            f"{produced.seconds:.1f} s"
        )

    worker = Worker(cfg, idle_exit_s=None)
    failed = threading.Event()
    error: list[BaseException] = []

    def work() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            error.append(exc)
            failed.set()

    thread = threading.Thread(target=work, name="worker", daemon=True)
    thread.start()
    print(
        f"worker: model {cfg.model.name} "
        + ", ".join(f"{v.version} ({v.runtime}, {v.device})" for v in cfg.model.versions)
        + f"; max batch {cfg.batching.max_batch_size}",
        file=out,
    )
    ok = _wait_outputs(worker, backlog, "drain", progress, deadline, failed)
    drain = worker.stats
    drain_rate = drain.rate()
    drain_e2e = drain.end_to_end_ms

    # Phase 2: live events at a steady rate; latency is measured on these only.
    live_result = ProduceResult()
    live_all, live_steady = LatencyRecorder(), LatencyRecorder()
    if ok and opts.live_events:
        # The first second of events carries the start transient of a new producer and of the
        # embedded broker's lagging high watermark (README, "Latency and the embedded broker"):
        # the summary shows the whole phase and the steady part after it.
        drain.end_to_end_ms = live_all
        drain.steady_end_to_end_ms = live_steady
        drain.steady_from_ms = int(time.time() * 1000) + 1000
        result: list[ProduceResult] = []
        producer = threading.Thread(
            target=lambda: result.append(
                produce_events(
                    cfg,
                    opts.live_events,
                    rate=opts.live_rate,
                    invalid_ratio=opts.invalid_ratio,
                    seed=opts.seed + 1,
                    should_stop=failed.is_set,
                )
            ),
            daemon=True,
        )
        producer.start()
        ok = _wait_outputs(worker, opts.events, "live", progress, deadline, failed)
        producer.join(timeout=30)
        live_result = result[0] if result else live_result

    worker.stop()
    thread.join(timeout=cfg.worker.drain_timeout_s + 15)
    stats = worker.stats
    if error:
        print(f"streaming demo: worker failed: {error[0]}", file=sys.stderr)
        return 1
    total_invalid = produced.invalid + live_result.invalid
    dl = stats.dead_letters
    by_stage = ", ".join(f"{k} {v:,}" for k, v in sorted(dl.items())) or "none"
    print("", file=out)
    print("== streaming demo summary ==", file=out)
    print(f"events            {opts.events:,} produced ({total_invalid:,} invalid)", file=out)
    print(f"predictions       {stats.predictions:,}", file=out)
    print(f"dead letters      {sum(dl.values()):,} ({by_stage})", file=out)
    print(f"accounted for     {stats.outputs:,} of {opts.events:,} events", file=out)
    if backlog:
        print(
            f"drain throughput  {drain_rate:,.0f} events/s over a {backlog:,}-event backlog "
            f"(end-to-end p50 {drain_e2e.percentile(50):,.0f} ms: queueing, expected)",
            file=out,
        )
    if opts.live_events:
        print(
            f"live latency      p50 {live_all.percentile(50):.1f} ms, p99 "
            f"{live_all.percentile(99):.1f} ms end-to-end at {opts.live_rate:,.0f} events/s "
            f"({live_all.count:,} predictions, event time to acknowledged prediction)",
            file=out,
        )
        if live_steady.count:
            print(
                f"  from 2nd second  p50 {live_steady.percentile(50):.1f} ms, p99 "
                f"{live_steady.percentile(99):.1f} ms ({live_steady.count:,} predictions of "
                "events sent after the first second, which holds the broker's start transient)",
                file=out,
            )
        else:  # a live phase of a second or less has no steady part: say so, not "nan ms"
            print(
                "  from 2nd second  none: the live phase lasted a second or less "
                "(send more --live-events or lower --live-rate)",
                file=out,
            )
    decided = stats.decisions()
    if sum(decided.values()):
        total = sum(decided.values())
        shares = ", ".join(f"{d} {n / total:.2%} ({n:,})" for d, n in decided.items())
        print(f"decisions         {shares}", file=out)
        top = stats.reasons().most_common(3)
        print(
            "top reasons       "
            + (", ".join(f"{code} {n:,}" for code, n in top) or "none (no rule fired)"),
            file=out,
        )
    if stats.batches:
        print(
            f"batches           {stats.batches:,}, mean size {stats.batch_rows / stats.batches:.1f}"
            f" rows",
            file=out,
        )
    print(f"wall time         {time.monotonic() - started:.1f} s", file=out)
    if not ok or stats.outputs != opts.events:
        print(
            f"streaming demo: error: {opts.events - stats.outputs:,} events have no prediction "
            "or dead letter",
            file=sys.stderr,
        )
        return 1
    with contextlib.suppress(Exception):
        out.flush()
    return 0
