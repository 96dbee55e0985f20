"""The chunk a lane carries: what the scoring thread needs of a batch's rows, read from the
messages and records once, on the feeding thread (the scoring thread never touches them)."""

from __future__ import annotations

from typing import Any

import numpy as np

from streaming.commit.ledger import PartitionLedger
from streaming.decision.columns import make_columns
from streaming.decision.stage import DecideStage
from streaming.engine.types import Chunk
from streaming.pipeline import PipelineSpec


class ChunkBuilder:
    """Builds chunks for one pipeline; ``decide`` (set at start, once the models are loaded)
    says which record fields a decision graph's rules read, copied into columns."""

    def __init__(self, pipeline: PipelineSpec) -> None:
        self._id_field = pipeline.id_field
        self._ts_field = pipeline.ts_field
        self.decide: DecideStage | None = None

    def build(
        self,
        features: np.ndarray,
        msgs: list[Any],
        records: list[Any],
        ledgers: list[PartitionLedger],
        enqueued: float,
    ) -> Chunk:
        id_field, ts_field, decide = self._id_field, self._ts_field, self.decide
        return Chunk(
            features=features,
            event_ids=[getattr(r, id_field) for r in records],
            ts_ms=[getattr(r, ts_field) for r in records],
            keys=[m.key() for m in msgs],
            values=[m.value() for m in msgs],
            headers=[m.headers() for m in msgs],
            ledgers=ledgers,
            offsets=[m.offset() for m in msgs],
            enqueued=enqueued,
            columns=make_columns(records, decide.fields) if decide and decide.fields else None,
        )
