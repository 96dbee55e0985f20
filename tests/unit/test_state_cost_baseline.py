"""loadtests.state_cost's like-for-like baseline: the pipeline without its stage hands the model
exactly the features the stage computed (looked up by event id), so that the two drains
differ by the stage's own work only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from loadtests.fraud_looked_up import PIPELINE as LOOKED_UP
from loadtests.fraud_recording import FEATURES, StageFeatures
from loadtests.fraud_recording import PIPELINE as RECORDING
from loadtests.state_profile import make_batches
from streaming.state.stage import StateStage
from tests.kafka_helpers import ROOT


def test_the_looked_up_pipeline_gives_the_model_what_the_stage_gave_it() -> None:
    meta = ROOT / "models" / "fraud" / "v2" / "metadata.json"
    assert meta.exists(), "run `make models`"
    params = json.loads(meta.read_text())["preprocessing"]
    assert RECORDING.state is not None and LOOKED_UP.state is None
    stage = StateStage(RECORDING.state)
    recording, looked_up = RECORDING.make_preprocessor(params), LOOKED_UP.make_preprocessor(params)
    batches = make_batches(6_000, seed=11)
    states = [stage.compute(m, r) for m, r in batches]
    with_stage = [recording.transform(r, s) for (_m, r), s in zip(batches, states, strict=True)]
    FEATURES.freeze()
    without = [looked_up.transform(r) for _m, r in batches]
    for a, b in zip(with_stage, without, strict=True):
        np.testing.assert_array_equal(a, b)
    assert max(s[:, 0].max() for s in states) >= 1  # cards with history, not first events only


def test_an_event_the_recording_did_not_see_is_an_error_not_a_guess() -> None:
    table = StageFeatures()
    _m, records = make_batches(10, seed=12)[0]
    table.keep(records[:5], np.zeros((5, 6)))
    with pytest.raises(KeyError):
        table.of(records)
