"""The ``streaming`` command: run, broker, topics, produce, demo.

Every error says what was wrong and what to do; exit codes: 0 done, 1 failed while running,
2 bad config, bad arguments or a start-up check that failed.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from streaming.config import ConfigError, PipelineConfig, load_config

DEFAULT_CONFIG = "pipelines/fraud/pipeline.yaml"


def _fail(message: str, code: int = 2) -> int:
    print(f"streaming: error: {message}", file=sys.stderr)
    return code


def _load(args: argparse.Namespace) -> PipelineConfig:
    return load_config(args.config, bootstrap=getattr(args, "bootstrap", None))


def cmd_run(args: argparse.Namespace) -> int:
    from streaming.observability.logs import setup_logging
    from streaming.observability.metrics import WorkerMetrics
    from streaming.worker import FatalWorkerError, StartupError, Worker, default_worker_id

    cfg = _load(args)
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
            return _fail(
                f"cannot serve metrics on port {port}: {exc}; choose another "
                "--metrics-port (or worker.metrics_port)"
            )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: worker.stop())
    try:
        stats = worker.run()
    except StartupError as exc:
        return _fail(str(exc))
    except FatalWorkerError as exc:
        return _fail(f"{exc}; offsets were committed only up to what was delivered", 1)
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
        return _fail(f"{exc}; is port {args.port} free?", 1)
    print(
        f"embedded broker (Tansu, memory storage) on {broker.bootstrap}; Ctrl-C stops it",
        flush=True,
    )
    print(f"bootstrap: {broker.bootstrap}", flush=True)
    try:
        while not stop.wait(0.5):
            if broker.process is not None and broker.process.poll() is not None:
                return _fail(f"the broker exited with code {broker.process.returncode}", 1)
    finally:
        broker.stop()
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streaming.kafka.topics import create_topics

    cfg = _load(args)
    try:
        result = create_topics(cfg, args.partitions)
    except RuntimeError as exc:
        return _fail(str(exc), 1)
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
        )
    except (ValueError, RuntimeError) as exc:
        return _fail(str(exc), 1)
    progress.done(
        f"produced {result.produced:,} events ({result.invalid:,} invalid) to "
        f"{cfg.topics.input} in {result.seconds:.1f} s"
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
        return _fail(str(exc))
    except RuntimeError as exc:
        return _fail(str(exc), 1)
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
        return _fail(f"kafka security settings for the monitor: {exc}")
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
        return _fail(str(exc))


def _check_reachable(cfg: PipelineConfig) -> None:
    """Exit 2 with the fix when the broker or the monitor's topics are not there."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    from streaming.kafka import settings as kafka

    try:
        meta = AdminClient(kafka.admin_settings(cfg.kafka)).list_topics(timeout=10)
    except KafkaException as exc:
        sys.exit(_fail(f"cannot reach Kafka at {cfg.kafka.bootstrap}: {exc}"))
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
    missing = [n for n in wanted if n not in meta.topics]
    if missing:
        sys.exit(
            _fail(
                f"topics missing on {cfg.kafka.bootstrap}: {', '.join(missing)}; create them "
                "with: streaming topics create -c CONFIG"
            )
        )


def cmd_loadtest(args: argparse.Namespace) -> int:
    try:
        from loadtests.cli import run
    except ImportError as exc:
        return _fail(f"the load tests need their extras ({exc}): pip install 'streaming[loadtest]'")

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
    )
    return run_demo(options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streaming", description="Streaming inference workers on Kafka."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            default=DEFAULT_CONFIG,
            help=f"pipeline config (default {DEFAULT_CONFIG})",
        )
        p.add_argument(
            "--bootstrap",
            help="Kafka bootstrap servers; overrides the config and STREAMING_BOOTSTRAP",
        )

    p = sub.add_parser("run", help="run a worker")
    with_config(p)
    p.add_argument("--max-events", type=_positive_int, help="stop after this many events")
    p.add_argument(
        "--idle-exit",
        type=_positive_float,
        metavar="SECONDS",
        help="stop after this long with no new events",
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (development)")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("topics", help="manage the pipeline's topics")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = tsub.add_parser("create", help="create the pipeline's topics (existing ones are kept)")
    with_config(c)
    c.add_argument(
        "--partitions",
        type=_positive_int,
        help="partitions of the input, prediction and dead-letter topics",
    )
    c.set_defaults(func=cmd_topics)

    p = sub.add_parser("produce", help="produce synthetic events")
    with_config(p)
    p.add_argument("--events", type=_non_negative_int, required=True)
    p.add_argument("--rate", type=_positive_float, help="events/s (default: as fast as possible)")
    p.add_argument("--invalid-ratio", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_produce)

    p = sub.add_parser("route", help="change routing weights and shadows live (control topic)")
    with_config(p)
    p.add_argument(
        "--set",
        action="append",
        required=True,
        metavar="VERSION=WEIGHT",
        help="relative weight of a version; repeat for each version",
    )
    p.add_argument(
        "--shadow",
        action="append",
        metavar="VERSION=SHARE",
        help="share (0..1) of traffic a version also scores as a shadow",
    )
    p.set_defaults(func=cmd_route)

    p = sub.add_parser(
        "monitor", help="per-version windows, verdicts, drift and automatic rollback (faust)"
    )
    with_config(p)
    p.add_argument("--windows", type=_positive_int, help="stop after judging this many windows")
    p.add_argument("--duration", type=_positive_float, metavar="SECONDS", help="stop after this")
    roll = p.add_mutually_exclusive_group()
    roll.add_argument(
        "--auto-rollback",
        dest="auto_rollback",
        action="store_const",
        const=True,
        default=None,
        help="set a failing canary's weight to 0 (overrides monitor.auto_rollback)",
    )
    roll.add_argument("--no-auto-rollback", dest="auto_rollback", action="store_const", const=False)
    p.add_argument("--log-level", default="WARNING")
    p.set_defaults(func=cmd_monitor)

    p = sub.add_parser(
        "loadtest", help="load-test scenarios with baselines, a report and capacity planning"
    )
    with_config(p)
    from loadtests.cli import add_arguments

    add_arguments(p)
    p.set_defaults(func=cmd_loadtest)

    p = sub.add_parser("demo", help="broker, topics, worker and events, bounded, with a summary")
    with_config(p)
    p.add_argument(
        "--events", type=_positive_int, default=200_000, help="events in all (default 200,000)"
    )
    p.add_argument("--invalid-ratio", type=float, default=0.01)
    p.add_argument(
        "--live-events",
        type=_non_negative_int,
        default=20_000,
        help="of the events, how many are sent live at --live-rate for latency",
    )
    p.add_argument("--live-rate", type=_positive_float, default=2_000.0)
    p.add_argument("--seed", type=int, default=1)
    p.set_defaults(func=cmd_demo)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
