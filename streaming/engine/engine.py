"""The engine: everything between the source and the sink, driven by ``submit(messages)``.

The worker feeds it from its poll loop; the engine benchmark and the fuzz tests feed it
in-memory messages through a sink that acknowledges at once. All three drive it the same way:
``start()``, ``submit()`` from one feeding thread, ``offsets.wait_drained()``, ``close()``.

For each batch submitted (on the feeding thread): register every message in its partition's
ledger, decode and validate, compute the pipeline's state features (streaming.state, if it
declares a state stage), route each event to a version (sticky by key) and copy a share to
shadows, preprocess per version, copy the record fields a decision graph's rules read into
columns, and queue the chunk on the version's lane (with a graph: all of it on the first
version's, whose thread runs the graph). Each version's
inference thread (streaming.engine.scoring) takes it from there; a watchdog thread
(streaming.engine.watchdog) times out a model call that hangs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from streaming.commit.ledger import OffsetTracker, PartitionLedger
from streaming.config import PipelineConfig
from streaming.decision.config import DECISIONS
from streaming.decision.stage import DecideStage, build_decide_stage
from streaming.engine.chunks import ChunkBuilder
from streaming.engine.dead_letters import DeadLetters
from streaming.engine.inline import InlinePolicy
from streaming.engine.outcomes import Outcomes
from streaming.engine.output_variants import PrimaryOutput, ShadowOutput
from streaming.engine.preprocess import preprocess
from streaming.engine.process_tuning import ProcessTuning
from streaming.engine.route import Router
from streaming.engine.scoring import Scorer
from streaming.engine.shadows import ShadowCopies
from streaming.engine.types import Sink, SourceMessage
from streaming.engine.versions import ModelVersion, load_version
from streaming.engine.watchdog import Watchdog
from streaming.errors import Faults, Health
from streaming.formats.errors import DecodeDeferred
from streaming.formats.outputs import make_prediction_encoder
from streaming.formats.select import make_decoder
from streaming.kafka.limits import OutputLimits
from streaming.observability import telemetry
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import WorkerStats
from streaming.observability.threads import named_thread
from streaming.pipeline import PipelineSpec, load_pipeline
from streaming.rollout.control import RoutingUpdate, describe
from streaming.state import StateStage
from streaming.tracing.stamps import (
    ChunkTimes,
    refused_row,
    undecoded_row,
)

log = logging.getLogger("streaming.worker")


class Engine:
    """Decode, route, preprocess, batch, score and publish; offsets acked as outputs land."""

    def __init__(
        self,
        config: PipelineConfig,
        sink: Sink,
        *,
        worker_id: str = "engine",
        pipeline: PipelineSpec | None = None,
        metrics: WorkerMetrics | None = None,
        faults: Faults | None = None,
        stats: WorkerStats | None = None,
        limits: OutputLimits | None = None,
        health: Health | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.sink = sink
        self.pipeline = pipeline or load_pipeline(config.pipeline.module)
        self.metrics = metrics or WorkerMetrics(config.name)
        self.faults = faults or Faults()
        self.health = health or Health()
        """Not-fatal liveness trouble (a hung model call): /healthz fails, scoring goes on."""
        self.stats = stats or WorkerStats()
        self.offsets = OffsetTracker()
        """The ledgers: written here (register) and by delivery callbacks (ack); the committer
        reads their commit points."""
        limits = limits or OutputLimits.unlimited()
        self.tracer = None
        """Tail-sampled spans (tracing.enabled): decided on the delivery thread."""
        if config.tracing.enabled:
            from streaming.tracing.tracer import Tracer  # imports OpenTelemetry: only when on

            self.tracer = Tracer(config, self.metrics, self.stats)
        outcomes = Outcomes(config, self.stats, self.metrics, self.faults)
        self.dead_letters = DeadLetters(
            config, self.worker_id, sink, outcomes, limits, tracer=self.tracer
        )
        self._decide: DecideStage | None = None
        """Built at start (it checks the graph against the loaded models); read-only after."""
        self._scorer = Scorer(
            config,
            self.worker_id,
            sink,
            PrimaryOutput(
                config, sink, self.dead_letters, outcomes, self.metrics, limits, self.tracer
            ),
            ShadowOutput(config, sink, limits),
            self.faults,
            make_prediction_encoder(config),
            traced=self.tracer is not None,
            decisions_counter=tuple(  # type: ignore[arg-type]
                self.metrics.decisions.labels(config.name, config.model.name, d) for d in DECISIONS
            ),
        )
        # json or a framed format, chosen once; a framed one checks its registry answers
        # (StartupError) and waits out an outage mid-stream unless ``should_stop`` says stop.
        self._decoder = make_decoder(config, self.pipeline, should_stop)
        self._tuning = ProcessTuning(
            config.worker.gil_switch_interval_ms, config.worker.gc_young_threshold
        )
        self.versions: list[ModelVersion] = []
        self._threads: list[threading.Thread] = []
        self._watchdog: Watchdog | None = None
        self._router: Router | None = None
        self._chunks = ChunkBuilder(self.pipeline)
        self._shadows = ShadowCopies(config, self.metrics, self._chunks)
        self._inline = InlinePolicy()
        """Which chunks the feeding thread scores itself (worker.inline_max_rows)."""
        self._consumed = self.metrics.events_consumed.labels(config.name, config.topics.input)
        self.state = StateStage(self.pipeline.state) if self.pipeline.state is not None else None
        """Per-key features per partition (feeding thread only: submit and the rebalance
        callbacks, which librdkafka runs inside the feeding thread's poll)."""

    def start(self) -> None:
        """Load and warm the models, then start the sink and the inference threads."""
        cfg = self.config
        self.versions = [
            load_version(cfg, v, self.pipeline, self.metrics) for v in cfg.model.versions
        ]
        self.stats.scoring = [v.totals for v in self.versions]
        self._decide = build_decide_stage(cfg, self.versions, self.pipeline)
        self._scorer.decide = self._decide
        self._chunks.decide = self._decide
        self._init_metric_series()
        self.apply_routing(
            RoutingUpdate(
                weights={v.version: v.weight for v in cfg.model.versions},
                shadows={
                    v.version: v.shadow_share for v in cfg.model.versions if v.shadow_share > 0
                },
            ),
            source="config",
        )
        telemetry.warm_up()
        # after loading and warm-up: what exists now lives as long as the process
        self._tuning.apply()
        self.sink.start()
        # with a graph, the first version's thread runs it all (streaming.decision.stage)
        for v in self.versions[:1] if self._graph_on else self.versions:
            thread = named_thread(self._scorer.run, f"infer-{v.name}", args=(v,))
            thread.start()
            self._threads.append(thread)
        self._watchdog = Watchdog(self.versions, self.dead_letters, self.health, cfg.model.name)
        self._watchdog.start()
        self._inline.start(cfg)

    @property
    def _graph_on(self) -> bool:
        return self.config.decision.graph is not None

    def _init_metric_series(self) -> None:
        """Counters that only move on trouble exist at 0 from the start, so that rate() and
        the alerts on them see an increase from the first one (not from the second)."""
        cfg, m = self.config, self.metrics
        m.control_refused.labels(cfg.name)
        m.delivery_errors.labels(cfg.name, "?")
        for v in cfg.model.versions:
            m.shadow_shed.labels(cfg.name, cfg.model.name, v.version)
            m.batch_size.labels(cfg.name, cfg.model.name, v.version)

    def apply_routing(self, update: RoutingUpdate, source: str) -> None:
        """Route by new weights and shadows from the next submit on (feeding thread only)."""
        cfg = self.config
        names = [v.version for v in cfg.model.versions]
        router = Router(names, update.weights)
        by_name = {v.name: v for v in self.versions}
        self._router = router
        self._shadows.versions = [
            (by_name[n], share) for n, share in update.shadows.items() if share > 0
        ]
        total = sum(router.weights.values())
        for name in names:
            self.metrics.routing_weight.labels(cfg.name, cfg.model.name, name).set(
                router.weights[name] / total
            )
        if self._graph_on and source != "config":
            log.warning(
                "routing from %s has no effect: with decision.graph every row goes through "
                "the graph (its switch nodes choose the models)",
                source,
            )
        log.info(
            "routing applied from %s: %s",
            source,
            describe(update),
            extra={"weights": update.weights, "shadows": update.shadows},
        )

    def submit(self, messages: Sequence[SourceMessage]) -> None:
        """One poll batch (without consumer errors): register, decode, route, preprocess,
        queue for inference. Blocks while a lane is full: backpressure on the caller."""
        if not messages:
            return
        self._inline.submitting(len(messages))
        try:
            self._submit(messages)
        finally:
            self._inline.submitted()

    def _submit(self, messages: Sequence[SourceMessage]) -> None:
        polled = time.time() if self.tracer is not None else 0.0
        stats = self.stats
        if stats.first_consumed is None:
            stats.first_consumed = time.monotonic()
        stats.consumed += len(messages)
        self._consumed.inc(len(messages))

        ledgers = self.offsets.register(messages)
        try:
            idx, records, rejected = self._decoder.decode(messages)
        except DecodeDeferred as exc:  # stopping in a registry outage: left uncommitted
            log.warning("%s: %d events left for the next run", exc, len(messages))
            return
        times = None
        if self.tracer is not None:
            times = ChunkTimes(polled, time.time())
            undecoded = ChunkTimes(polled)
            for i, rejection in rejected:
                trace = undecoded_row(messages[i], undecoded)
                self.dead_letters.message(messages[i], ledgers[i], rejection, trace)
        else:
            for i, rejection in rejected:
                self.dead_letters.message(messages[i], ledgers[i], rejection)
        if not records:
            return
        msgs = [messages[i] for i in idx]
        led = [ledgers[i] for i in idx]
        assert self._router is not None, "the engine is not started"
        state = self.state.compute(msgs, records) if self.state is not None else None
        now = time.monotonic()
        if len(self.versions) == 1 or self._graph_on:
            self._queue(self.versions[0], msgs, records, led, now, times, state)
            if self._shadows:
                self._shadows.queue(self._router, msgs, records, led, now, state)
            return
        routes = self._router.route([m.key() for m in msgs])
        for vi, version in enumerate(self.versions):
            rows = np.flatnonzero(routes == vi)
            if rows.size:
                self._queue(
                    version,
                    [msgs[r] for r in rows],
                    [records[r] for r in rows],
                    [led[r] for r in rows],
                    now,
                    times,
                    None if state is None else state[rows],
                )
        if self._shadows:
            self._shadows.queue(self._router, msgs, records, led, now, state)

    def _queue(
        self,
        version: ModelVersion,
        msgs: list[Any],
        records: list[Any],
        ledgers: list[PartitionLedger],
        enqueued: float,
        times: ChunkTimes | None = None,
        state: np.ndarray | None = None,
    ) -> None:
        """Primary rows: preprocess, dead-letter what it refuses, queue the rest (blocking)."""
        feats = preprocess(version.preprocessor, records, state)
        for i, rejection in feats.rejected:
            trace = (
                None if times is None else refused_row(msgs[i], records[i], times, self.pipeline)
            )
            self.dead_letters.message(msgs[i], ledgers[i], rejection, trace)
        if not feats.rows:
            return
        if not feats.complete:
            rows = feats.rows
            msgs = [msgs[i] for i in rows]
            records = [records[i] for i in rows]
            ledgers = [ledgers[i] for i in rows]
            state = None if state is None else state[rows]
        if version.sketch is not None:
            version.sketch.add(records, self._state_columns(state))
        chunk = self._chunks.build(feats.matrix, msgs, records, ledgers, enqueued)
        if times is not None and self.tracer is not None:
            chunk.times = ChunkTimes(times.polled, times.decoded, time.time())
            self.tracer.stamp(chunk)
        # not with shadows, which a control update may add mid-stream
        if self._inline.wants(len(chunk)) and not self._shadows and version.lane.claim():
            try:
                self._scorer.score_inline(version, chunk)
            finally:
                version.lane.release()
            return
        if not version.lane.put(chunk):  # the version hung: its lane takes nothing more
            assert version.watch.hung is not None
            self.dead_letters.rows(chunk, range(len(chunk)), version.watch.hung)

    def _state_columns(self, state: np.ndarray | None) -> dict[str, np.ndarray] | None:
        """The state features by name, for the drift sketch (it bins them like fields)."""
        if state is None or self.pipeline.state is None:
            return None
        return {name: state[:, i] for i, name in enumerate(self.pipeline.state.names)}

    def revoked(self, partitions: set[tuple[str, int]]) -> None:
        """Partitions revoked or lost: their state goes (the next owner rebuilds it)."""
        if self.state is not None:
            for topic, partition in partitions:
                self.state.drop(topic, partition)

    def stop_scoring(self, timeout: float = 10.0) -> None:
        """Close the lanes (what is queued is still scored) and wait for the threads, but
        not for a hung version's (it cannot be stopped; its rows were answered already)."""
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        for v in self.versions:
            v.lane.close()
        for v, thread in zip(self.versions, self._threads, strict=False):
            if v.watch.hung is None:
                thread.join(timeout=timeout)
        self.dead_letters.close()

    def close(self) -> None:
        """Stop the inference threads and put the process tuning back (the sink is the
        owner's to close: exactly-once commits its last transaction first)."""
        self.stop_scoring()
        self._tuning.restore()
        close_decoder = getattr(self._decoder, "close", None)  # a framed format's registry
        if close_decoder is not None:
            close_decoder()
        if self.tracer is not None:
            self.tracer.close()
