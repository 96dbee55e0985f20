"""The inference stage: a thread per model version takes the batches its lane forms, scores
them, publishes the predictions with one delivery counter per chunk, dead-letters the rows the
model refuses (errors, non-finite scores, an open breaker, a passed deadline) and writes the
version's telemetry. Shadow rows are scored alike and published best effort."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

import numpy as np

from streaming.commit.delivery import ChunkDelivery
from streaming.config import PipelineConfig
from streaming.engine.dead_letters import DeadLetters, DeliveryFailed
from streaming.engine.decode import STAGE_INFERENCE, STAGE_TIMEOUT, Rejection
from streaming.engine.lane import Chunk
from streaming.engine.outputs import encode_json, encode_predictions
from streaming.engine.versions import ModelVersion
from streaming.kafka.sink import Publisher
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import WorkerStats
from streaming.observability.telemetry import add_scores, take_record

log = logging.getLogger("streaming.worker")


class Scorer:
    """The inference stage of one worker; ``publisher`` is set when its engine starts."""

    def __init__(
        self,
        config: PipelineConfig,
        worker_id: str,
        metrics: WorkerMetrics,
        stats: WorkerStats,
        dead_letters: DeadLetters,
        failed: DeliveryFailed,
        fail: Callable[[str], None],
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.metrics = metrics
        self.stats = stats
        self.dead_letters = dead_letters
        self.publisher: Publisher | None = None
        self._failed = failed
        self._fail = fail
        """Stops the worker without committing further (an inference thread died)."""

    def run(self, version: ModelVersion) -> None:
        """The version's inference thread: until its lane is closed."""
        lane = version.lane
        while True:
            chunks = lane.take(timeout=0.1)
            if chunks is None:
                return
            if chunks:
                try:
                    self._score(version, chunks)
                except Exception as exc:
                    log.exception("inference thread failed")
                    self._fail(f"inference thread for {version.config.version} failed: {exc!r}")
                    return
            self._telemetry(version)

    def _expire(self, chunks: list[Chunk]) -> list[Chunk]:
        """With ``deadline_policy: dead_letter``, rows that waited too long are dead-lettered."""
        b = self.config.batching
        if b.deadline_ms is None or b.deadline_policy != "dead_letter":
            return chunks
        now = time.monotonic()
        limit = b.deadline_ms / 1000.0
        keep = []
        for c in chunks:
            waited = now - c.enqueued
            if waited < limit:
                keep.append(c)
                continue
            rejection = Rejection(
                STAGE_TIMEOUT,
                f"waited {waited * 1000:.1f} ms in the batch queue, over "
                f"batching.deadline_ms ({b.deadline_ms:g})",
                "deadline",
            )
            for i in range(len(c)):
                self.dead_letters.row(c, i, rejection)
        return keep

    def _score(self, version: ModelVersion, chunks: list[Chunk]) -> None:
        cfg = self.config
        vc = version.config
        shadows = [c for c in chunks if c.shadow]
        if shadows:
            # a version can be a canary and a shadow at once: its lane carries both
            self._score_shadow(version, shadows)
            chunks = [c for c in chunks if not c.shadow]
        chunks = self._expire(chunks)
        if not chunks:
            return
        features = (
            chunks[0].features if len(chunks) == 1 else np.concatenate([c.features for c in chunks])
        )
        n = features.shape[0]
        started = time.monotonic()
        queue_delay = started - chunks[0].enqueued
        breaker = version.breaker
        if breaker is not None and not breaker.allow():
            rejection = Rejection(
                STAGE_INFERENCE,
                f"{vc.version}: circuit open after {breaker.failures} failing batches in a "
                f"row; retried in at most {breaker.cooldown_s:g} s",
                "circuit_open",
                vc.version,
            )
            for c in chunks:
                for i in range(len(c)):
                    self.dead_letters.row(c, i, rejection)
            return
        try:
            scores = version.runtime.predict(features)
            error = None
        except Exception as exc:  # noqa: BLE001 - a model error dead-letters its batch only
            scores, error = None, exc
        took = time.monotonic() - started
        if breaker is not None and breaker.record(error is None):
            log.error(
                "%s/%s failed %d batches in a row (last: %s): circuit open for %g s",
                cfg.model.name,
                vc.version,
                breaker.failures,
                error,
                breaker.cooldown_s,
            )
        labels = (cfg.name, cfg.model.name, vc.version)
        m = self.metrics
        m.batch_size.labels(*labels).observe(n)
        m.queue_delay.labels(*labels).observe(queue_delay)
        m.inference_time.labels(*labels).observe(took)
        self.stats.batches += 1
        self.stats.batch_rows += n
        self.stats.inference_s += took
        tele = version.telemetry
        tele["batches"] = tele.get("batches", 0) + 1
        tele["events"] = tele.get("events", 0) + n
        tele["max_batch"] = max(tele.get("max_batch", 0), n)
        tele["inference_s"] = tele.get("inference_s", 0.0) + took
        tele["queue_delay_max_s"] = max(tele.get("queue_delay_max_s", 0.0), queue_delay)

        if error is not None:
            tele["errors"] = tele.get("errors", 0) + n
            rejection = Rejection(
                STAGE_INFERENCE,
                f"{vc.version}: {type(error).__name__}: {error}"[:480],
                type(error).__name__,
                vc.version,
            )
            for c in chunks:
                for i in range(len(c)):
                    self.dead_letters.row(c, i, rejection)
            return
        assert scores is not None
        finite = np.isfinite(scores)
        add_scores(version, scores, cfg.model.threshold, finite)
        all_finite = bool(finite.all())
        start = 0
        scored_ms = int(time.time() * 1000)
        for c in chunks:
            part = scores[start : start + len(c)]
            part_finite = finite[start : start + len(c)]
            start += len(c)
            rows = range(len(c)) if all_finite else np.flatnonzero(part_finite).tolist()
            if not all_finite:
                for i in np.flatnonzero(~part_finite):
                    self.dead_letters.row(
                        c,
                        int(i),
                        Rejection(
                            STAGE_INFERENCE,
                            f"{vc.version}: non-finite score {part[i]!r}",
                            "non_finite_score",
                            vc.version,
                        ),
                    )
                if not rows:
                    continue
            payloads = encode_predictions(
                c.event_ids,
                c.ts_ms,
                np.where(part_finite, part, 0.0),
                model=cfg.model.name,
                version=vc.version,
                threshold=cfg.model.threshold,
                scored_ms=scored_ms,
                worker=self.worker_id,
            )
            self._publish_chunk(version, c, rows, payloads)

    def _score_shadow(self, version: ModelVersion, chunks: list[Chunk]) -> None:
        """Score shadow rows; publish to the shadow topic, best effort, nothing acknowledged."""
        cfg = self.config
        tele = version.telemetry
        features = (
            np.concatenate([c.features for c in chunks])
            if len(chunks) > 1
            else (chunks[0].features)
        )
        started = time.monotonic()
        try:
            scores = version.runtime.predict(features)
        except Exception:  # noqa: BLE001 - a failing shadow shows in telemetry only
            tele["errors"] = tele.get("errors", 0) + features.shape[0]
            return
        tele["shadow_events"] = tele.get("shadow_events", 0) + features.shape[0]
        tele["shadow_inference_s"] = tele.get("shadow_inference_s", 0.0) + (
            time.monotonic() - started
        )
        finite_all = np.isfinite(scores)
        add_scores(version, scores, cfg.model.threshold, finite_all)
        publisher = self.publisher
        assert publisher is not None
        topic = cfg.topics.shadow_topic
        start = 0
        scored_ms = int(time.time() * 1000)
        for c in chunks:
            part = scores[start : start + len(c)]
            finite = finite_all[start : start + len(c)]
            start += len(c)
            payloads = encode_predictions(
                c.event_ids,
                c.ts_ms,
                np.where(finite, part, 0.0),
                model=cfg.model.name,
                version=version.config.version,
                threshold=cfg.model.threshold,
                scored_ms=scored_ms,
                worker=self.worker_id,
            )
            for i in np.flatnonzero(finite).tolist():
                publisher.produce(topic, payloads[i], c.keys[i], c.headers[i], None)

    def _publish_chunk(
        self, version: ModelVersion, c: Chunk, rows: range | list[int], payloads: list[bytes]
    ) -> None:
        """Produce a chunk's predictions with one delivery counter for the whole chunk."""
        if isinstance(rows, range):
            ledgers, offsets, ts = c.ledgers, c.offsets, c.ts_ms
        else:
            ledgers = [c.ledgers[i] for i in rows]
            offsets = [c.offsets[i] for i in rows]
            ts = [c.ts_ms[i] for i in rows]
        delivery = ChunkDelivery(ledgers, offsets, ts, partial(self._chunk_delivered, version))
        publisher = self.publisher
        assert publisher is not None
        produce = publisher.produce
        topic, keys, headers = self.config.topics.predictions, c.keys, c.headers
        for i in rows:
            produce(topic, payloads[i], keys[i], headers[i], delivery)

    def _chunk_delivered(
        self, version: ModelVersion, delivery: ChunkDelivery, latencies_ms: np.ndarray | None
    ) -> None:
        """All predictions of a chunk are acknowledged (their offsets are already acked)."""
        if latencies_ms is None:
            self._failed(delivery.describe(), delivery.error)
            return
        stats = self.stats
        stats.predictions += delivery.size
        stats.last_output = time.monotonic()
        stats.end_to_end_ms.record_many(latencies_ms)
        if stats.steady_from_ms is not None:
            steady = latencies_ms[np.asarray(delivery.ts_ms) >= stats.steady_from_ms]
            stats.steady_end_to_end_ms.record_many(steady)
        version.end_to_end_ms.record_many(latencies_ms)
        version.predictions_metric.inc(delivery.size)

    def _telemetry(self, version: ModelVersion) -> None:
        """Telemetry is best effort: it holds no input offset back."""
        record = take_record(version, self.config, self.worker_id)
        if record is None:
            return
        assert self.publisher is not None
        self.publisher.produce(
            self.config.topics.telemetry,
            encode_json(record),
            self.config.model.name.encode(),
            None,
            None,
        )
