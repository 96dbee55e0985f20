"""The fraud pipeline, unchanged, keeping the state columns its stage computed for each event
(by event id): what loadtests.fraud_looked_up hands its preprocessor instead of a stage.

One recording drain over a backlog fills ``FEATURES`` in this process; the benchmark's drains
then run in the same process (loadtests.state_cost).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from loadtests.fraud_columns import preprocessor_with
from pipelines.fraud import PIPELINE as FRAUD


class StageFeatures:
    """Event id -> the state columns the stage computed for it (one writer: the feeding
    thread of the recording drain; read after it ended)."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self._rows: list[np.ndarray] = []
        self._table: np.ndarray | None = None

    def keep(self, records: Sequence[Any], state: np.ndarray) -> None:
        index, rows = self.index, self._rows
        for i, r in enumerate(records):
            if r.event_id not in index:  # an event read twice keeps its first columns
                index[r.event_id] = len(rows)
                rows.append(state[i].copy())
        self._table = None

    def freeze(self) -> None:
        """Build the lookup table now (the recording drain ended), not in the first drain
        that looks columns up: 100,000 rows take about 50 ms."""
        self._table = np.array(self._rows, dtype=np.float64)

    def of(self, records: Sequence[Any]) -> np.ndarray:
        """The recorded state columns of ``records``, in order; KeyError for an event the
        recording drain did not see."""
        if self._table is None:
            self.freeze()
        assert self._table is not None
        index = self.index
        return self._table[[index[r.event_id] for r in records]]


FEATURES = StageFeatures()


def _recorded(records: Sequence[Any], state: np.ndarray | None) -> np.ndarray:
    assert state is not None, "the fraud pipeline's stage hands every batch its columns"
    FEATURES.keep(records, state)
    return state


PIPELINE = dataclasses.replace(FRAUD, make_preprocessor=preprocessor_with(_recorded))
