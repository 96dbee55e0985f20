"""The fraud preprocessor handed its state columns by a function of the batch: what the
state_cost pipelines (loadtests.stateless_fraud, fraud_recording, fraud_looked_up) share, each
choosing where the columns come from."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.fraud.preprocessing import FraudPreprocessor

Columns = Callable[[Sequence[Any], "np.ndarray | None"], np.ndarray]
"""``columns(records, state)``: the state columns to preprocess ``records`` with (``state`` is
the stage's, None where the pipeline has no stage)."""


def preprocessor_with(columns: Columns) -> Callable[[Mapping[str, Any]], Any]:
    """A ``make_preprocessor`` for the fraud pipeline whose state columns are ``columns``'."""

    class _WithColumns:
        def __init__(self, params: Mapping[str, Any]) -> None:
            self._pre = FraudPreprocessor(params)
            self.feature_names = self._pre.feature_names

        def transform(self, records: Sequence[Any], state: np.ndarray | None = None) -> np.ndarray:
            return self._pre.transform(records, columns(records, state))

    return _WithColumns
