"""Committers: when and how input offsets are committed. One is chosen at start by
``delivery`` and the worker calls it the same way in both modes.

- :class:`AtLeastOnce`: commit each partition's commit point (its lowest offset still waiting
  for an output) to the group coordinator. A crash loses nothing; what was in flight is redone.
- :class:`Transactional` (exactly-once): the outputs and the input offsets go in one producer
  transaction (``send_offsets_to_transaction`` with the consumer's group metadata, which also
  fences a member that lost its partitions). To commit, the feeding stops until everything in
  flight is in the transaction; that pause is exactly-once's cost.

With a state stage, its changelog (streaming.state.changelog) is written at each commit: into
the transaction (exactly-once), or acked before the offsets it covers are committed
(at-least-once), so that a restored state is never behind the committed offsets.

Everything here runs on the main thread (the loop, the rebalance callbacks, the close).
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from streaming.commit.ledger import OffsetTracker
from streaming.config import PipelineConfig
from streaming.errors import Faults, StartupError
from streaming.kafka import settings as kafka
from streaming.kafka.sink import KafkaSink
from streaming.observability.metrics import WorkerMetrics
from streaming.observability.stats import WorkerStats
from streaming.state.changelog import ChangelogCommit, StateChangelog

log = logging.getLogger("streaming.worker")

Partitions = set[tuple[str, int]]


class Committer(ABC):
    """What both modes share: the commit interval, the rebalance half, the close."""

    _pending: tuple[list[tuple[str, int, int]], ChangelogCommit] | None = None
    """At-least-once: commit points waiting for the changelog records written with them to
    be acked (exactly-once waits inside its commit)."""

    def __init__(
        self,
        cfg: PipelineConfig,
        consumer: Consumer,
        sink: KafkaSink,
        offsets: OffsetTracker,
        metrics: WorkerMetrics,
        faults: Faults,
        stats: WorkerStats,
        changelog: StateChangelog | None = None,
    ) -> None:
        self._cfg = cfg
        self._changelog = changelog
        self._consumer = consumer
        self._sink = sink
        self._offsets = offsets
        self._commits = metrics.commits.labels(cfg.name)
        self._faults = faults
        self._stats = stats
        self._interval_s = cfg.worker.commit_interval_ms / 1000.0
        self._next_at = time.monotonic() + self._interval_s
        self._finished = False
        """After finish(): the engine and the sink are done; nothing more will be acked."""

    @staticmethod
    def producer_settings(cfg: PipelineConfig, worker_id: str) -> dict[str, Any]:
        return kafka.producer_settings(cfg.kafka, worker_id)

    @staticmethod
    def consumer_settings(cfg: PipelineConfig, worker_id: str) -> dict[str, Any]:
        return kafka.consumer_settings(cfg.kafka, worker_id)

    def maybe_commit(self, now: float) -> bool:
        """Commit if the interval is up; True if it was."""
        if now < self._next_at:
            return False
        self.commit(asynchronous=True)
        self._next_at = now + self._interval_s
        return True

    @abstractmethod
    def commit(self, asynchronous: bool = False, only: Partitions | None = None) -> None:
        """Commit what is durable (of ``only``, or of every partition)."""

    def finish(self) -> None:
        """The inference threads have stopped: close what is open before the sink closes."""
        self._finished = True

    def revoked(self, partitions: Partitions) -> None:
        """Commit revoked partitions only up to what is delivered, then forget them."""
        # At close the drain has already run and the producer is gone: nothing more will ack.
        wait = 0.0 if self._finished else self._cfg.worker.drain_timeout_s
        drained = self._offsets.wait_drained(wait, partitions)
        if not drained and not self._finished:
            log.warning(
                "revoke: in-flight events of %s not all delivered in time; the next "
                "owner will reprocess them",
                sorted(f"{t}[{p}]" for t, p in partitions),
            )
        self.commit(asynchronous=False, only=partitions)
        self._offsets.detach(partitions)
        if self._changelog is not None:
            self._changelog.forget(partitions)

    def lost(self, partitions: Partitions) -> None:
        """Lost partitions are someone else's already: commit nothing, forget them."""
        self._offsets.detach(partitions)
        if self._changelog is not None:
            self._changelog.forget(partitions)


