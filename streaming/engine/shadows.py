"""Shadow copies: a share of each batch (sticky by key) scored by shadow versions, whose
outputs go to telemetry and the shadow topic only."""

from __future__ import annotations

from typing import Any

import numpy as np

from streaming.commit.ledger import PartitionLedger
from streaming.config import PipelineConfig
from streaming.engine.chunks import ChunkBuilder
from streaming.engine.preprocess import preprocess
from streaming.engine.route import BUCKETS, Router
from streaming.engine.versions import ModelVersion
from streaming.observability.metrics import WorkerMetrics


class ShadowCopies:
    """The shadow versions and their shares (set by routing; feeding thread only).

    A shadow never holds the primary path: its rows are not in the ledger, a full shadow
    queue sheds them (with a metric), and its errors reach telemetry only."""

    def __init__(self, config: PipelineConfig, metrics: WorkerMetrics, chunks: ChunkBuilder):
        self._config = config
        self._metrics = metrics
        self._chunks = chunks
        self.versions: list[tuple[ModelVersion, float]] = []

    def __bool__(self) -> bool:
        return bool(self.versions)

    def queue(
        self,
        router: Router,
        msgs: list[Any],
        records: list[Any],
        ledgers: list[PartitionLedger],
        now: float,
        state: np.ndarray | None = None,
    ) -> None:
        """Copy each shadow's share of the batch to its lane, if it keeps up."""
        buckets = router.buckets([m.key() for m in msgs])
        for version, share in self.versions:
            picked = np.flatnonzero(buckets < share * BUCKETS)
            if picked.size == 0:
                continue
            feats = preprocess(
                version.preprocessor,
                [records[r] for r in picked],
                None if state is None else state[picked],
            )
            keep = [int(picked[i]) for i in feats.rows]
            if not keep:
                continue
            chunk = self._chunks.build(
                feats.matrix,
                [msgs[r] for r in keep],
                [records[r] for r in keep],
                [ledgers[r] for r in keep],
                now,
            )
            chunk.shadow = True
            if not version.lane.put(chunk, timeout=0):
                cfg = self._config
                self._metrics.shadow_shed.labels(cfg.name, cfg.model.name, version.name).inc(
                    len(chunk)
                )
