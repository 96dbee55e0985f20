"""Fuzzing the decode and validation path: never a crash, always a record or a reason."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipelines.fraud import PIPELINE
from pipelines.fraud.preprocessing import fit_params
from pipelines.fraud.state import STATE
from streaming.engine.decode import Decoder
from streaming.engine.types import STAGES
from streaming.state import history_features
from tests.fuzz_strategies import hostile_values

DECODER = Decoder(PIPELINE.schema, max_event_bytes=65_536)
_TRAIN = PIPELINE.make_generator(1).training_data(2000)[0]  # type: ignore[attr-defined]
PRE = PIPELINE.make_preprocessor(
    fit_params(_TRAIN, history_features(STATE, [r.card_id for r in _TRAIN], _TRAIN))
)


@dataclass
class Msg:
    _value: bytes

    def value(self) -> bytes:
        return self._value


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_values, min_size=1, max_size=20))
@example(  # found by this test in CI: a subnormal average made amount / average overflow
    # (then an upstream feature; now the card's own history: a subnormal amount, then 8)
    values=[
        b'{"event_id":"%d","card_id":"c","ts_ms":100000000057%d,"amount":%s,"currency":"SEK",'
        b'"merchant_category":"restaurants","merchant_id":"m","country":"ES","channel":"pos",'
        b'"card_present":true,"home_country":"ES","distance_from_home_km":6}' % (i, i, amount)
        for i, amount in ((1, b"2e-313"), (2, b"8"))
    ]
)
def test_every_value_becomes_a_record_or_a_reasoned_rejection(values: list[bytes]) -> None:
    idx, records, rejected = DECODER.decode([Msg(v) for v in values])
    seen = sorted(idx + [i for i, _ in rejected])
    assert seen == list(range(len(values)))  # each exactly once
    for _, r in rejected:
        assert r.stage in STAGES and r.stage in ("decode", "validate")
        assert 0 < len(r.reason) <= 480
        assert re.fullmatch(r"[A-Za-z_]+", r.reason_class), r.reason_class  # a bounded label
    if records:
        state = history_features(STATE, [r.card_id for r in records], records)
        features = PRE.transform(records, state)
        assert features.shape == (len(records), len(PRE.feature_names))
        # whatever passes validation makes finite features
        assert np.isfinite(features).all()