class AtLeastOnce(Committer):
    def commit(self, asynchronous: bool = False, only: Partitions | None = None) -> None:
        if self._changelog is None:
            points = self._offsets.commit_points()
            self._commit_points([p for p in points if only is None or p[:2] in only], asynchronous)
        elif asynchronous and only is None:
            self._commit_after_changelog()
        else:
            self._commit_with_changelog_now(only)

    def _commit_after_changelog(self) -> None:
        """The loop's commit: the points of the last commit whose changelog records are all
        acked go to the coordinator; this commit's changes are written and its points wait."""
        assert self._changelog is not None
        if self._pending is not None:
            points, pending = self._pending
            if not pending.advance():
                if pending.error is not None:
                    self._pending = None
                    self._changelog_failed(pending.error)
                return  # not acked yet: try again at the next interval
            self._pending = None
            self._commit_points(self._owned(points), asynchronous=True)
        points = self._offsets.commit_points()
        changes = self._changelog.begin()
        if changes.advance():  # nothing changed: nothing to wait for
            self._commit_points(points, asynchronous=True)
        else:
            self._pending = (points, changes)

    def _commit_with_changelog_now(self, only: Partitions | None) -> None:
        """A revoke or the close: the changes written and acked, then the offsets committed."""
        assert self._changelog is not None
        if self._finished:
            # The drain's commit has run and the producer is closing: nothing more will be
            # acked, so nothing is committed that a changelog record would have to cover.
            return
        wait = self._cfg.worker.drain_timeout_s
        if self._pending is not None:
            points, pending = self._pending
            self._pending = None
            if pending.wait(wait):
                self._commit_points(self._owned(points), asynchronous=False)
            elif pending.error is not None:
                self._changelog_failed(pending.error)
                return
        points = [p for p in self._offsets.commit_points() if only is None or p[:2] in only]
        changes = self._changelog.begin(only)
        if changes.wait(wait):
            self._commit_points(points, asynchronous=False)
        elif changes.error is not None:
            self._changelog_failed(changes.error)
        else:
            log.warning(
                "state changelog: records not acked within worker.drain_timeout_s; the "
                "offsets they cover are left for the next owner to read again"
            )

    def _changelog_failed(self, error: str) -> None:
        """A changelog record the broker refused: the state it carried would be lost on a
        restore, so the worker stops (a restart restores and reads again from the offsets
        committed before, which those records did not cover)."""
        self._faults.report(f"state changelog write failed: {error}")

    def _owned(self, points: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
        """Points of partitions still assigned (a lost one is another member's now)."""
        owned = {(ledger.topic, ledger.partition) for ledger in self._offsets.ledgers()}
        return [p for p in points if p[:2] in owned]

    def _commit_points(self, points: list[tuple[str, int, int]], asynchronous: bool) -> None:
        if not points:
            return
        offsets = [TopicPartition(t, p, o) for t, p, o in points]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
                return
            log.warning("offset commit failed (retried at the next commit): %s", exc)
            return
        self._offsets.mark_committed(points)
        self._commits.inc()


class Transactional(Committer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        try:
            self._sink.init_transactions()
        except KafkaException as exc:
            raise StartupError(
                f"exactly-once: the broker refused transactions ({exc}); it needs "
                "transaction support (Kafka >= 2.5), or use delivery: at-least-once"
            ) from None
        # From here a predecessor under the same id is fenced: its open transaction is
        # aborted and read_committed readers go on (README, Exactly-once and rescheduled pods).
        log.info("exactly-once: transactions initialised; a predecessor with this id is fenced")

    @staticmethod
    def producer_settings(cfg: PipelineConfig, worker_id: str) -> dict[str, Any]:
        return kafka.producer_settings(cfg.kafka, worker_id) | kafka.transactional_settings(
            cfg, worker_id
        )

    @staticmethod
    def consumer_settings(cfg: PipelineConfig, worker_id: str) -> dict[str, Any]:
        return kafka.consumer_settings(cfg.kafka, worker_id) | {"isolation.level": "read_committed"}

    def commit(self, asynchronous: bool = False, only: Partitions | None = None) -> None:
        # A transaction covers every partition; `only` (a revoke) is included.
        if not self._finished:
            self._commit_transaction(begin_next=True)

    def finish(self) -> None:
        if not self._finished and not self._faults:
            self._commit_transaction(begin_next=False)
        super().finish()

    def _commit_transaction(self, begin_next: bool) -> None:
        """Drain, then commit every output so far with the input offsets.

        The transaction must hold the outputs of exactly the events whose offsets it commits,
        so the main loop (the only feeder) stops feeding until everything in flight is
        delivered into the transaction.
        """
        if self._faults:
            return
        if not self._offsets.wait_drained(self._cfg.worker.drain_timeout_s):
            self._abort(
                "exactly-once: in-flight events not delivered within worker.drain_timeout_s; "
                "the open transaction is aborted"
            )
            return
        points = self._offsets.commit_points()
        offsets = [TopicPartition(t, p, o) for t, p, o in points]
        started = time.monotonic()
        if self._changelog is not None:  # the state's changes go into this transaction
            changes = self._changelog.begin()
            if not changes.wait(self._cfg.worker.drain_timeout_s):
                self._abort(
                    "exactly-once: the state changelog records were not acked "
                    f"({changes.error or 'within worker.drain_timeout_s'}); the open "
                    "transaction is aborted"
                )
                return
        try:
            self._sink.commit_transaction(
                offsets, self._consumer.consumer_group_metadata(), 30.0, begin_next=begin_next
            )
        except KafkaException as exc:
            self._abort(f"exactly-once: transaction commit failed: {exc}")
            return
        self._stats.transactions += 1
        self._stats.transaction_s += time.monotonic() - started
        self._offsets.mark_committed(points)
        if points:
            self._commits.inc()

    def _abort(self, reason: str) -> None:
        """Nothing of the open transaction becomes visible; a restart reprocesses from the
        last committed offsets, so nothing is lost either."""
        self._faults.report(reason)
        log.error("%s", reason)
        try:
            self._sink.abort_transaction()
        except KafkaException as exc:
            log.error("abort failed (the broker aborts it at its timeout): %s", exc)


def committer_for(cfg: PipelineConfig) -> type[Committer]:
    """The committer of the configured ``delivery`` mode."""
    return Transactional if cfg.delivery == "exactly-once" else AtLeastOnce
