"""``streaming monitor``: the faust-streaming app that feeds a :class:`RolloutMonitor`.

Three agents read predictions (and shadow predictions), telemetry and dead letters in
batches; a timer closes windows, publishes a verdict per version per window and any alerts,
and, for a rollback, writes the new weights to the control topic, which every worker
applies within about a second. Faust is the right tool here (state, windows, timers, off
the hot path); the workers themselves do not use it.

Window state lives in memory: a restarted monitor resumes from its committed offsets, so a
window open at the restart is judged on the records that arrived after it (min_events keeps
a thin window from being judged at all).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import signal
import time
from collections.abc import AsyncIterable, Callable
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from streaming.config import PipelineConfig
from streaming.engine.outputs import DLQ_STAGE, DLQ_VERSION
from streaming.kafka import settings as kafka_settings
from streaming.observability.http import serve
from streaming.rollout.control import ControlReader, RoutingUpdate, describe, write_update
from streaming.rollout.monitor.credentials import monitor_credentials
from streaming.rollout.monitor.endoffsets import read_end_offsets
from streaming.rollout.monitor.fence import MonitorApp
from streaming.rollout.monitor.labels_app import LabelsWiring
from streaming.rollout.monitor.rollout import MonitorStartError, RolloutMonitor

log = logging.getLogger("streaming.monitor")


def _broker_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host.strip()}" for host in bootstrap.split(",") if host.strip())


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    items = headers.items() if isinstance(headers, dict) else headers
    for key, value in items:
        if key == name and value is not None:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def _loads(values: list[bytes]) -> list[dict[str, Any]]:
    out = []
    for value in values:
        try:
            record = json.loads(value)
        except (TypeError, ValueError):
            continue  # not ours: the monitor reports, it does not dead-letter
        if isinstance(record, dict) and "scored_ms" in record and "version" in record:
            out.append(record)
    return out


def build_app(
    cfg: PipelineConfig,
    monitor: RolloutMonitor,
    control: ControlReader,
    *,
    tick_s: float = 0.5,
    stop_when: Callable[[RolloutMonitor], bool] | None = None,
    on_tick: Callable[[list[dict[str, Any]], list[dict[str, Any]]], None] | None = None,
    registry: CollectorRegistry | None = None,
    on_label_verdicts: Callable[[list[dict[str, Any]]], None] | None = None,
) -> faust.App:
    """The faust app; ``stop_when(monitor)`` true ends it (bounded runs, tests)."""
    t = cfg.topics
    # MonitorApp: a restarted monitor must not commit past records it never applied (fence.py).
    app = MonitorApp(
        cfg.monitor.group or f"{cfg.kafka.group}-monitor",
        broker=_broker_url(cfg.kafka.bootstrap),
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,  # the topics are created by `streaming topics create`
        consumer_auto_offset_reset="earliest",
        # Joins a group in half the session timeout on some brokers (README, Latency and the
        # embedded broker).
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_commit_interval=1.0,
        producer_linger=0.05,
        # The label join writes a changelog record per event: large batches, few requests.
        producer_max_batch_size=1_048_576,
        broker_credentials=monitor_credentials(cfg.kafka),
    )
    # The table restore reads each changelog to its real end (endoffsets.py).
    app.read_end_offsets = functools.partial(
        read_end_offsets, kafka_settings.reader_settings(cfg.kafka, f"{app.conf.id}-tail")
    )
    predictions = app.topic(t.predictions, value_type=bytes)
    shadow = app.topic(t.shadow_topic, value_type=bytes)
    telemetry = app.topic(t.telemetry, value_type=bytes)
    dead_letters = app.topic(t.dead_letters, value_type=bytes)
    verdicts_out = app.topic(t.verdicts_topic, value_type=bytes)
    alerts_out = app.topic(t.alerts_topic, value_type=bytes)
    model_key = cfg.model.name.encode()
    labels = _labels_wiring(app, cfg, monitor, registry, on_label_verdicts)

    @app.agent(predictions)
    async def read_predictions(stream: AsyncIterable[bytes]) -> None:
        async for values in stream.take(2000, within=0.25):  # type: ignore[attr-defined]
            records = _loads(values)
            monitor.store.add_predictions(records, read_at_ms=int(time.time() * 1000))
            if labels is not None:
                labels.add_predictions(records)
                await labels.drain()

    @app.agent(shadow)
    async def read_shadow(stream: AsyncIterable[bytes]) -> None:
        async for values in stream.take(2000, within=0.25):  # type: ignore[attr-defined]
            monitor.store.add_predictions(_loads(values), shadow=True)

    @app.agent(telemetry)
    async def read_telemetry(stream: AsyncIterable[bytes]) -> None:
        async for value in stream:
            try:
                record = json.loads(value)
                monitor.store.add_telemetry(record)
            except (TypeError, ValueError, KeyError):
                log.debug("skipping a telemetry record that is not the workers'")

    @app.agent(dead_letters)
    async def read_dead_letters(stream: Any) -> None:
        async for event in stream.events():
            headers = event.headers
            ts_ms = int(event.message.timestamp * 1000)
            monitor.store.add_dead_letter(
                ts_ms, _header(headers, DLQ_STAGE) or "unknown", _header(headers, DLQ_VERSION)
            )

    @app.timer(interval=tick_s)
    async def tick() -> None:
        for message in control.poll(0):
            if message.update is None:
                continue
            if monitor.follow(message.update, message.produced_ms):
                log.info("routing in force: %s", describe(message.update))
            else:
                log.info("stale control record ignored: %s", describe(message.update))
        result = monitor.tick()
        for verdict in result.verdicts:
            await verdicts_out.send(key=model_key, value=json.dumps(verdict).encode())
            if verdict["verdict"] not in ("ok", "baseline"):
                log.info(
                    "window %d %s/%s: %s %s",
                    verdict["window_start_ms"],
                    verdict["model"],
                    verdict["version"],
                    verdict["verdict"],
                    "; ".join(verdict["reasons"]),
                )
        for alert in result.alerts:
            await alerts_out.send(key=model_key, value=json.dumps(alert).encode())
        if result.update is not None:
            started = time.monotonic()
            await asyncio.get_running_loop().run_in_executor(None, write_update, cfg, result.update)
            log.warning(
                "control record written in %.0f ms: %s",
                (time.monotonic() - started) * 1000,
                describe(result.update),
            )
        if on_tick is not None:
            on_tick(result.verdicts, result.alerts)
        if stop_when is not None and stop_when(monitor):
            os.kill(os.getpid(), signal.SIGTERM)  # the faust worker's own orderly shutdown

    return app


def _labels_wiring(
    app: faust.App,
    cfg: PipelineConfig,
    monitor: RolloutMonitor,
    registry: CollectorRegistry | None,
    on_verdicts: Callable[[list[dict[str, Any]]], None] | None,
) -> LabelsWiring | None:
    if not cfg.monitor.labels:
        return None

    async def write(update: RoutingUpdate) -> None:
        await asyncio.get_running_loop().run_in_executor(None, write_update, cfg, update)

    return LabelsWiring(
        app,
        cfg,
        monitor,
        partitions=_partitions(cfg),
        write_update=write,
        registry=registry,
        on_publish=on_verdicts,
    )


def _partitions(cfg: PipelineConfig) -> int:
    """The predictions topic's partition count: the join's tables match it."""
    meta = kafka_settings.cluster_metadata(cfg.kafka, MonitorStartError)
    topic = meta.topics.get(cfg.topics.predictions)
    return (
        len(topic.partitions) if topic is not None and topic.partitions else cfg.topics.partitions
    )


def run_monitor(
    cfg: PipelineConfig,
    *,
    max_windows: int | None = None,
    duration_s: float | None = None,
    log_level: str = "WARNING",
) -> int:
    """Run until SIGTERM, ``max_windows`` judged windows or ``duration_s``; return 0."""
    monitor = RolloutMonitor(cfg)
    started = time.monotonic()
    counts = {"verdicts": 0, "alerts": 0}

    def stop_when(m: RolloutMonitor) -> bool:
        if max_windows is not None and m.windows_judged >= max_windows:
            return True
        return duration_s is not None and time.monotonic() - started >= duration_s

    def on_tick(verdicts: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> None:
        counts["verdicts"] += len(verdicts)
        counts["alerts"] += len(alerts)
        for v in verdicts:
            print(_verdict_line(v), flush=True)
        for a in alerts:
            print(f"ALERT {a['kind']} {a['model']}/{a['version']}: {_alert_text(a)}", flush=True)

    def on_label_verdicts(verdicts: list[dict[str, Any]]) -> None:
        counts["verdicts"] += len(verdicts)
        for v in verdicts:
            print(
                f"labels window {v['window_start_ms']} {v['model']}/{v['version']:<8} "
                f"{v['verdict']:<12} {'; '.join(v['reasons'])}",
                flush=True,
            )

    registry = None
    if cfg.monitor.metrics_port is not None:
        registry = CollectorRegistry()
        serve(cfg.monitor.metrics_port, registry, _alive, _alive)
    control = ControlReader(cfg, "streaming-monitor")
    app = build_app(
        cfg,
        monitor,
        control,
        stop_when=stop_when,
        on_tick=on_tick,
        registry=registry,
        on_label_verdicts=on_label_verdicts,
    )
    worker = faust.Worker(app, loglevel=log_level, quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        control.close()
    print(
        f"monitor: {monitor.windows_judged} windows judged, {counts['verdicts']} verdicts, "
        f"{counts['alerts']} alerts, {len(monitor.rollbacks)} rollbacks, "
        f"{monitor.store.late} records late (after their window was judged: a longer "
        "monitor.grace_s counts them)",
        flush=True,
    )
    return 0


def _alive() -> tuple[bool, dict[str, object]]:
    return True, {}


def _verdict_line(v: dict[str, Any]) -> str:
    p99 = v.get("latency_p99_ms")
    psi = v.get("score_psi")
    return (
        f"window {time.strftime('%H:%M:%S', time.localtime(v['window_start_ms'] / 1000))} "
        f"{v['model']}/{v['version']:<8} {v['role']:<8} {v['verdict']:<12} "
        f"events {v['events']:>6}  flagged {v['flagged_share']:.2%}  "
        f"p99 {p99 if p99 is not None else '-'} ms  "
        f"score PSI {psi if psi is not None else '-'}"
        + (f"  ({'; '.join(v['reasons'])})" if v["reasons"] else "")
        + "".join(f"  [{n}]" for n in v.get("notes") or ())
    )


def _alert_text(a: dict[str, Any]) -> str:
    if "reasons" in a:
        return f"{a.get('action', '')}: " + "; ".join(a["reasons"])
    return str(a.get("reason", ""))
