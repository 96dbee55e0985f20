"""The fraud pipeline with its state stage taken out: the baseline of loadtests.state_cost.

The preprocessor is handed constant state columns (those of a card's first event, no history),
so that everything but the stage costs what it costs in the real pipeline. Tests of other
stages use it where per-key history is not what they check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.fraud import PIPELINE as FRAUD
from pipelines.fraud.preprocessing import FraudPreprocessor
from streaming.state import PartitionState

assert FRAUD.state is not None
_FIRST = np.array(PartitionState(FRAUD.state).apply("any", 0, 0, [1.0, "x", "y"]))
"""The state columns of a card's first event (no history): what every event gets here."""


class _Stateless:
    def __init__(self, params: Mapping[str, Any]) -> None:
        self._pre = FraudPreprocessor(params)
        self.feature_names = self._pre.feature_names

    def transform(self, records: Sequence[Any], state: np.ndarray | None = None) -> np.ndarray:
        return self._pre.transform(records, np.tile(_FIRST, (len(records), 1)))


PIPELINE = dataclasses.replace(FRAUD, state=None, make_preprocessor=_Stateless)
