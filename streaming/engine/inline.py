"""When the feeding thread scores a small chunk itself instead of handing it to the version's
lane (worker.inline_max_rows; README, "Batching, pipelining and the GPU path")."""

from __future__ import annotations

import time

from streaming.config import PipelineConfig

AFTER_WAIT_S = 0.001
"""A poll that came at least this long after the feeding thread's last submit returned waited
for its events: it starts a new burst. Draining a backlog, polls follow each other at once and
the burst grows past ``max_rows``; a small chunk there (a fetch that came short) is better
pipelined behind the next one. At a low rate one fetch often reaches the feeding thread as a
few polls back to back (librdkafka queues each partition's part on its own): one small burst."""


def inline_scoring_allowed(cfg: PipelineConfig) -> bool:
    """Whether small chunks may be scored on the feeding thread at all.

    Only with one inference thread (one version, or a decision graph, whose first version's
    thread runs every model), no shadow share and no GPU: with several versions a call that
    hangs on the feeding thread would stop them all, where on its own thread it stops only its
    version; a GPU wants the lane's batches."""
    versions = cfg.model.versions
    one_thread = len(versions) == 1 or cfg.decision.graph is not None
    return (
        cfg.worker.inline_max_rows > 0
        and one_thread
        and not any(v.shadow_share > 0 for v in versions)
        and not any(v.device.startswith("cuda") for v in versions)
    )


class InlinePolicy:
    """The feeding thread's choice per chunk (that thread's alone): small, in a small burst of
    polls (the events polled since the thread last waited, the chunk's included). Off until
    ``start``."""

    def __init__(self) -> None:
        self.max_rows = 0
        self._submitted = 0.0
        """When the last submit returned (monotonic)."""
        self._burst = 0
        """Events polled since the feeding thread last waited for a poll, this one's included."""
        self.clock = time.monotonic
        """Tests stop it to submit back to back whatever the machine's speed."""

    def start(self, cfg: PipelineConfig) -> None:
        if inline_scoring_allowed(cfg):
            self.max_rows = min(cfg.worker.inline_max_rows, cfg.batching.max_batch_size)

    def submitting(self, events: int) -> None:
        if self.clock() - self._submitted >= AFTER_WAIT_S:
            self._burst = 0
        self._burst += events

    def submitted(self) -> None:
        self._submitted = self.clock()

    def wants(self, rows: int) -> bool:
        return rows <= self.max_rows and self._burst <= self.max_rows
