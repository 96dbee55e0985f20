"""The argument parser of ``streaming``. The load tests' own arguments are added only when the
command is ``loadtest``, so that no other command imports them."""

from __future__ import annotations

import argparse

from streaming.cli.commands import (
    DEFAULT_CONFIG,
    cmd_broker,
    cmd_demo,
    cmd_loadtest,
    cmd_monitor,
    cmd_produce,
    cmd_registry,
    cmd_route,
    cmd_run,
    cmd_topics,
)


def build_parser(load_tests: bool = False) -> argparse.ArgumentParser:
    """``load_tests``: add the load-test arguments (imports loadtests; only for loadtest)."""
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
    p.add_argument(
        "--processes",
        type=_processes,
        metavar="N|auto",
        help="worker processes in this pod (default worker.processes; auto: the cores the "
        "cgroup allows)",
    )
    p.add_argument("--log-level", default="INFO")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("broker", help="run the embedded Kafka-compatible broker (development)")
    p.add_argument("--port", type=int, default=9092)
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser(
        "registry", help="run a small Confluent-compatible Schema Registry (development)"
    )
    p.add_argument("--port", type=int, default=8081)
    p.add_argument(
        "--state", metavar="FILE", help="keep the schemas in this JSON file across restarts"
    )
    p.set_defaults(func=cmd_registry)

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
    p.add_argument(
        "--labels",
        action="store_true",
        help="also send each event's truth to the labels topic after a realistic delay",
    )
    p.add_argument(
        "--label-time-scale",
        type=_positive_float,
        default=1.0,
        metavar="X",
        help="divide the label delays (weeks) by X (default 1: real time)",
    )
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
    if load_tests:
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
    p.add_argument(
        "--format",
        choices=("json", "avro"),
        default="json",
        help="input events as JSON, or Confluent-framed Avro on a dev schema registry",
    )
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


def _processes(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of processes or 'auto'") from None
    if not 1 <= value <= 256:
        raise argparse.ArgumentTypeError("must be 1..256 (or 'auto')")
    return value
