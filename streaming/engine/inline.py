"""When the feeding thread scores a small chunk itself instead of handing it to the version's
lane (worker.inline_max_rows; README, "Batching, pipelining and the GPU path")."""

from __future__ import annotations

import time

from streaming.config import PipelineConfig

AFTER_WAIT_S = 0.001
"""A poll batch is scored on the feeding thread (if small) only when the feeding thread waited
at least this long since its last submit: draining a backlog, polls follow each other at once,
and a small batch there (a fetch that came short) is better pipelined behind the next one."""


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
    """The feeding thread's choice per chunk (that thread's alone): small, and the poll waited
    for its events. Off until ``start``."""

    def __init__(self) -> None:
        self.max_rows = 0
        self._submitted = 0.0
        """When the last submit returned (monotonic)."""
        self._waited = False
        """The current submit came at least AFTER_WAIT_S after the last one returned."""
        self.clock = time.monotonic
        """Tests stop it to submit back to back whatever the machine's speed."""

    def start(self, cfg: PipelineConfig) -> None:
        if inline_scoring_allowed(cfg):
            self.max_rows = min(cfg.worker.inline_max_rows, cfg.batching.max_batch_size)

    def submitting(self) -> None:
        self._waited = self.clock() - self._submitted >= AFTER_WAIT_S

    def submitted(self) -> None:
        self._submitted = self.clock()

    def wants(self, rows: int) -> bool:
        return rows <= self.max_rows and self._waited
