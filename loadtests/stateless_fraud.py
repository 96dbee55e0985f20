"""The fraud pipeline with its state stage taken out: the baseline of loadtests.state_cost.

The preprocessor is handed constant state columns (no history: as if every event were its
card's first), so that everything but the stage costs what it costs in the real pipeline.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.fraud import PIPELINE as FRAUD
from pipelines.fraud.preprocessing import FraudPreprocessor

_WIDTH = len(FRAUD.state.aggregates) if FRAUD.state is not None else 0


class _Stateless:
    def __init__(self, params: Mapping[str, Any]) -> None:
        self._pre = FraudPreprocessor(params)
        self.feature_names = self._pre.feature_names

    def transform(self, records: Sequence[Any], state: np.ndarray | None = None) -> np.ndarray:
        return self._pre.transform(records, np.zeros((len(records), _WIDTH)))


PIPELINE = dataclasses.replace(FRAUD, state=None, make_preprocessor=_Stateless)
