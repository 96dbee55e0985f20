"""The commands behind ``streaming COMMAND``; each imports what it needs when it runs, so
that ``streaming run`` loads neither the monitor (faust) nor the dev tools nor the load tests."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from streaming.config import ConfigError, PipelineConfig, load_config

if TYPE_CHECKING:
    from streaming.worker import Worker

DEFAULT_CONFIG = "pipelines/fraud/pipeline.yaml"


def fail(message: str, code: int = 2) -> int:
    print(f"streaming: error: {message}", file=sys.stderr)
    return code


def _load(args: argparse.Namespace) -> PipelineConfig:
    return load_config(args.config, bootstrap=getattr(args, "bootstrap", None))


def cmd_run(args: argparse.Namespace) -> int:
    from streaming.observability.logs import setup_logging
    from streaming.observability.metrics import WorkerMetrics
    from streaming.worker import Worker, default_worker_id

    cfg = _load(args)
    requested = args.processes if args.processes is not None else cfg.worker.processes
    if requested != 1:
        from streaming.pool.run import resolve_processes, run_pool

        processes = resolve_processes(requested)
        if processes > 1:
            return run_pool(args, cfg, processes)
    worker_id = default_worker_id()
    setup_logging(worker_id, args.log_level)
    metrics = WorkerMetrics(cfg.name)
    port = args.metrics_port if args.metrics_port is not None else cfg.worker.metrics_port
    worker = Worker(
        cfg,
        max_events=args.max_events,
        idle_exit_s=args.idle_exit,
        worker_id=worker_id,
        metrics=metrics,
    )
    if port:
        from streaming.observability.http import serve

        try:
            serve(port, metrics.registry, worker.healthz, worker.readyz)
        except OSError as exc:
            return fail(
                f"cannot serve metrics on port {port}: {exc}; choose another "
                "--metrics-port (or worker.metrics_port)"
            )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    from streaming.pool.status import start_reporter

    reporter = start_reporter(worker, metrics)  # only in a pool child
    code = _run_worker(worker)
    if reporter is not None:
        reporter.stop()
    if not worker.health.ok:
        # A hung model thread may still be inside torch or onnxruntime: tearing the
        # interpreter down under it crashed the process (SIGSEGV, measured). By now the worker
        # has drained, committed and closed its clients, so leave without the teardown.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run_worker(worker: Worker) -> int:
    """Run until stopped; the exit code (errors printed as the CLI prints them)."""
    from streaming.worker import FatalWorkerError, StartupError

    try:
        stats = worker.run()
    except StartupError as exc:
        return fail(str(exc))
    except FatalWorkerError as exc:
        return fail(f"{exc}; offsets were committed only up to what was delivered", exc.exit_code)
    logging.getLogger("streaming.worker").info(
        "stopped: %d consumed, %d predictions, %d dead letters",
        stats.consumed,
        stats.predictions,
        sum(stats.dead_letters.values()),
        extra={
            "consumed": stats.consumed,
            "predictions": stats.predictions,
            "dead_letters": dict(stats.dead_letters),
        },
    )
    return 0


def cmd_broker(args: argparse.Namespace) -> int:
    from streaming.dev.broker import BrokerError, EmbeddedBroker

    broker = EmbeddedBroker(args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker.start()
    except BrokerError as exc:
        return fail(f"{exc}; is port {args.port} free?", 1)
    print(
        f"embedded broker (Tansu, memory storage) on {broker.bootstrap}; Ctrl-C stops it",
        flush=True,
    )
    print(f"bootstrap: {broker.bootstrap}", flush=True)
    try:
        while not stop.wait(0.5):
            if broker.process is not None and broker.process.poll() is not None:
                return fail(f"the broker exited with code {broker.process.returncode}", 1)
    finally:
        broker.stop()
    return 0


def cmd_registry(args: argparse.Namespace) -> int:
    from streaming.dev.registry import DevRegistry

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        registry = DevRegistry(args.port, args.state).start()
    except OSError as exc:
        return fail(f"cannot serve the registry on port {args.port}: {exc}; choose another --port")
    except ValueError as exc:
        return fail(f"--state {args.state}: not a registry state file ({exc}); remove it", 1)
    state = f", state in {args.state}" if args.state else " (in memory)"
    print(f"schema registry on {registry.url}{state}; Ctrl-C stops it", flush=True)
    try:
        stop.wait()
    finally:
        registry.stop()
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streaming.kafka.topics import create_topics

    cfg = _load(args)
    try:
        result = create_topics(cfg, args.partitions)
    except RuntimeError as exc:
        return fail(str(exc), 1)
    for name, state in result.items():
        print(f"{state:8} {name}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from streaming.cli.progress import Progress
    from streaming.dev.produce import produce_events

    cfg = _load(args)
    progress = Progress()

    def show(sent: int, seconds: float) -> None:
        rate = sent / seconds if seconds > 0 else 0.0
        progress.update(f"produced {sent:,}/{args.events:,} events ({rate:,.0f}/s)")

    try:
        result = produce_events(
            cfg,
            args.events,
            rate=args.rate,
            invalid_ratio=args.invalid_ratio,
            seed=args.seed,
            on_progress=show,
            labels=args.labels,
            label_time_scale=args.label_time_scale,
        )
    except (ValueError, RuntimeError) as exc:
        return fail(str(exc), 1)
    progress.done(
        f"produced {result.produced:,} events ({result.invalid:,} invalid) to "
        f"{cfg.topics.input} in {result.seconds:.1f} s"
        + (f", {result.labels:,} labels to {cfg.topics.labels_topic}" if args.labels else "")
    )
    return 0


def cmd_route(args: argparse.Namespace) -> int:
    from streaming.rollout.control import ControlError, RoutingUpdate, describe, write_update

    cfg = _load(args)
    try:
        update = RoutingUpdate(
            weights=_pairs(args.set, "--set"), shadows=_pairs(args.shadow or [], "--shadow")
        )
        write_update(cfg, update)
    except (ControlError, ValueError) as exc:
        return fail(str(exc))
    except RuntimeError as exc:
        return fail(str(exc), 1)
    print(f"routing for {cfg.model.name} written to {cfg.topics.control}: {describe(update)}")
    return 0


def _pairs(items: list[str], flag: str) -> dict[str, float]:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"{flag} {item!r}: expected VERSION=NUMBER, e.g. {flag} v2=10")
        try:
            out[name] = float(value)
        except ValueError:
            raise ValueError(f"{flag} {item!r}: {value!r} is not a number") from None
    return out


def cmd_monitor(args: argparse.Namespace) -> int:
    from streaming.observability.logs import setup_logging
    from streaming.rollout.monitor.credentials import CredentialsError, monitor_credentials
    from streaming.rollout.monitor.rollout import MonitorStartError

    cfg = _load(args)
    try:
        monitor_credentials(cfg.kafka)
    except (CredentialsError, OSError) as exc:
        return fail(f"kafka security settings for the monitor: {exc}")
    if args.auto_rollback is not None:
        cfg = cfg.with_overrides(**{"monitor.auto_rollback": args.auto_rollback})
    setup_logging("monitor", args.log_level)
    _check_reachable(cfg)
    from streaming.rollout.monitor.app import run_monitor

    try:
        return run_monitor(
            cfg, max_windows=args.windows, duration_s=args.duration, log_level=args.log_level
        )
    except MonitorStartError as exc:
        return fail(str(exc))


def _check_reachable(cfg: PipelineConfig) -> None:
    """Exit 2 with the fix when the broker or the monitor's topics are not there."""
    from streaming.kafka.topics import require_topics

    t = cfg.topics
    wanted = (
        t.predictions,
        t.shadow_topic,
        t.telemetry,
        t.dead_letters,
        t.control,
        t.verdicts_topic,
        t.alerts_topic,
    )
    if cfg.monitor.labels:
        from streaming.rollout.monitor.labeljoin import changelog_topics

        wanted = (*wanted, t.labels_topic, t.quality_topic, *changelog_topics(cfg))
    try:
        require_topics(cfg, wanted, ConfigError)
    except ConfigError as exc:
        sys.exit(fail(str(exc)))


def cmd_loadtest(args: argparse.Namespace) -> int:
    try:
        from loadtests.cli import run
    except ImportError as exc:
        return fail(f"the load tests need their extras ({exc}): pip install 'streaming[loadtest]'")

    def load(bootstrap: str | None) -> PipelineConfig:
        return load_config(args.config, bootstrap=bootstrap or args.bootstrap)

    return run(args, load)


def cmd_demo(args: argparse.Namespace) -> int:
    from streaming.dev.demo import DemoOptions, run_demo

    options = DemoOptions(
        config=Path(args.config),
        bootstrap=args.bootstrap,
        events=args.events,
        invalid_ratio=args.invalid_ratio,
        live_events=args.live_events,
        live_rate=args.live_rate,
        seed=args.seed,
        format=args.format,
    )
    return run_demo(options)
