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

from loadtests.fraud_columns import preprocessor_with
from loadtests.fraud_recording import FEATURES
from pipelines.fraud import PIPELINE as FRAUD

PIPELINE = dataclasses.replace(
    FRAUD,
    state=None,
    make_preprocessor=preprocessor_with(lambda records, _state: FEATURES.of(records)),
)
