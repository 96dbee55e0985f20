"""The fraud pipeline with its state stage taken out and the stage's features looked up by
event id (recorded by loadtests.fraud_recording in this process): the like-for-like baseline
of loadtests.state_cost.

loadtests.stateless_fraud hands the preprocessor constant columns instead; the model then
sees no history and sends about a fifth as many events to review or decline (277 against
1,487 of 100,000), each of them explained with reason codes: work a drain with the stage does
that is not the stage's. Here the model, its decisions and explanations see what they see
with the stage (the same decisions and reason counts, checked), so that the ratio of the two
drains is what the stage itself costs. The lookup (a dict probe per event and one take, about
0.1 us an event) stands in for features that arrive with the event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from loadtests.fraud_recording import FEATURES
from pipelines.fraud import PIPELINE as FRAUD
from pipelines.fraud.preprocessing import FraudPreprocessor


class _LookedUp:
    def __init__(self, params: Mapping[str, Any]) -> None:
        self._pre = FraudPreprocessor(params)
        self.feature_names = self._pre.feature_names

    def transform(self, records: Sequence[Any], state: np.ndarray | None = None) -> np.ndarray:
        return self._pre.transform(records, FEATURES.of(records))


PIPELINE = dataclasses.replace(FRAUD, state=None, make_preprocessor=_LookedUp)
