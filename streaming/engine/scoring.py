"""The inference stage: a thread per model version takes the batches its lane forms, scores
them and decides (streaming.decision: one model's thresholds, or the whole decision graph on
the first version's thread), and hands the results to the chunk's output variant (primary or
shadow, see streaming.engine.output_variants): published, or refused with a reason (model
error, non-finite score, open breaker, passed deadline). It also writes the version's
telemetry, and its decision and reason counts (``totals``).

With a cheap explainer (``reasons.when``), the batch's rows at or above review are explained
before it is published. With another, a batch is published in two steps: first every row that
needs no explanation and is not behind a held row of its key, then, once the explainer ran on
the rows at or above review, those rows and the ones they held back, in input order
(streaming.engine.explained). The held rows of several batches may wait for one explainer call
while rows wait in the lane (streaming.engine.explain_backlog); their keys stay held
meanwhile, so a key's predictions stay in input order.

Each version's thread owns that version's interval counts, totals, explain backlog and breaker
(but for the watchdog's one flag, ``hold_open``). Each model call is watched
(streaming.engine.calls): its results are given only if the thread still holds the call's
claim when it returns; a call that ran past ``worker.inference_timeout_s`` is the watchdog's to
answer (streaming.engine.watchdog); held rows of earlier calls are not (explain_backlog).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from streaming.config import PipelineConfig
from streaming.decision.columns import concat
from streaming.decision.decide import Decided
from streaming.decision.stage import DecideStage
from streaming.engine.explained import ExplainedRows
from streaming.engine.output_variants import PrimaryOutput, ShadowOutput
from streaming.engine.outputs import encode_json, encode_predictions
from streaming.engine.types import STAGE_INFERENCE, STAGE_TIMEOUT, Chunk, Rejection, Sink
from streaming.engine.versions import ModelVersion
from streaming.errors import Faults
from streaming.observability.telemetry import IntervalCounts, build_record
from streaming.tracing.stamps import BatchStamp

log = logging.getLogger("streaming.worker")

Output = PrimaryOutput | ShadowOutput

_IDLE_WAIT_S = 5.0
"""Longest sleep of an idle inference thread; puts and close wake it at once."""


class Scorer:
    """The inference stage of one engine; ``run(version)`` is a version's thread."""

    def __init__(
        self,
        config: PipelineConfig,
        worker_id: str,
        sink: Sink,
        primary: PrimaryOutput,
        shadow: ShadowOutput,
        faults: Faults,
        encode: Callable[..., list[bytes]] = encode_predictions,
        traced: bool = False,
        decisions_counter: tuple[Any, Any, Any] | None = None,
    ) -> None:
        self.config = config
        self._encode = encode
        """outputs.format's encoder (streaming.formats.outputs), chosen once at start."""
        self.worker_id = worker_id
        self._sink = sink
        self._primary = primary
        self._shadow = shadow
        self._faults = faults
        self._traced = traced
        th = config.decision.thresholds(config.model.threshold)
        self.decide = DecideStage(th)
        """Replaced by the engine at start (the graph's needs the loaded models); read-only
        after, so the inference threads share it."""
        self._decisions = decisions_counter
        """Per decision code: the counter series (streaming_decisions_total), or None."""
        self._explained = ExplainedRows(
            config, worker_id, primary, encode, self._count, lambda: self.decide
        )
        self._batch_ids = itertools.count(1)
        """Numbers this engine's model calls for their batch spans (tracing only); shared by
        the inference threads: ``next`` on a count is one C call, so no two calls get one id."""

    def run(self, version: ModelVersion) -> None:
        """The version's inference thread: until its lane is closed."""
        lane = version.lane
        backlog = self._explained.start(version.name)
        while True:
            timeout = self._until_telemetry(version)
            if backlog.items:
                timeout = min(timeout, backlog.wait_s())
            chunks = lane.take(timeout=timeout)  # with the version's scoring turn
            try:
                if chunks:
                    self._score_batch(version, chunks)
                if chunks is None or backlog.due(lane.queued_rows):
                    self._explained.flush(version, backlog)
                if chunks is not None:
                    self._telemetry(version)
            except Exception as exc:
                log.exception("inference thread failed")
                self._faults.report(f"inference thread for {version.name} failed: {exc!r}")
                return
            finally:
                lane.release()
            if chunks is None:
                return

    def score_inline(self, version: ModelVersion, chunk: Chunk) -> None:
        """Score one small chunk on the calling (feeding) thread, which holds the version's
        scoring turn (``Lane.claim``): at low rates this saves the hand-off to the inference
        thread, a wake and a GIL transfer per chunk. Does what that thread does after a
        batch; when this starts a telemetry interval, wakes that thread so that it sleeps
        only until the interval is due (it may be asleep for long, with nothing to report)."""
        counts = version.interval
        idle = not (counts.batches or counts.shadow_events or counts.errors)
        self._score_batch(version, [chunk])
        backlog = self._explained.backlogs.get(version.name)
        if backlog is not None and backlog.due(0):
            self._explained.flush(version, backlog)
        self._telemetry(version)
        if idle:
            version.lane.poke()

    def _until_telemetry(self, version: ModelVersion) -> float:
        """How long the lane may keep this thread asleep: until the version's telemetry is
        due, or, with nothing to report, until a put or close wakes it (a timer that woke the
        thread ten times a second cost CPU on an idle worker)."""
        counts = version.interval
        if not (counts.batches or counts.shadow_events or counts.errors):
            return _IDLE_WAIT_S
        due = counts.since + self.config.worker.telemetry_interval_s - time.monotonic()
        return min(max(due, 0.001), _IDLE_WAIT_S)

    def _score_batch(self, version: ModelVersion, chunks: list[Chunk]) -> None:
        # A version can be a canary and a shadow at once: its lane carries both. Primary rows
        # first: were the shadow call to hang, primary rows held here would be in no call
        # the watchdog could answer (shadow rows need no answer).
        shadows = [c for c in chunks if c.shadow]
        if shadows:
            chunks = [c for c in chunks if not c.shadow]
        if chunks:
            self._score(version, chunks, self._primary)
        if shadows:
            self._score(version, shadows, self._shadow)

    def _expire(self, version: ModelVersion, chunks: list[Chunk], out: Output) -> list[Chunk]:
        """With ``deadline_policy: dead_letter``, rows that waited too long are refused."""
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
            out.reject(version, c, range(len(c)), rejection)
        return keep

    def _refuse_all(
        self, version: ModelVersion, chunks: list[Chunk], out: Output, rejection: Rejection
    ) -> None:
        for c in chunks:
            out.reject(version, c, range(len(c)), rejection)

    def _score(self, version: ModelVersion, chunks: list[Chunk], out: Output) -> None:
        cfg = self.config
        name = version.name
        chunks = self._expire(version, chunks, out)
        if not chunks:
            return
        features = (
            chunks[0].features if len(chunks) == 1 else np.concatenate([c.features for c in chunks])
        )
        n = features.shape[0]
        started = time.monotonic()
        queue_delay = started - chunks[0].enqueued
        breaker = version.breaker
        if not breaker.allow():
            # a hung version's rows say so (timeout), whoever answers them
            rejection = version.watch.hung or Rejection(
                STAGE_INFERENCE,
                f"{name}: circuit open after {breaker.failures} failing batches in a "
                f"row; retried in at most {breaker.cooldown_s:g} s",
                "circuit_open",
                name,
            )
            self._refuse_all(version, chunks, out, rejection)
            return
        call = version.watch.begin(chunks, out is self._primary)
        if call is None:  # hung before: the watchdog answers no chunk it did not claim
            assert version.watch.hung is not None
            self._refuse_all(version, chunks, out, version.watch.hung)
            return
        stamp = self._stamp(name, n, chunks) if self._traced else None
        columns = concat([c.columns for c in chunks])
        decided: Decided | None
        try:
            decided = self.decide.score(version, features, columns)
            error = None
        except Exception as exc:  # noqa: BLE001 - a model error refuses its batch only
            decided, error = None, exc
        if stamp is not None:
            stamp.end = time.time()
        took = time.monotonic() - started
        if not version.watch.finish(call):  # timed out: the watchdog answered these rows
            log.warning(
                "%s/%s: a model call returned after %.2f s, past worker.inference_timeout_s;"
                " its %s were discarded (its rows were dead-lettered)",
                cfg.model.name,
                name,
                took,
                "error" if error is not None else "scores",
            )
            return
        if breaker.record(error is None):
            log.error(
                "%s/%s failed %d batches in a row (last: %s): circuit open for %g s",
                cfg.model.name,
                name,
                breaker.failures,
                error,
                breaker.cooldown_s,
            )
        out.account(version, n, took, queue_delay, error is not None)
        if error is not None:
            rejection = Rejection(
                STAGE_INFERENCE,
                f"{name}: {type(error).__name__}: {error}"[:480],
                type(error).__name__,
                name,
            )
            self._refuse_all(version, chunks, out, rejection)
            return
        assert decided is not None
        scores = decided.score
        finite = np.isfinite(scores)
        version.interval.add_scores(scores, cfg.model.threshold, finite)
        all_finite = bool(finite.all())
        primary = out is self._primary
        in_batch = primary and self._explained.explain_in_batch(version, features, decided, finite)
        held = (
            self._explained.held(version, chunks, decided, finite)
            if primary and not in_batch
            else None
        )
        later: list[tuple[Chunk, int, list[int]]] = []
        start = 0
        scored_ms = int(time.time() * 1000)
        for c in chunks:
            part = scores[start : start + len(c)]
            part_finite = finite[start : start + len(c)]
            start += len(c)
            rows: range | list[int] = range(len(c))
            if not all_finite:
                for i in np.flatnonzero(~part_finite).tolist():
                    rejection = Rejection(
                        STAGE_INFERENCE,
                        f"{name}: non-finite score {part[i]!r}",
                        "non_finite_score",
                        name,
                    )
                    out.reject(version, c, [i], rejection)
                rows = np.flatnonzero(part_finite).tolist()
                if not rows:
                    continue
            d = decided.part(start - len(c), start)
            if held is not None and held[start - len(c) : start].any():
                mine = held[start - len(c) : start]
                if not isinstance(rows, range):
                    mine = mine & part_finite
                later.append((c, start - len(c), np.flatnonzero(mine).tolist()))
                rows = np.flatnonzero(~mine & part_finite).tolist()
            payloads = self._encode(
                c.event_ids,
                c.ts_ms,
                part if all_finite else np.where(part_finite, part, 0.0),
                model=cfg.model.name,
                version=name,
                threshold=cfg.model.threshold,
                scored_ms=scored_ms,
                worker=self.worker_id,
                decisions=d.codes,
                reasons=d.rule_reasons,
                node_scores=d.node_scores,
            )
            if out is self._primary:
                self._count(version, d.codes, rows, d.rule_reasons)
            if rows:
                out.publish(version, c, rows, payloads)
        if later:
            self._explained.hold(version, features, decided, later, scored_ms)

    def _count(
        self,
        version: ModelVersion,
        codes: np.ndarray,
        rows: range | list[int],
        reasons: Mapping[int, Sequence[Any]] | None,
    ) -> None:
        """Decisions and reasons of published rows: streaming_decisions_total and the
        version's totals (this thread's own), one bincount a chunk, not an inc a row."""
        counts = np.bincount(codes if isinstance(rows, range) else codes[rows], minlength=3)
        totals = version.totals.decisions
        for i, k in enumerate(counts.tolist()):
            if k:
                totals[i] += k
                if self._decisions is not None:
                    self._decisions[i].inc(k)
        if reasons:
            published = set(rows) if not isinstance(rows, range) else None
            version.totals.reasons.update(
                r.code
                for i, given in reasons.items()
                if published is None or i in published
                for r in given
            )

    def _stamp(self, name: str, n: int, chunks: list[Chunk]) -> BatchStamp:
        """The model call's times, shared by its chunks (one object per batch, not per row)."""
        stamp = BatchStamp(next(self._batch_ids), name, n, time.time())
        for c in chunks:
            c.batch = stamp
        return stamp

    def _telemetry(self, version: ModelVersion) -> None:
        """Telemetry is best effort: it holds no input offset back."""
        now = time.monotonic()
        counts = version.interval
        if not counts.due(now, self.config.worker.telemetry_interval_s):
            return
        record = build_record(
            counts, version.name, version.sketch, self.config, self.worker_id, now
        )
        version.interval = IntervalCounts(now)
        self._sink.produce(
            self.config.topics.telemetry,
            encode_json(record),
            self.config.model.name.encode(),
            None,
            None,
        )
