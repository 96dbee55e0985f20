"""The label join inside the monitor's faust app: tables, the labels agent, the quality timer.

Faust only moves records and holds the tables here; the join is :class:`LabelJoin`, the
numbers :func:`window_quality`, the verdicts :class:`LabelJudge`.

The three tables are changelog-backed (``<monitor group>-<table>-changelog``, created by
``streaming topics create``), so a restarted monitor restores every prediction and label it
had, and replayed records set the same per-event values again: nothing is counted twice.
They are keyed by event id and partitioned by that key (``use_partitioner``), because the
timer writes to them too (expiry), outside any stream event. The monitor runs as one
instance per model (it judges whole windows), so it holds every partition.

Thread ownership: the agents and the timer run on faust's one event loop and are the only
writers of the tables, the join's index and the gauges' values; the HTTP thread only reads
the gauges.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterable, Callable
from typing import Any

import faust
from prometheus_client import CollectorRegistry, Gauge

from streaming.config import PipelineConfig
from streaming.rollout.control import RoutingUpdate
from streaming.rollout.monitor.label_verdicts import CaughtUp, LabelJudge, SettledWindows
from streaming.rollout.monitor.labeljoin import TABLES, LabelError, LabelJoin
from streaming.rollout.monitor.quality import window_quality
from streaming.rollout.monitor.rollout import RolloutMonitor, act_on_label_failure

log = logging.getLogger("streaming.monitor")

_DRAIN_S = 2.0
"""The longest a batch waits for its changelog writes to reach the Kafka client."""


class LabelMetrics:
    """Per-version gauges over the windows the monitor still holds (within the horizon)."""

    def __init__(self, registry: CollectorRegistry, pipeline: str, model: str) -> None:
        self.pipeline = pipeline
        self.model = model
        self._keys: dict[str, tuple[str, ...]] = {}
        labels = ["pipeline", "model", "version", "role"]
        self.precision = Gauge(
            "streaming_model_precision",
            "Share of flagged labelled predictions that were fraud (labels within the horizon)",
            labels,
            registry=registry,
        )
        self.recall = Gauge(
            "streaming_model_recall",
            "Share of labelled frauds the version flagged (labels within the horizon)",
            labels,
            registry=registry,
        )
        self.labelled = Gauge(
            "streaming_model_labelled_share",
            "Share of the version's predictions that have a label yet",
            labels,
            registry=registry,
        )
        self.unmatched = Gauge(
            "streaming_labels_unmatched",
            "Labels that matched no prediction, by reason (unknown_id, past_horizon)",
            ["pipeline", "model", "reason"],
            registry=registry,
        )

    def update(self, per_version: dict[str, dict[str, int]], roles: dict[str, str]) -> None:
        """Set the gauges; a version whose role changed (rolled back) loses its old series,
        or an alert on canaries would go on firing for a version no longer served."""
        for version, c in per_version.items():
            key = (self.pipeline, self.model, version, roles.get(version, "off"))
            old = self._keys.get(version)
            if old is not None and old != key:
                for gauge in (self.precision, self.recall, self.labelled):
                    with contextlib.suppress(KeyError):
                        gauge.remove(*old)
            self._keys[version] = key
            if c["tp"] + c["fp"]:
                self.precision.labels(*key).set(c["tp"] / (c["tp"] + c["fp"]))
            if c["tp"] + c["fn"]:
                self.recall.labels(*key).set(c["tp"] / (c["tp"] + c["fn"]))
            if c["predictions"]:
                self.labelled.labels(*key).set(c["labelled"] / c["predictions"])


class LabelsWiring:
    """Adds the labels agent, the tables and the quality timer to the monitor's app."""

    def __init__(
        self,
        app: faust.App,
        cfg: PipelineConfig,
        monitor: RolloutMonitor,
        *,
        partitions: int,
        write_update: Callable[[RoutingUpdate], Any],
        registry: CollectorRegistry | None = None,
        on_publish: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        m = cfg.monitor
        self.cfg = cfg
        self.monitor = monitor
        self.app = app
        self._write_update = write_update
        self._on_publish = on_publish
        self.metrics = (
            LabelMetrics(registry, cfg.name, cfg.model.name) if registry is not None else None
        )
        tables = [
            app.Table(
                name,
                default=None,
                partitions=partitions,
                use_partitioner=True,  # json keys and values: faust's default for tables
                changelog_topic=app.topic(
                    f"{app.conf.id}-{name}-changelog",
                    partitions=partitions,
                    key_serializer="json",
                    value_serializer="json",
                    internal=True,
                    acks=True,
                ),
            )
            for name in TABLES
        ]
        # faust flushes its send buffer whenever 100 records wait (and logs a warning each
        # time); the join writes a changelog record per event, so let more wait. Each batch
        # then waits for the buffer to reach the Kafka client (drain) before it is acked.
        app.producer.buffer.max_messages = 10_000
        self.join = LabelJoin(
            *tables,  # preds, pending
            window_ms=int(m.window_s * 1000),
            horizon_ms=int(m.label_horizon_s * 1000),
        )
        self.judge = LabelJudge(m)
        self.settled = SettledWindows(m.grace_s)
        self.caught_up = CaughtUp(m.grace_s)
        self._unjudged: set[tuple[str, int]] = set()
        """Changed windows whose predictions are not all in yet: judged once they are."""
        self.quality: dict[tuple[str, int], dict[str, Any]] = {}
        """Last published quality per (version, window start): what the verdicts compare."""
        self._rebuilt = False
        self._last_counts: dict[str, int] | None = None
        self.quality_out = app.topic(cfg.topics.quality_topic, value_type=bytes)
        self.verdicts_out = app.topic(cfg.topics.verdicts_topic, value_type=bytes)
        self.alerts_out = app.topic(cfg.topics.alerts_topic, value_type=bytes)
        labels_topic = app.topic(cfg.topics.labels_topic, value_type=bytes)
        app.agent(labels_topic, name="read_labels")(self._read_labels)
        app.on_rebalance_complete.connect(self._on_rebalanced)
        app.timer(interval=m.quality_interval_s, name="publish_quality")(self.publish)

    # ------------------------------------------------------------------ records in

    async def _on_rebalanced(self, sender: Any = None, **_: Any) -> None:
        """Tables restored for a new assignment: index them again. A restarted monitor is
        often assigned part of the partitions first (the killed member is still in the group)
        and the rest a rebalance later; an index built once would miss the later ones."""
        self._rebuilt = False

    def _ensure_rebuilt(self) -> bool:
        if not self._rebuilt and self.app.tables.recovery.completed.is_set():
            self.join.rebuild()
            self._rebuilt = True
            # what the restored windows still miss may come: wait as for new predictions
            self.settled.saw({start for _, start in self.join.windows})
            log.info("label join restored: %d predictions", len(self.join.preds))
        return self._rebuilt

    def add_predictions(self, records: list[dict[str, Any]]) -> None:
        """Predictions the monitor's predictions agent read (shadows are never judged)."""
        self._ensure_rebuilt()
        window_ms = self.join.window_ms
        starts = set()
        for r in records:
            if "event_id" in r and "score" in r:
                self.join.add_prediction(r)
                scored = int(r["scored_ms"])
                starts.add(scored - scored % window_ms)
        self.settled.saw(starts)

    async def drain(self) -> None:
        """Wait until the changelog writes of the batch are in the Kafka client.

        A batch's offsets become committable when the agent moves on, and faust's commit
        flushes the client first; but faust's own send buffer in front of it gives up flushing
        after 0.1 s without progress, so a kill -9 right after a commit could lose changelog
        records whose source offsets were committed (measured: one prediction in 6,000).
        """
        buffer = self.app.producer.buffer
        # Bounded: during a rebalance faust may hold its sends back until the agents are
        # idle, and an agent waiting here for them would never be (seen: a monitor stuck).
        deadline = time.monotonic() + _DRAIN_S
        while buffer.size and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    async def _read_labels(self, stream: AsyncIterable[bytes]) -> None:
        async for events in stream.take_events(2000, within=0.25):  # type: ignore[attr-defined]
            self._ensure_rebuilt()
            for event in events:
                m = event.message
                try:
                    self.join.add_label(json.loads(event.value), (m.partition, m.offset))
                except (TypeError, ValueError) as exc:  # LabelError is a ValueError
                    reason = exc if isinstance(exc, LabelError) else "not JSON"
                    log.warning("labels record refused: %s", reason)
            await self.drain()

    # ------------------------------------------------------------------ records out

    async def publish(self) -> None:
        """Re-publish changed windows, final ones once more, verdicts and rollbacks."""
        if not self._ensure_rebuilt():
            return
        now_ms = int(time.time() * 1000)
        threshold = self.cfg.model.threshold
        records = [window_quality(w, threshold, final=True) for w in self.join.expire(now_ms)]
        records += [window_quality(w, threshold, final=False) for w in self.join.take_dirty()]
        changed = []
        model_key = self.cfg.model.name.encode()
        for q in records:
            key = (q["version"], q["window_start_ms"])
            self.quality[key] = q
            changed.append(key)
            body = {"kind": "window", "model": self.cfg.model.name, **q}
            await self.quality_out.send(key=model_key, value=json.dumps(body).encode())
        counts = self.join.label_counts()
        if counts != self._last_counts:
            self._last_counts = counts
            body = {"kind": "labels", "model": self.cfg.model.name, "ts_ms": now_ms, **counts}
            await self.quality_out.send(key=model_key, value=json.dumps(body).encode())
        if self.metrics is not None:
            self._update_metrics(counts)
        self._unjudged.update(changed)
        caught_up = self._read_up_to_lag()  # every tick: its history must have no gaps
        ready = [k for k in self._unjudged if caught_up and self.settled.settled(k[1])]
        self._unjudged.difference_update(ready)
        self.settled.keep(start for _, start in self.join.windows)
        verdicts = self.judge.judge(
            self.quality,
            ready,
            model=self.cfg.model.name,
            baseline=self.monitor.baseline(),
            canaries=self.monitor.canaries(),
        )
        for v in verdicts:
            await self.verdicts_out.send(key=model_key, value=json.dumps(v).encode())
        for q in records:
            if q["final"]:
                self.quality.pop((q["version"], q["window_start_ms"]), None)
        if self._on_publish is not None:
            self._on_publish(verdicts)
        await self._act(verdicts, now_ms, model_key)

    def _read_up_to_lag(self) -> bool:
        """The predictions partitions read up to where they ended ``grace_s`` ago
        (:class:`CaughtUp`), from faust's read offsets and the client's cached high
        watermarks (no broker round trip; the embedded broker's watermark can trail its log
        by one batch, Kafka's does not)."""
        consumer = self.app.consumer
        topic = self.cfg.topics.predictions
        tps = [tp for tp in consumer.assignment() if tp.topic == topic]
        read = {tp: consumer._read_offset.get(tp) for tp in tps}  # faust's, as in fence.py
        try:
            ends = {tp: consumer.highwater(tp) for tp in tps}
        except AssertionError:  # aiokafka: "Partition is not assigned" (a rebalance under way)
            return False
        return self.caught_up.check(time.monotonic(), read, ends)

    async def _act(self, verdicts: list[dict[str, Any]], now_ms: int, key: bytes) -> None:
        for version in sorted({v["version"] for v in verdicts if v["verdict"] == "fail"}):
            windows = self.judge.failing_streak(version)
            if windows is None:
                continue
            last = max(
                (v for v in verdicts if v["version"] == version), key=lambda v: v["window_start_ms"]
            )
            alert, update = act_on_label_failure(self.monitor, last, windows, now_ms)
            self.judge.rolled_back.add(version)
            await self.alerts_out.send(key=key, value=json.dumps(alert).encode())
            if update is not None:
                await self._write_update(update)
                log.warning("rolled back %s on labels: %s", version, "; ".join(last["reasons"]))

    def _update_metrics(self, counts: dict[str, int]) -> None:
        assert self.metrics is not None
        per_version: dict[str, dict[str, int]] = {}
        for (version, _), q in self.quality.items():
            c = per_version.setdefault(
                version, {"tp": 0, "fp": 0, "fn": 0, "predictions": 0, "labelled": 0}
            )
            for k in c:
                c[k] += q[k]
        base = self.monitor.baseline()
        live = set(self.monitor.canaries())
        roles = {
            v: "baseline" if v == base else "canary" if v in live else "off" for v in per_version
        }
        self.metrics.update(per_version, roles)
        for reason in ("unknown_id", "past_horizon"):
            self.metrics.unmatched.labels(self.cfg.name, self.cfg.model.name, reason).set(
                counts[reason]
            )
