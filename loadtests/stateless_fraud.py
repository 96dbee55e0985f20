"""The fraud pipeline with its state stage taken out: the baseline of loadtests.state_cost.

The preprocessor is handed constant state columns (those of a card's first event, no history),
so that everything but the stage costs what it costs in the real pipeline. Tests of other
stages use it where per-key history is not what they check.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from loadtests.fraud_columns import preprocessor_with
from pipelines.fraud import PIPELINE as FRAUD
from streaming.state import PartitionState

assert FRAUD.state is not None
_FIRST = np.array(PartitionState(FRAUD.state).apply("any", 0, 0, [1.0, "x", "y"]))
"""The state columns of a card's first event (no history): what every event gets here."""


PIPELINE = dataclasses.replace(
    FRAUD,
    state=None,
    make_preprocessor=preprocessor_with(lambda records, _state: np.tile(_FIRST, (len(records), 1))),
)
